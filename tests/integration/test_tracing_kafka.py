"""Trace context through the real broker: input records carrying W3C ``traceparent`` headers lead
to change events whose ``traceparent`` belongs to an ``update_window`` span linked to the inputs'
traces (seen in the worker's JSON logs), and the worker serves ``/metrics``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer

from tests.e2e.harness import (
    Stack,
    TopicReader,
    free_port,
    log_tails,
    spawn,
    start_standin,
    wait_for_events_applied,
)
from tests.factories import pairwise

INPUT_TRACES = ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"]


async def test_change_event_traceparent_links_to_input_traces(kafka_bootstrap, cassandra_port, unique,
                                                               tmp_path):
    standin, base = start_standin(tmp_path, "--ttft-ms", "5", "--per-token-ms", "0.1")
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base],
                  extra_env={"STREAMER_LOG_FORMAT": "json"})
    await stack.ensure_topics()
    web_port = free_port()
    worker = spawn("worker", [__import__("sys").executable, "-m", "streamer", "worker"],
                   stack.env(web_port), tmp_path)
    procs = [standin, worker]
    try:
        user = f"trace-{unique}"
        now = datetime.now(UTC)
        events = [pairwise(f"{unique}-e{i}", user_id=user).model_copy(update={"occurred_at": now})
                  for i in range(4)]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i, event in enumerate(events):
                trace_id = INPUT_TRACES[i % 2]
                headers = [("traceparent", f"00-{trace_id}-{i + 1:016x}-01".encode())]
                await producer.send_and_wait(stack.input_topic, event.model_dump_json().encode(),
                                             key=user.encode(), headers=headers)
        finally:
            await producer.stop()

        async with TopicReader(kafka_bootstrap, stack.output_topic) as reader:
            await wait_for_events_applied(reader, {e.event_id for e in events}, timeout_s=120,
                                          procs=procs)
            messages = list(reader.messages)

        change_traces = set()
        for message in messages:
            headers = {k: v.decode() for k, v in message.headers}
            assert "traceparent" in headers, headers
            version, trace_id, span_id, _flags = headers["traceparent"].split("-")
            assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
            assert trace_id not in INPUT_TRACES  # a window starts its own trace; inputs are links
            change_traces.add(trace_id)

        # the worker logs JSON; the `window applied` line of each window span names its links
        linked: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not INPUT_TRACES <= list(linked):
            for line in worker.log_path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if (record.get("message", "").startswith("window applied")
                        and record.get("trace_id") in change_traces):
                    linked.update(record.get("linked_trace_ids", []))
            if set(INPUT_TRACES) <= linked:
                break
            time.sleep(0.5)
        assert set(INPUT_TRACES) <= linked, log_tails(procs)

        deadline = time.monotonic() + 20  # lag appears once faust committed the offsets
        while True:
            metrics = httpx.get(f"http://127.0.0.1:{web_port}/metrics", timeout=5)
            assert metrics.status_code == 200
            if "streamer_consumer_lag{" in metrics.text or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert 'streamer_updates_total{outcome="updated"}' in metrics.text
        assert "streamer_freshness_seconds_bucket" in metrics.text
        lag = [ln for ln in metrics.text.splitlines() if ln.startswith("streamer_consumer_lag{")]
        assert any(f'topic="{stack.input_topic}"' in ln for ln in lag), metrics.text
    finally:
        for proc in procs:
            proc.stop()
