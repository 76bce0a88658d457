"""`streamer backfill` as a subprocess: a JSONL history into real Cassandra through the pool."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict

from streamer.adapters.cassandra.store import CassandraProfileStore, connect
from streamer.devtools.synthetic import encode_record, generate_events
from streamer.settings import CassandraSettings
from tests.e2e.harness import ROOT, start_standin


async def test_backfill_writes_versions_like_the_stream(cassandra_port, unique, tmp_path):
    records = generate_events(12, 10, seed=3, invalid_rate=0.05)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(encode_record(r) for r in records) + b"\n")
    valid = [r for r in records if isinstance(r, dict) and r.get("user_id", "").strip()
             and r["event_id"].startswith("evt-user")]
    standin, base = start_standin(tmp_path)
    keyspace = f"bf_{unique}"
    settings = CassandraSettings(port=cassandra_port, keyspace=keyspace)
    env = {
        "STREAMER_CASSANDRA__PORT": str(cassandra_port),
        "STREAMER_CASSANDRA__KEYSPACE": keyspace,
        "STREAMER_MODEL__BASE_URLS": json.dumps([f"{base}/v1"]),
        "STREAMER_WINDOW__MAX_EVENTS": "4",
    }
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streamer", "backfill", str(path), "--no-progress"],
            env={**__import__("os").environ, **env}, cwd=ROOT, capture_output=True, text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "backfilled 12 users" in proc.stdout
        store = await asyncio.to_thread(CassandraProfileStore.from_settings, settings,
                                        migrate_schema=False)
        try:
            expected = defaultdict(list)
            for r in valid:
                expected[r["user_id"]].append(r["event_id"])
            for user_id, ids in expected.items():
                history = await store.history(user_id)
                assert [h.version for h in history] == list(range(1, len(history) + 1))
                assert [e for h in history for e in h.event_ids] == ids  # each once, in order
                assert all(len(h.event_ids) <= 4 for h in history)
                assert (await store.get_current(user_id)).version == len(history)
        finally:
            await store.aclose()
    finally:
        standin.stop()
        cluster, session = connect(settings)
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()
