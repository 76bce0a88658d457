"""The live quality score end to end: `streamer worker` with real Kafka and real Cassandra,
the judge being the model pool itself (a stand-in answering the paper's judge prompt with
logprobs); a user's second window scores the summary the first one wrote."""

from __future__ import annotations

from collections import defaultdict

import httpx

from streamer.adapters.cassandra.store import CassandraProfileStore
from streamer.settings import CassandraSettings
from tests.chart.test_dashboard import queried_metrics
from tests.e2e.harness import (
    Stack,
    TopicReader,
    free_port,
    produce,
    start_standin,
    stop_and_drop,
    wait_for_events_applied,
)
from tests.e2e.test_engines import clickstream


async def test_worker_scores_each_previous_summary_on_the_next_window(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    standin, base = start_standin(tmp_path, "--ttft-ms", "5")
    per_user = clickstream(4, seed=21)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    await stack.ensure_topics()
    port = free_port()
    worker = stack.start_worker(tmp_path, port=port, env={
        "STREAMER_QUALITY__SAMPLE_RATE": "1", "STREAMER_QUALITY__BASELINE_RATE": "1"})
    procs = [standin, worker]
    settings = CassandraSettings(port=cassandra_port, keyspace=stack.keyspace)
    try:
        async with TopicReader(kafka_bootstrap, stack.output_topic) as out:
            for half in (0, 1):  # two windows per user: the second scores the first's summary
                batch = {uid: events[: len(events) // 2] if half == 0
                         else events[len(events) // 2:] for uid, events in per_user.items()}
                await produce(kafka_bootstrap, stack.input_topic, [
                    (uid.encode(), e.model_dump_json().encode())
                    for uid, events in batch.items() for e in events])
                expected = {e.event_id for events in batch.values() for e in events}
                await wait_for_events_applied(out, expected, timeout_s=120, procs=procs)
            changes = list({c.event_id: c for c in out.changes()}.values())
        by_user = defaultdict(list)
        for c in sorted(changes, key=lambda c: c.version):
            by_user[c.user_id].append(c)
        scored = 0
        for cs in by_user.values():
            assert cs[0].version == 1 and cs[0].quality is None  # nothing to score yet
            for prev, c in zip(cs, cs[1:], strict=False):
                q = c.quality
                if q is None:  # a window without a real rejected item asks the judge nothing
                    continue
                scored += 1
                assert q.scored_version == prev.version == c.version - 1
                assert q.judge == "VanillaH1/AlignXplore-Plus"  # the model pool itself
                assert 1 <= q.summary.pairs <= 8 and 0 <= q.summary.correct <= q.summary.pairs
                assert q.no_summary is not None and q.no_summary.pairs == q.summary.pairs
                assert q.judge_calls == 2 * q.summary.pairs and q.judge_prompt_tokens > 0
        assert scored >= 3, by_user
        # the live metrics: per-window accuracy by summary age, judge calls apart from updates
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for name in ("streamer_quality_accuracy_bucket", "streamer_quality_p_correct_bucket",
                     "streamer_quality_accuracy_no_summary_bucket",
                     "streamer_judge_calls_total", "streamer_judge_tokens_total",
                     'streamer_quality_windows_total{outcome="scored"}'):
            assert name in metrics, name
        assert 'summary_age="<1m"' in metrics
        # the shipped Grafana dashboard's queries against this live scrape: all there, but for
        # the counters of events this run has none of (nothing regressed, parked or dead-lettered)
        live = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines()
                if line and not line.startswith("#")}
        none_here = {"streamer_store_regressions_total", "streamer_parked_windows_total",
                     "streamer_dead_letters_total"}
        assert not queried_metrics() - none_here - live, sorted(queried_metrics() - live)
        # the store holds what was published, with the window's triples
        store = CassandraProfileStore.from_settings(settings, migrate_schema=False)
        try:
            for uid, cs in by_user.items():
                history = await store.history(uid)
                assert [h.quality for h in history] == [c.quality for c in cs]
                assert all(h.triples for h in history)
        finally:
            await store.aclose()
    finally:
        stop_and_drop(procs, stack)
