"""The subscriber kit: `prefstream-schemas` installs and works alone (a fresh venv, no service
code), and `examples/subscriber.py` keeps a correct local view from the real Kafka summaries
topic: duplicates dropped by `ce_id`, stale versions ignored, tombstones applied, and nothing
applied twice across a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.publish import KafkaChangePublisher
from streamer.services.updater import change_event
from tests.factories import example_subscriber
from tests.integration.test_cassandra_store import record
from tests.integration.test_kafka_adapters import kafka_settings, producer, sender  # noqa: F401

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIBER = ROOT / "examples" / "subscriber.py"

STANDALONE_CHECK = """
import importlib.resources, importlib.util, json, sys
import schemas
assert importlib.util.find_spec("streamer") is None, "service code is importable"
files = sorted(p.name for p in importlib.resources.files("schemas").joinpath("jsonschema").iterdir())
event = schemas.SummaryChanged.model_validate_json(sys.argv[1])
headers = schemas.ce_headers(event, "/prefstream")
print(json.dumps({"files": files, "user": event.user_id,
                  "ce": schemas.ce_attributes(headers), "file": schemas.__file__}))
"""


def test_prefstream_schemas_installs_and_works_alone(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--wheel-dir", str(wheels), str(ROOT / "schemas")],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("prefstream_schemas-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # no system site-packages: only what the wheel brings
    py = env_dir / "bin" / "python"
    installed = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    names = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"],
                           capture_output=True, text=True, check=True).stdout
    dists = {d["name"].lower() for d in json.loads(names)}
    assert "prefstream" not in dists and "prefstream-schemas" in dists
    assert not dists & {"faust-streaming", "aiokafka", "cassandra-driver", "httpx"}
    sample = change_event(record("u-9", 2)).model_dump_json()
    out = subprocess.run([str(py), "-c", STANDALONE_CHECK, sample], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # not the checkout: no repo on path
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["files"] == sorted(p.name for p in (ROOT / "schemas" / "jsonschema").glob("*.json"))
    assert result["user"] == "u-9" and result["ce"]["type"] == "io.prefstream.summary.updated.v1"
    assert str(env_dir) in result["file"]


async def test_example_subscriber_keeps_a_correct_view(kafka_settings, producer, tmp_path):  # noqa: F811
    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    pub = KafkaChangePublisher(sender(producer), topic)
    v1, v2 = change_event(record("u-1", 1, summary="likes jazz")), change_event(
        record("u-1", 2, summary="likes jazz and blues"))
    for event in (v1, v2, v2, change_event(record("u-2", 1, summary="likes sci-fi")), v1):
        await pub.publish(event)  # v2 twice (a duplicate), v1 again at the end (stale)
    await producer.send_and_wait(topic, None, key=b"u-2")  # tombstone: u-2 deleted
    state = tmp_path / "view.json"
    sub = example_subscriber()
    view = await sub.run(kafka_settings.bootstrap_servers, topic, "it-sub", state,
                         flush_s=0.1, idle_exit_s=3)
    assert view.users == {"u-1": {"version": 2, "summary": "likes jazz and blues",
                                  "updated_at": v2.occurred_at.isoformat()}}
    assert view.stats == {"applied": 3, "duplicates": 2, "stale": 0, "deleted": 1, "skipped": 0}

    # a restart as a script: the saved view and the committed offsets: nothing is re-applied;
    # then a new version arrives and is applied
    await pub.publish(change_event(record("u-1", 3, summary="likes jazz, blues and soul")))
    proc = subprocess.run([sys.executable, str(SUBSCRIBER), "--bootstrap",
                           kafka_settings.bootstrap_servers, "--topic", topic, "--group", "it-sub",
                           "--state", str(state), "--flush-s", "0.1", "--idle-exit-s", "3"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "users": 1, "applied": 1, "duplicates": 0, "stale": 0, "deleted": 0, "skipped": 0}
    assert json.loads(state.read_text())["users"]["u-1"]["version"] == 3


async def test_an_older_version_after_a_newer_one_is_ignored(kafka_settings, producer, tmp_path):  # noqa: F811
    """Re-published or re-read older versions (another event id) never overwrite a newer one."""
    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    pub = KafkaChangePublisher(sender(producer), topic)
    await pub.publish(change_event(record("u-5", 4, summary="v4")))
    await pub.publish(change_event(record("u-5", 3, summary="v3")))
    view = await example_subscriber().run(kafka_settings.bootstrap_servers, topic, "it-sub-2",
                                          tmp_path / "v.json", flush_s=0.1, idle_exit_s=3)
    assert view.users["u-5"]["summary"] == "v4" and view.stats["stale"] == 1


async def test_a_producer_that_writes_unknown_fields_is_tolerated(kafka_settings, producer,  # noqa: F811
                                                                   tmp_path):
    """Consumers must tolerate new optional fields (the compatibility rule of a v1 type)."""
    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    event = change_event(record("u-6", 1, summary="s"))
    value = json.loads(event.model_dump_json())
    value["a_field_from_the_future"] = {"x": 1}
    pub = KafkaChangePublisher(sender(producer), topic)
    headers = [(k, v) for k, v in pub_headers(pub, event)]
    await producer.send_and_wait(topic, json.dumps(value).encode(), key=b"u-6", headers=headers)
    view = await example_subscriber().run(kafka_settings.bootstrap_servers, topic, "it-sub-3",
                                          tmp_path / "v.json", flush_s=0.1, idle_exit_s=3)
    assert view.users["u-6"]["version"] == 1


def pub_headers(pub: KafkaChangePublisher, event) -> list[tuple[str, bytes]]:
    from schemas import ce_headers

    return ce_headers(event, pub.source)


async def test_a_deleted_user_stays_deleted(kafka_settings, producer, tmp_path):  # noqa: F811
    """A deletion event then its tombstone remove the user; a change event stored before the
    deletion that arrives after it (an update in flight) does not bring the user back."""
    from datetime import timedelta

    from schemas import SummaryDeleted

    await ensure_topics(kafka_settings)
    topic = kafka_settings.output_topic
    pub = KafkaChangePublisher(sender(producer), topic)
    v1 = change_event(record("u-7", 1, summary="s1"))
    in_flight = change_event(record("u-7", 2, summary="s2"))
    await pub.publish(v1)
    await pub.publish_deleted(SummaryDeleted(
        event_id="del-1", user_id="u-7", deleted_versions=1,
        occurred_at=in_flight.occurred_at + timedelta(seconds=1)))
    await pub.publish(in_flight)  # stored before the deletion, published after it
    view = await example_subscriber().run(kafka_settings.bootstrap_servers, topic, "it-sub-4",
                                          tmp_path / "v.json", flush_s=0.1, idle_exit_s=3)
    assert "u-7" not in view.users
    assert view.stats["deleted"] == 1 and view.stats["stale"] == 1
