"""A downstream subscriber of prefstream's summaries: keeps a local view of every user's latest
summary from the summaries topic.

It needs only ``prefstream-schemas`` and ``aiokafka`` (``pip install ./schemas aiokafka``), never
the service. The rules every subscriber should follow:

* **Duplicates** are normal (delivery is at least once): drop a record whose CloudEvents id
  (``ce_id``, the deterministic ``event_id``) was already seen.
* **Order**: a user's versions arrive in version order on one partition, but a re-read after a
  restart, a republish or a compaction can bring an older version again: ignore a version at or
  below the last one applied for that user.
* **Unknown fields** are ignored (``SummaryChanged.from_wire``: new optional fields may be
  added to a ``v1`` payload at any time); an unknown ``ce_type`` is skipped.
* **Deletions**: a ``…summary.deleted.v1`` event (then a tombstone, a null value) removes the
  user; a change event of that user with ``occurred_at`` at or before the deletion (an update
  that was in flight) is ignored.

    python examples/subscriber.py --bootstrap 127.0.0.1:9092 --group my-personalizer \\
        --state view.json

A TLS / SASL cluster: ``--security-protocol SASL_SSL --sasl-username me --ssl-cafile ca.crt``
with the password in the environment variable ``KAFKA_SASL_PASSWORD`` (mutual TLS:
``--security-protocol SSL --ssl-certfile user.crt --ssl-keyfile user.key``).

The view is written to ``--state`` (JSON) on exit and every ``--flush-s`` seconds, and read back
on start; offsets are committed after the view is saved, so a crash re-reads at most what the
saved view does not hold yet (and the rules above make that harmless).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas import CE_TYPES, SummaryChanged, SummaryDeleted, ce_attributes

log = logging.getLogger("subscriber")

UPDATED = CE_TYPES["summary.changed"]
DELETED = CE_TYPES["summary.deleted"]


@dataclass
class View:
    """Each user's latest summary, plus the recent event ids (to drop duplicates)."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)  # user -> when it was deleted (ISO)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    max_seen: int = 100_000
    stats: dict[str, int] = field(default_factory=lambda: {
        "applied": 0, "duplicates": 0, "stale": 0, "deleted": 0, "skipped": 0})

    def apply(self, key: bytes | None, value: bytes | None, headers: Any) -> str:
        """Apply one record of the summaries topic; returns what happened (for the stats)."""
        outcome = self._apply(key, value, headers)
        self.stats[outcome] += 1
        return outcome

    def _apply(self, key: bytes | None, value: bytes | None, headers: Any) -> str:
        if value is None:  # tombstone: the user was deleted (after its deletion event)
            if key is not None and self.users.pop(key.decode(), None) is not None:
                return "deleted"
            return "skipped"
        ce = ce_attributes(headers)
        if ce.get("type") == DELETED:
            gone = SummaryDeleted.from_wire(value)
            self.deleted[gone.user_id] = gone.occurred_at.isoformat()
            self.users.pop(gone.user_id, None)
            return "deleted"
        if ce.get("type", UPDATED) != UPDATED:
            return "skipped"
        event = SummaryChanged.from_wire(value)  # ignores fields newer than this code
        event_id = ce.get("id", event.event_id)
        if event_id in self.seen:
            return "duplicates"
        self._remember(event_id)
        deleted_at = self.deleted.get(event.user_id)
        if deleted_at is not None and event.occurred_at <= datetime.fromisoformat(deleted_at):
            return "stale"  # stored before the user was deleted
        current = self.users.get(event.user_id)
        if current is not None and event.version <= current["version"]:
            return "stale"
        self.users[event.user_id] = {"version": event.version, "summary": event.summary,
                                     "updated_at": event.occurred_at.isoformat()}
        return "applied"

    def _remember(self, event_id: str) -> None:
        self.seen[event_id] = None
        while len(self.seen) > self.max_seen:
            self.seen.popitem(last=False)

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"users": self.users, "deleted": self.deleted,
                                   "seen": list(self.seen)}))
        tmp.replace(path)  # atomic: a crash leaves the old view or the new one

    @classmethod
    def load(cls, path: Path) -> View:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(users=data["users"], deleted=data.get("deleted", {}),
                   seen=OrderedDict.fromkeys(data["seen"]))


