"""Deleting a user (memory adapters): everything of A goes, B stays; a deletion racing an
in-flight update leaves nothing behind; later events of a forgotten user are dropped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from streamer.adapters.memory.pending import MemoryPendingBuffer
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.ports import ModelReply, ParkedWindow, PendingEntry, PendingUser
from streamer.services.forget import forget_user
from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
from tests.factories import pairwise

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
REPLY = "<think>t</think>\n\nLikes news."


class GatedModel:
    """Answers once ``release`` is set; ``called`` is set when a call arrived."""

    name = "gated"

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, request):
        self.called.set()
        await self.release.wait()
        return ModelReply(text=REPLY, model=self.name, prompt_tokens=1, completion_tokens=1,
                          finish_reason="stop", latency_ms=1.0)

    async def aclose(self) -> None:
        return None


def entry(user: str, n: int) -> PendingEntry:
    return PendingEntry(user, f"{user}-p{n}", "d", 3, 100 + n, b"{}", 0.0)


async def seeded():
    store, buffer, publisher = InMemoryProfileStore(), MemoryPendingBuffer(), CollectingPublisher()
    for user in ("A", "B"):
        u = ProfileUpdater(store, GatedModel(), publisher, UpdatePolicy())
        u.model.release.set()
        await u.apply(user, [pairwise(f"{user}-1", user)])
        await buffer.add([entry(user, 1), entry(user, 2)], [PendingUser(user, 3, 0.0)], stamp_us=1)
        await buffer.park(ParkedWindow(user, "w1", 3, "OutputRejected", "r", 5, 0.0,
                                       (entry(user, 9),)))
    return store, buffer, publisher


async def test_forgetting_a_removes_all_of_a_and_nothing_of_b():
    store, buffer, publisher = await seeded()
    report = await forget_user(store, buffer, publisher, "A", suppress_s=60, now=NOW)
    assert (report.deleted_versions, report.deleted_pending_events) == (1, 3)
    assert await store.get_current("A") is None and await store.history("A") == []
    assert await store.applied_event_ids("A", ["A-1"]) == set()
    assert await buffer.read("A", 10) == [] and await buffer.parked("A") == []
    assert [u.user_id for u in await buffer.users([3])] == ["B"]
    assert (await store.get_current("B")).version == 1 and len(await buffer.read("B", 10)) == 2
    assert len(await buffer.parked("B")) == 1
    (deleted,) = publisher.deleted
    assert (deleted.user_id, deleted.deleted_versions, deleted.occurred_at) == ("A", 1, NOW)
    again = await forget_user(store, buffer, publisher, "A", suppress_s=60, now=NOW)
    assert again.deleted_versions == 0 and again.event_id == report.event_id  # idempotent


async def test_a_deletion_racing_an_in_flight_update_leaves_nothing():
    store, buffer, publisher = InMemoryProfileStore(), MemoryPendingBuffer(), CollectingPublisher()
    model = GatedModel()
    u = ProfileUpdater(store, model, publisher, UpdatePolicy(), check_forgotten=True)
    update = asyncio.create_task(u.apply("A", [pairwise("A-1", "A")]))
    await model.called.wait()  # the update passed its first check and is in the model call
    await forget_user(store, buffer, publisher, "A", suppress_s=60, now=NOW)
    model.release.set()
    result = await update
    assert result.outcome is Outcome.SUPPRESSED
    assert await store.get_current("A") is None and await store.history("A") == []
    assert publisher.events == []  # no change event for the forgotten user


async def test_events_of_a_forgotten_user_are_dropped_while_suppressed():
    store, buffer, publisher = InMemoryProfileStore(), MemoryPendingBuffer(), CollectingPublisher()
    model = GatedModel()
    model.release.set()
    u = ProfileUpdater(store, model, publisher, UpdatePolicy(), check_forgotten=True)
    await forget_user(store, buffer, publisher, "A", suppress_s=60, now=NOW)
    assert (await u.apply("A", [pairwise("A-2", "A")])).outcome is Outcome.SUPPRESSED
    assert not model.called.is_set() and await store.history("A") == []
    await forget_user(store, buffer, publisher, "C", suppress_s=0, now=NOW)  # no suppression
    assert (await u.apply("C", [pairwise("C-1", "C")])).outcome is Outcome.UPDATED
