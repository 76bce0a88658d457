"""`streamer worker` end to end against each engine's dialect, and against a REAL inference server.

Real Kafka and real Cassandra in every test.  The model side is:

- the stand-in answering in each real engine's reply shape (thinking split out into
  ``reasoning``/``reasoning_content``, llama.cpp's ``/tokenize`` and ``/v1/models``, SGLang's), so
  the worker's engine detection and reply parsing are exercised as in production;
- llama.cpp's own server (``xllamacpp``) with SmolLM2-135M-Instruct: real weights, real text.  A
  tiny general model, so ``STREAMER_MODEL__REASONING=optional`` and a llama.cpp grammar passed
  through ``STREAMER_MODEL__EXTRA_BODY`` bounds its replies (else it often runs to max_tokens);
  and once with ``REASONING=required``, a grammar forcing a think block and the server's
  reasoning parser splitting it out, as vLLM's does for AlignXplore+.
"""

from __future__ import annotations

import json
from collections import defaultdict

import httpx
import pytest

from schemas import INTERACTION_ADAPTER
from streamer.adapters.cassandra.store import CassandraProfileStore
from streamer.devtools.llamacpp import DEFAULT_ALIAS, SUMMARY_GRAMMAR, THINK_GRAMMAR
from streamer.devtools.synthetic import generate_events
from streamer.settings import CassandraSettings
from tests.e2e.harness import (
    Stack,
    TopicReader,
    free_port,
    produce,
    start_llamacpp,
    start_standin,
    stop_and_drop,
    wait_for_events_applied,
)


def clickstream(n_users: int, seed: int) -> dict[str, list]:
    per_user: dict[str, list] = {}
    for record in generate_events(n_users, (4, 8), seed=seed):
        event = INTERACTION_ADAPTER.validate_python(record)
        per_user.setdefault(event.user_id, []).append(event)
    return per_user


async def run_worker(stack: Stack, log_dir, model_proc, per_user, *, timeout_s: float,
                     env: dict[str, str] | None = None):
    """Produce ``per_user``, run one worker until every event is announced; returns the
    change events per user, what the store holds, the worker and its ``/stats``."""
    await stack.ensure_topics()
    port = free_port()
    worker = stack.start_worker(log_dir, env=env, port=port)
    procs = [model_proc, worker]
    settings = CassandraSettings(port=stack.cassandra_port, keyspace=stack.keyspace)
    try:
        records = [(uid.encode(), e.model_dump_json().encode())
                   for uid, events in per_user.items() for e in events]
        await produce(stack.bootstrap, stack.input_topic, records)
        expected = {e.event_id for events in per_user.values() for e in events}
        async with TopicReader(stack.bootstrap, stack.output_topic) as out:
            await wait_for_events_applied(out, expected, timeout_s=timeout_s, procs=procs)
            changes = list({c.event_id: c for c in out.changes()}.values())
        by_user = defaultdict(list)
        for c in changes:
            by_user[c.user_id].append(c)
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
        store = CassandraProfileStore.from_settings(settings, migrate_schema=False)
        try:
            current = {uid: await store.get_current(uid) for uid in per_user}
        finally:
            await store.aclose()
        return by_user, current, worker, stats
    finally:
        stop_and_drop(procs, stack)


def assert_every_event_once(by_user, per_user) -> None:
    assert set(by_user) == set(per_user)
    for uid, cs in by_user.items():
        cs.sort(key=lambda c: c.version)
        assert [c.version for c in cs] == list(range(1, len(cs) + 1)), uid
        assert [eid for c in cs for eid in c.event_ids] == [e.event_id for e in per_user[uid]]


