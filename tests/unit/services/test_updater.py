import asyncio

import pytest

from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.services.updater import Outcome, ProfileUpdater, UpdatePolicy
from tests.factories import feedback, item, pairwise

pytestmark = pytest.mark.unit

FAST = UpdatePolicy(output_backoff_s=0)


class GatedModel(ScriptedSummaryModel):
    """Answers only once ``gate`` is set: keeps updates in flight on demand."""

    def __init__(self, gate: asyncio.Event):
        super().__init__(lambda r: "<think>t</think>\n\nok")
        self.gate = gate

    async def generate(self, request):
        await self.gate.wait()
        return await super().generate(request)


def updater(script, store=None, publisher=None):
    return ProfileUpdater(
        store or InMemoryProfileStore(),
        ScriptedSummaryModel(script),
        publisher or CollectingPublisher(),
        FAST,
    )


async def test_first_and_second_update_make_contiguous_versions_and_events():
    u = updater(["<think>x</think>\n\nLikes A.", "<think>y</think>\n\nLikes A and B."])
    r1 = await u.apply("u1", [pairwise("e1"), pairwise("e2")])
    r2 = await u.apply("u1", [pairwise("e3")])
    assert (r1.outcome, r2.outcome) == (Outcome.UPDATED, Outcome.UPDATED)
    hist = await u.store.history("u1")
    assert [h.version for h in hist] == [1, 2] and hist[1].previous_version == 1
    assert hist[1].summary == "Likes A and B." and hist[0].event_ids == ("e1", "e2")
    events = u.publisher.events
    assert [(e.version, e.previous_version) for e in events] == [(1, None), (2, 1)]
    # the second prompt carries the first summary and renumbers triples from 1
    second = u.model.requests[1].prompt.user
    assert "=====Past Preference Summary=====\n\nLikes A.\n\n" in second
    assert "=====Triple 1=====" in second and "=====Triple 2=====" not in second


async def test_garbage_is_retried_then_previous_summary_kept():
    u = updater(["no think at all", "<think>a</think>", "<think>a</think>b</think>c"])
    result = await u.apply("u1", [pairwise("e1")])
    assert result.outcome is Outcome.REJECTED_OUTPUT
    assert result.rejections == ("no_think_close", "empty_summary", "multiple_think_close")
    assert await u.store.history("u1") == [] and u.publisher.events == []
    assert u.publisher.failures == []  # the scheduler retries, and notifies once if it parks


async def test_retry_recovers_from_one_bad_reply():
    u = updater(["<think>oops", "<think>ok</think>\n\nFine."])
    result = await u.apply("u1", [pairwise("e1")])
    assert result.outcome is Outcome.UPDATED and result.attempts == 2
    assert result.record.summary == "Fine."


async def test_replayed_window_is_not_applied_twice_but_its_event_is_republished():
    u = updater(lambda req: "<think>t</think>\n\nS.")
    await u.apply("u1", [pairwise("e1"), pairwise("e2")])
    again = await u.apply("u1", [pairwise("e1"), pairwise("e2")])
    assert again.outcome is Outcome.DUPLICATE
    assert len(await u.store.history("u1")) == 1
    assert [e.event_id for e in u.publisher.events][0] == u.publisher.events[1].event_id


async def test_a_republished_change_event_is_the_same_event():
    """After a crash between store and publish, the copy carries what the original did: the
    previous summary (read back from the history) and the window facts (stored)."""
    u = updater(lambda req: f"<think>t</think>\n\nSummary {len(req.triples)}.")
    await u.apply("u1", [pairwise("e1")])
    await u.apply("u1", [pairwise("e2"), pairwise("e3")])
    await u.apply("u1", [pairwise("e2"), pairwise("e3")])  # redelivered: republished
    original, copy = u.publisher.events[1], u.publisher.events[2]
    assert copy == original
    assert copy.previous_summary == "Summary 1." and copy.window.events == 2


async def test_partially_replayed_window_applies_only_new_events():
    u = updater(lambda req: f"<think>t</think>\n\n{len(req.triples)} new.")
    await u.apply("u1", [pairwise("e1")])
    r = await u.apply("u1", [pairwise("e1"), pairwise("e2")])
    assert r.record.event_ids == ("e2",) and r.record.summary == "1 new."


async def test_window_without_triples_makes_no_model_call_but_records_its_events():
    u = updater(["<think>t</think>\n\nLikes A."])
    r = await u.apply("u1", [feedback("d1", "dislike")])
    assert r.outcome is Outcome.NO_TRIPLES and r.dropped_event_ids == ("d1",)
    assert u.model.requests == []
    assert r.record.summary == "Not Provided." and r.record.event_ids == ("d1",)
    await u.apply("u1", [pairwise("e1")])
    # the placeholder renders exactly like a missing summary in the next prompt
    assert "=====Past Preference Summary=====\n\nNot Provided.\n\n" in u.model.requests[0].prompt.user
    r3 = await u.apply("u1", [feedback("d2", "dislike")])
    assert r3.record.summary == "Likes A." and r3.record.version == 3
    assert [e.version for e in u.publisher.events] == [1, 2, 3]


async def test_window_over_the_token_budget_keeps_recent_events_and_records_the_dropped():
    store, pub = InMemoryProfileStore(), CollectingPublisher()
    model = ScriptedSummaryModel(lambda req: "<think>t</think>\n\nok")
    policy = UpdatePolicy(output_backoff_s=0, context_tokens=1400, output_tokens=200)
    u = ProfileUpdater(store, model, pub, policy)
    events = [pairwise(f"e{i}", chosen=item(f"c{i}", abstract="word " * 60)) for i in range(8)]
    r = await u.apply("u1", events)
    assert r.outcome is Outcome.UPDATED and r.dropped_event_ids
    kept = [t.event_id for t in model.requests[0].triples]
    assert kept == [e.event_id for e in events][-len(kept):]  # most recent kept, in order
    assert set(r.dropped_event_ids) == {e.event_id for e in events} - set(kept)
    assert pub.events[0].dropped_event_ids == r.dropped_event_ids
    assert pub.events[0].event_ids == tuple(e.event_id for e in events)  # consumed, not lost


async def test_exact_counter_is_asked_only_when_the_estimate_does_not_fit():
    calls = []

    async def exact(prompt):
        calls.append(prompt)
        return len(prompt.chat_text()) // 8

    u = ProfileUpdater(InMemoryProfileStore(), ScriptedSummaryModel(lambda r: "<think>t</think>\n\nok"),
                       CollectingPublisher(), UpdatePolicy(output_backoff_s=0), token_counter=exact)
    await u.apply("u1", [pairwise("e1")])
    assert calls == []
    u.policy = UpdatePolicy(output_backoff_s=0, context_tokens=1400, output_tokens=200)
    events = [pairwise(f"x{i}", chosen=item(f"c{i}", abstract="word " * 60)) for i in range(8)]
    r = await u.apply("u2", events)
    assert calls and r.outcome is Outcome.UPDATED


async def test_late_duplicate_of_an_older_version_is_not_applied_again():
    u = updater(lambda req: "<think>t</think>\n\nS.")
    await u.apply("u1", [pairwise("e1"), pairwise("e2")])
    await u.apply("u1", [pairwise("e3")])
    r = await u.apply("u1", [pairwise("e1"), pairwise("e4")])
    assert r.record.event_ids == ("e4",)
    assert [e.version for e in u.publisher.events] == [1, 2, 3]  # no republish of an old version
