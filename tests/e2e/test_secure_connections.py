"""TLS and authentication against real servers: a private Kafka with a SASL_SSL listener (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512 users) and a private Cassandra with required client encryption and
PasswordAuthenticator, both started by ``deploy/local/infra.py`` in secure mode with a CA that
this module generates when it starts (``infra.py pki``).

Every Kafka client of the service (admin, producer, topic reader, catalog view, the faust
worker) and the Cassandra store connect through ``streamer.adapters.security``; the last test
runs ``streamer topics ensure``, ``streamer migrate`` and a ``streamer worker`` subprocess
configured only through ``STREAMER_*`` variables, as the Helm chart does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from schemas import CatalogItem, Item, SummaryChanged
from streamer.adapters.cassandra.store import CassandraProfileStore, connect
from streamer.adapters.kafka.admin import ensure_topics
from streamer.adapters.kafka.catalog import CatalogFollower
from streamer.adapters.kafka.producer import KafkaSender
from streamer.adapters.kafka.topic_reader import read_topic
from streamer.adapters.security import kafka_client_kwargs
from streamer.errors import BrokerUnavailableError, ConfigurationError, StoreUnavailableError
from streamer.settings import CassandraSettings, KafkaSettings
from tests.e2e.harness import INFRA_PORT_VARS, PrivateInfra, pick_free_ports, spawn

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "streamer" / "data" / "sample_clickstream.jsonl"


@dataclass
class Secure:
    infra: PrivateInfra
    pki: Path
    kafka_port: int  # the SASL_SSL listener
    mtls_port: int  # the SSL listener that requires a client certificate
    user: str
    password: str

    @property
    def ca(self) -> str:
        return str(self.pki / "ca.pem")

    def kafka(self, **overrides) -> KafkaSettings:
        fields = dict(bootstrap_servers=f"127.0.0.1:{self.kafka_port}",
                      security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_username=self.user, sasl_password=SecretStr(self.password),
                      ssl_cafile=self.ca, partitions=2)
        return KafkaSettings(**{**fields, **overrides})

    def cassandra(self, **overrides) -> CassandraSettings:
        fields = dict(port=self.infra.cassandra_port, ssl_enabled=True, ssl_cafile=self.ca,
                      username=self.user, password=SecretStr(self.password),
                      keyspace="secure_e2e")
        return CassandraSettings(**{**fields, **overrides})

    def env(self) -> dict[str, str]:
        """The same connection as ``STREAMER_*`` variables (what the chart renders)."""
        return {
            "STREAMER_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "STREAMER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
            "STREAMER_KAFKA__SASL_USERNAME": self.user,
            "STREAMER_KAFKA__SASL_PASSWORD": self.password,
            "STREAMER_KAFKA__SSL_CAFILE": self.ca,
            "STREAMER_CASSANDRA__PORT": str(self.infra.cassandra_port),
            "STREAMER_CASSANDRA__SSL_ENABLED": "true",
            "STREAMER_CASSANDRA__SSL_CAFILE": self.ca,
            "STREAMER_CASSANDRA__USERNAME": self.user,
            "STREAMER_CASSANDRA__PASSWORD": self.password,
        }


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Iterator[Secure]:
    base = tmp_path_factory.mktemp("secure-infra")
    *ports, kafka_secure, kafka_mtls = pick_free_ports(len(INFRA_PORT_VARS) + 2)
    infra = PrivateInfra(base / "run", dict(zip(INFRA_PORT_VARS, ports, strict=True)))
    infra.durable_schema = False  # no crash in this module; fast schema changes
    pki = base / "pki"
    infra.extra_env = {"PREFSTREAM_SECURE_DIR": str(pki),
                       "PREFSTREAM_KAFKA_SECURE_PORT": str(kafka_secure),
                       "PREFSTREAM_KAFKA_MTLS_PORT": str(kafka_mtls)}
    infra.run("pki", extra=["--dir", str(pki)])  # a new CA, made now
    try:
        infra.up()
    except RuntimeError as exc:
        if infra.run_dir.exists():
            infra.run("clean", "all", timeout_s=120)
        pytest.fail(f"the secure Kafka + Cassandra did not start: {exc}\n"
                    "Needs Java 17 and the server jars (`make test` does all set-up; by hand: "
                    "`.venv/bin/python deploy/local/infra.py fetch`).")
    users = json.loads((pki / "users.json").read_text())
    user, password = next(iter(users.items()))
    try:
        yield Secure(infra, pki, kafka_secure, kafka_mtls, user, password)
    finally:
        infra.clean()


# --- Kafka: SASL_SSL -------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_kafka_clients_over_sasl_ssl(secure, unique, mechanism):
    """Admin (topics), producer and topic reader authenticate with each mechanism over TLS."""
    kafka = secure.kafka(sasl_mechanism=mechanism, input_topic=f"sec-{unique}.in",
                         output_topic=f"sec-{unique}.out", dead_letter_topic=f"sec-{unique}.dlq",
                         failures_topic=f"sec-{unique}.fail")
    assert await ensure_topics(kafka) == []
    sender = KafkaSender(kafka)
    try:
        for i in range(5):
            await sender.send(kafka.output_topic, f"u{i}".encode(), f"v{i}".encode(),
                              [("h", b"1")])
    finally:
        await sender.aclose()
    got = [(k, v) async for k, v, _ in read_topic(kafka, kafka.output_topic)]
    assert sorted(got) == [(f"u{i}".encode(), f"v{i}".encode()) for i in range(5)]


async def test_catalog_view_over_sasl_ssl(secure, unique):
    kafka = secure.kafka(input_topic=f"sec-{unique}.in", output_topic=f"sec-{unique}.out",
                         dead_letter_topic=f"sec-{unique}.dlq",
                         failures_topic=f"sec-{unique}.fail")
    topic = f"sec-{unique}.items"
    assert await ensure_topics(kafka, catalog_topic=topic) == []
    sender = KafkaSender(kafka)
    item = CatalogItem(domain="news", item=Item(id="N1", title="Secure item"))
    try:
        await sender.send(topic, b"N1", item.model_dump_json().encode(), [])
    finally:
        await sender.aclose()
    follower = CatalogFollower(kafka, topic)
    task = asyncio.create_task(follower.run())
    try:
        await follower.wait_caught_up(60)
        assert follower.items == 1
    finally:
        await follower.stop()
        await task


async def test_kafka_mutual_tls_with_an_encrypted_client_key(secure, unique):
    """security_protocol=SSL with a client certificate (its key encrypted: SSL_KEY_PASSWORD)
    on a listener that requires one; without the certificate the broker refuses."""
    pki = secure.pki
    mtls = dict(bootstrap_servers=f"127.0.0.1:{secure.mtls_port}", security_protocol="SSL",
                sasl_username=None, sasl_password=None, input_topic=f"mtls-{unique}.in",
                output_topic=f"mtls-{unique}.out", dead_letter_topic=f"mtls-{unique}.dlq",
                failures_topic=f"mtls-{unique}.fail")
    kafka = secure.kafka(**mtls, ssl_certfile=str(pki / "client.pem"),
                         ssl_keyfile=str(pki / "client.key"), ssl_key_password=SecretStr(
                             (pki / "client.password").read_text().strip()))
    assert await ensure_topics(kafka) == []
    sender = KafkaSender(kafka)
    try:
        await sender.send(kafka.output_topic, b"u", b"mtls", [])
    finally:
        await sender.aclose()
    assert [v async for _, v, _ in read_topic(kafka, kafka.output_topic)] == [b"mtls"]
    with pytest.raises(BrokerUnavailableError):
        await ensure_topics(secure.kafka(**mtls), timeout_ms=10_000)
    with pytest.raises(ConfigurationError, match="STREAMER_KAFKA__SSL_KEY_PASSWORD"):
        kafka_client_kwargs(secure.kafka(**mtls, ssl_certfile=str(pki / "client.pem"),
                                         ssl_keyfile=str(pki / "client.key"),
                                         ssl_key_password=SecretStr("wrong")))


async def test_kafka_refuses_bad_credentials_and_unknown_ca(secure, unique):
    """A wrong password, or a CA that does not sign the broker, fails with what to check."""
    wrong = secure.kafka(sasl_password=SecretStr("not-the-password"), input_topic=f"sec-{unique}")
    with pytest.raises(BrokerUnavailableError, match="STREAMER_KAFKA__SASL_"):
        await ensure_topics(wrong, timeout_ms=10_000)
    system_trust = secure.kafka(ssl_cafile=None, input_topic=f"sec-{unique}")
    sender = KafkaSender(system_trust)
    with pytest.raises(BrokerUnavailableError, match="STREAMER_KAFKA__SSL_"):
        await sender.start()
    await sender.aclose()


# --- Cassandra: client encryption + PasswordAuthenticator ------------------------------------


async def test_cassandra_store_over_tls_with_a_password(secure):
    settings = secure.cassandra(keyspace="secure_store")
    store = CassandraProfileStore.from_settings(settings)  # connects and migrates
    try:
        assert await store.get_current("nobody") is None
        cluster, session = connect(settings)
        try:
            row = session.execute("SELECT role FROM system_auth.roles WHERE role = %s",
                                  (secure.user,)).one()
            assert row.role == secure.user
            # the session really is encrypted: the driver's socket is a TLS socket
            conn = next(iter(session.get_pools())).borrow_connection(timeout=5)[0]
            try:
                assert conn._socket.version().startswith("TLS")  # noqa: SLF001
            finally:
                next(iter(session.get_pools())).return_connection(conn)
        finally:
            cluster.shutdown()
    finally:
        await store.aclose()


def test_cassandra_refuses_bad_credentials_no_tls_and_unknown_ca(secure):
    with pytest.raises(ConfigurationError, match="refused the credentials of "
                       "STREAMER_CASSANDRA__USERNAME"):
        connect(secure.cassandra(password=SecretStr("wrong")))
    with pytest.raises(ConfigurationError, match="asks for authentication"):
        connect(secure.cassandra(username=None, password=None))
    with pytest.raises(ConfigurationError, match="TLS to Cassandra failed"):
        connect(secure.cassandra(ssl_cafile=None))
    with pytest.raises(StoreUnavailableError):  # plaintext to a TLS-only port
        connect(secure.cassandra(ssl_enabled=False, ssl_cafile=None))


# --- the service, configured only by STREAMER_* variables ------------------------------------


def streamer(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "streamer", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, f"streamer {' '.join(args)} (exit {proc.returncode}):\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc.stdout


async def test_worker_end_to_end_over_sasl_ssl_and_cassandra_tls(secure, unique, tmp_path):
    """topics ensure, migrate and a worker, all through TLS + SASL (SCRAM-SHA-256) and
    Cassandra TLS + password: every event is applied, stored and announced."""
    env = {**secure.env(),
           "STREAMER_KAFKA__CONSUMER_GROUP": f"sec-{unique}",
           "STREAMER_KAFKA__INPUT_TOPIC": f"sec-{unique}.interactions",
           "STREAMER_KAFKA__OUTPUT_TOPIC": f"sec-{unique}.summaries",
           "STREAMER_KAFKA__DEAD_LETTER_TOPIC": f"sec-{unique}.dlq",
           "STREAMER_KAFKA__FAILURES_TOPIC": f"sec-{unique}.failures",
           "STREAMER_KAFKA__PARTITIONS": "2",
           "STREAMER_CASSANDRA__KEYSPACE": f"sec_{unique}",
           "STREAMER_MODEL__ENGINE": "baseline",
           "STREAMER_WINDOW__MAX_EVENTS": "4", "STREAMER_WINDOW__MAX_AGE_S": "1",
           "STREAMER_WINDOW__MAX_EVENT_AGE_S": str(20 * 365 * 86400),
           "STREAMER_QUALITY__SAMPLE_RATE": "0",
           "STREAMER_WEB_PORT": str(pick_free_ports(1)[0]),
           "STREAMER_LOG_FORMAT": "text"}
    streamer(env, "topics", "ensure")
    assert "applied:" in streamer(env, "migrate")
    lines = SAMPLE.read_text().splitlines()[:24]
    events = [json.loads(line) for line in lines]
    kafka = secure.kafka(sasl_mechanism="SCRAM-SHA-256",
                         input_topic=env["STREAMER_KAFKA__INPUT_TOPIC"],
                         output_topic=env["STREAMER_KAFKA__OUTPUT_TOPIC"])
    worker = spawn("secure-worker", [sys.executable, "-m", "streamer", "worker"], env, tmp_path)
    try:
        sender = KafkaSender(kafka)
        try:
            for event, line in zip(events, lines, strict=True):
                await sender.send(kafka.input_topic, event["user_id"].encode(), line.encode(), [])
        finally:
            await sender.aclose()
        expected = {e["event_id"] for e in events}
        seen: set[str] = set()
        changes: list[SummaryChanged] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and seen != expected:
            assert worker.alive(), f"the worker exited:\n{worker.log_tail()}"
            await asyncio.sleep(1)
            changes = [SummaryChanged.model_validate_json(v)
                       async for _, v, _ in read_topic(kafka, kafka.output_topic)]
            seen = {eid for c in changes for eid in c.event_ids}
        assert seen == expected, f"{len(expected - seen)} events not announced\n" \
                                 f"{worker.log_tail()}"
        store = CassandraProfileStore.from_settings(secure.cassandra(keyspace=f"sec_{unique}"))
        try:
            for user in {e["user_id"] for e in events}:
                current = await store.get_current(user)
                assert current is not None and current.version == max(
                    c.version for c in changes if c.user_id == user)
        finally:
            await store.aclose()
        assert "Authenticated as" in worker.log_tail(400)
    finally:
        worker.stop()