@pytest.mark.parametrize("shape", ["vllm-reasoning", "vllm-legacy", "sglang", "llamacpp"])
async def test_worker_against_each_engines_reply_shape(kafka_bootstrap, cassandra_port, unique,
                                                       tmp_path, shape):
    standin, base = start_standin(tmp_path, "--reply-shape", shape, "--ttft-ms", "10")
    per_user = clickstream(4, seed=5)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    by_user, current, worker, _ = await run_worker(stack, tmp_path, standin, per_user,
                                                   timeout_s=120)
    assert_every_event_once(by_user, per_user)
    for uid, row in current.items():
        assert row is not None and row.summary.strip() and "think" not in row.summary, uid
    log = worker.log_tail(400)
    engine = "vllm" if shape.startswith("vllm") else shape
    assert f": {engine}, context" in log  # the startup self-check identified the engine
    assert "no_think_close" not in log  # the split-out thinking was found, never rejected


async def test_worker_with_a_real_llamacpp_server_stores_real_model_text(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    server, base = start_llamacpp(tmp_path, "--parallel", "2", "--ctx-per-slot", "4096")
    per_user = clickstream(3, seed=9)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    env = {
        "STREAMER_MODEL__MODEL": DEFAULT_ALIAS,
        "STREAMER_MODEL__REASONING": "optional",  # SmolLM2 is not a thinking model
        "STREAMER_MODEL__CONTEXT_TOKENS": "4096",
        "STREAMER_MODEL__MAX_TOKENS": "400",
        "STREAMER_MODEL__MAX_SUMMARY_CHARS": "2000",
        "STREAMER_MODEL__MAX_CONCURRENCY": "2",
        "STREAMER_MODEL__EXTRA_BODY": json.dumps({"grammar": SUMMARY_GRAMMAR, "seed": 3}),
    }
    by_user, current, worker, stats = await run_worker(stack, tmp_path, server, per_user,
                                                       timeout_s=420, env=env)
    assert_every_event_once(by_user, per_user)
    texts = [c.summary for cs in by_user.values() for c in cs if c.model == DEFAULT_ALIAS]
    assert texts, "no version was written by the real model"
    for cs in by_user.values():
        for c in cs:
            if c.model == DEFAULT_ALIAS:
                assert c.usage.prompt_tokens > 100 and c.usage.completion_tokens > 0
                assert 16 <= len(c.summary) <= 400
    for uid, row in current.items():
        assert row is not None and row.summary == by_user[uid][-1].summary
    assert ": llamacpp, context 4096, tokenize template, load metrics" in worker.log_tail(400)
    [endpoint] = stats["model_endpoints"]
    assert endpoint["engine"] == "llamacpp" and endpoint["problem"] is None
    assert endpoint["requests"] >= len(texts) and endpoint["healthy"]


async def test_worker_parses_thinking_split_out_by_a_real_llamacpp_server(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    """The AlignXplore+ path (``REASONING=required``) end to end on real weights: a grammar makes
    SmolLM2 write a think block, llama.cpp's reasoning parser moves it to reasoning_content,
    and the worker stores only the summary after it."""
    server, base = start_llamacpp(tmp_path, "--parallel", "2", "--ctx-per-slot", "4096",
                                  "--think-template")
    per_user = clickstream(2, seed=4)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    env = {
        "STREAMER_MODEL__MODEL": DEFAULT_ALIAS,
        "STREAMER_MODEL__REASONING": "required",
        "STREAMER_MODEL__CONTEXT_TOKENS": "4096",
        "STREAMER_MODEL__MAX_TOKENS": "600",  # the grammar's longest reply is shorter
        "STREAMER_MODEL__REPETITION_PENALTY": "1.3",
        "STREAMER_MODEL__MAX_SUMMARY_CHARS": "2000",
        "STREAMER_MODEL__EXTRA_BODY": json.dumps({"grammar": THINK_GRAMMAR, "seed": 5}),
    }
    by_user, current, worker, _ = await run_worker(stack, tmp_path, server, per_user,
                                                   timeout_s=420, env=env)
    assert_every_event_once(by_user, per_user)
    written = [c for cs in by_user.values() for c in cs if c.model == DEFAULT_ALIAS]
    assert written, "no version was written by the real model"
    for c in written:
        assert 0 < len(c.summary) <= 240  # the part after </think>, nothing of the thinking
        assert "<think>" not in c.summary and "</think>" not in c.summary
    assert "no_think_close" not in worker.log_tail(400)