def connection_options(security_protocol: str = "PLAINTEXT", *, sasl_mechanism: str = "PLAIN",
                       sasl_username: str | None = None, sasl_password: str | None = None,
                       ssl_cafile: str | None = None, ssl_certfile: str | None = None,
                       ssl_keyfile: str | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for a broker reached over TLS and/or SASL (PLAINTEXT: none)."""
    protocol = security_protocol.upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ValueError(f"unknown security protocol {security_protocol!r}: use PLAINTEXT, SSL, "
                         "SASL_PLAINTEXT or SASL_SSL")
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        if not sasl_username or not sasl_password:
            raise ValueError(f"{protocol} needs a SASL user (--sasl-username) and password "
                             "(environment variable KAFKA_SASL_PASSWORD)")
        options.update(sasl_mechanism=sasl_mechanism, sasl_plain_username=sasl_username,
                       sasl_plain_password=sasl_password)
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(cafile=ssl_cafile, certfile=ssl_certfile,
                                                    keyfile=ssl_keyfile)
    elif ssl_cafile or ssl_certfile or ssl_keyfile:
        raise ValueError(f"TLS files given but the security protocol is {protocol}: use SSL or "
                         "SASL_SSL")
    return options


async def run(bootstrap: str, topic: str, group: str, state: Path, *, flush_s: float = 5.0,
              stop: asyncio.Event | None = None, idle_exit_s: float | None = None,
              connection: dict[str, Any] | None = None) -> View:
    """Consume ``topic`` into the view at ``state`` until ``stop`` is set (or, with
    ``idle_exit_s``, until no record arrived for that long).  ``connection``: TLS/SASL options
    from :func:`connection_options`."""
    from aiokafka import AIOKafkaConsumer

    view = View.load(state)
    stop = stop or asyncio.Event()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed", **(connection or {}))
    await consumer.start()
    last_flush = last_record = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for r in records:
                    view.apply(r.key, r.value, r.headers)
                    last_record = time.monotonic()
            now = time.monotonic()
            if batches and now - last_flush >= flush_s:
                view.save(state)
                await consumer.commit()  # after the view that holds these records is saved
                last_flush = now
            if idle_exit_s is not None and now - last_record >= idle_exit_s:
                break
        view.save(state)
        await consumer.commit()
    finally:
        await consumer.stop()
    log.info("view of %d users saved to %s; %s", len(view.users), state, view.stats)
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="profiles.summaries.v1")
    parser.add_argument("--group", default="example-subscriber")
    parser.add_argument("--state", type=Path, default=Path("subscriber-view.json"))
    parser.add_argument("--flush-s", type=float, default=5.0)
    parser.add_argument("--idle-exit-s", type=float, default=None,
                        help="Exit after this long without a record (default: run until ^C).")
    parser.add_argument("--security-protocol", default="PLAINTEXT",
                        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
    parser.add_argument("--sasl-mechanism", default="SCRAM-SHA-512",
                        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    parser.add_argument("--sasl-username", default=None,
                        help="SASL user; the password is read from KAFKA_SASL_PASSWORD")
    parser.add_argument("--ssl-cafile", default=None, help="PEM CA bundle (default: system)")
    parser.add_argument("--ssl-certfile", default=None, help="PEM client certificate (mTLS)")
    parser.add_argument("--ssl-keyfile", default=None, help="its PEM private key")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        connection = connection_options(
            args.security_protocol, sasl_mechanism=args.sasl_mechanism,
            sasl_username=args.sasl_username, sasl_password=os.environ.get("KAFKA_SASL_PASSWORD"),
            ssl_cafile=args.ssl_cafile, ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        view = await run(args.bootstrap, args.topic, args.group, args.state,
                         flush_s=args.flush_s, stop=stop, idle_exit_s=args.idle_exit_s,
                         connection=connection)
        print(json.dumps({"users": len(view.users), **view.stats}))

    asyncio.run(go())


if __name__ == "__main__":
    main()
