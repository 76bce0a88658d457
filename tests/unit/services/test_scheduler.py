"""The scheduler on the in-memory buffer: retries, parking, chains, overload, draining."""

import asyncio

import pytest

from streamer.adapters.memory.pending import MemoryPendingBuffer
from streamer.adapters.memory.publish import CollectingPublisher
from streamer.adapters.memory.store import InMemoryProfileStore
from streamer.devtools.fakes import ScriptedSummaryModel
from streamer.domain.catalog import Catalog
from streamer.domain.pending import PendingIndex, TokenBucket, WindowRules
from streamer.errors import ModelRequestError, ModelUnavailableError
from streamer.services.flow import UpdateFlow
from streamer.services.policy import RetryPolicy
from streamer.services.scheduler import CATALOG_RECHECK_S, BudgetedModel, Scheduler
from streamer.services.updater import ProfileUpdater, UpdatePolicy
from tests.factories import item, pairwise

pytestmark = pytest.mark.unit

OK = "<think>t</think>\n\nok"


class Rec:
    def __init__(self, event, offset, partition=0):
        self.value = event.model_dump_json().encode()
        self.key = event.user_id.encode()
        self.topic, self.partition, self.offset = "in", partition, offset
        self.timestamp, self.headers = None, None


class Model(ScriptedSummaryModel):
    """Fails per user on demand: ``fail[user] = exception`` (raised every call)."""

    def __init__(self, text=OK):
        super().__init__(lambda r: text)
        self.fail: dict[str, Exception] = {}
        self.gate: asyncio.Event | None = None

    async def generate(self, request):
        if self.gate is not None:
            await self.gate.wait()
        user = request.triples[0].event_id.split("-")[0]
        if user in self.fail:
            self.requests.append(request)
            raise self.fail[user]
        return await super().generate(request)


class Stack:
    def __init__(self, *, max_events=2, max_age_s=100.0, concurrency=4, park_after=3,
                 model=None, prompt_tokens=8192, max_events_per_update=64, catalog=None,
                 catalog_grace_s=300.0, catalog_ready=lambda: True, telemetry=None):
        self.now = [0.0]
        self.store, self.pub = InMemoryProfileStore(), CollectingPublisher()
        self.model = model or Model()
        budget = BudgetedModel(self.model, concurrency)
        lookup = catalog.get if catalog is not None else None
        self.updater = ProfileUpdater(self.store, budget, self.pub,
                                      UpdatePolicy(output_backoff_s=0), catalog=lookup,
                                      telemetry=telemetry)
        self.index = PendingIndex(WindowRules(max_events=max_events, max_age_s=max_age_s))
        self.buffer = MemoryPendingBuffer()
        self.dlq = []

        class DLQ:
            async def publish(_, error, **kw):
                self.dlq.append((error.code, kw))

        self.scheduler = Scheduler(
            self.index, self.buffer, self.updater, self.pub, budget=budget,
            clock=lambda: self.now[0],
            retry=RetryPolicy(base_s=1.0, max_s=8.0, park_after=park_after),
            prompt_tokens=prompt_tokens, max_events_per_update=max_events_per_update,
            dead_letters=DLQ(), catalog=lookup, catalog_grace_s=catalog_grace_s,
            catalog_ready=catalog_ready, telemetry=telemetry)
        self.flow = UpdateFlow(self.index, self.buffer, self.scheduler, DLQ(),
                               max_message_bytes=1 << 20, clock=lambda: self.now[0])
        self.offset = 0

    async def send(self, *events, partition=0):
        recs = []
        for e in events:
            recs.append(Rec(e, self.offset, partition))
            self.offset += 1
        await self.flow.intake(recs)

    async def run(self, until=None):
        """Tick (advancing the clock to ``until``) until nothing is in flight."""
        if until is not None:
            self.now[0] = until
        await self.scheduler.tick()
        await self.scheduler.wait_idle()

    def versions(self, user):
        return [r.event_ids for r in self.store.versions.get(user, [])]


def ev(user, n):
    return pairwise(f"{user}-{n}", user_id=user)


async def test_transient_failure_backs_off_retries_and_loses_nothing():
    s = Stack()
    s.model.fail["u1"] = ModelUnavailableError("down")
    await s.send(ev("u1", 1), ev("u1", 2))
    await s.run()
    assert s.scheduler.degraded and s.versions("u1") == []
    assert s.flow.positions == {("in", 0): 2}  # buffered: committable although not applied
    del s.model.fail["u1"]
    await s.run(until=0.5)  # still backing off (1 s)
    assert s.versions("u1") == []
    await s.run(until=1.0)
    assert s.versions("u1") == [("u1-1", "u1-2")] and not s.scheduler.degraded
    assert s.buffer.pending_count() == 0 and len(s.index) == 0


async def test_poison_user_is_parked_once_and_others_keep_flowing():
    s = Stack(max_events=1, park_after=3)
    s.model.fail["bad"] = ModelRequestError("400: prompt refused")
    await s.send(ev("bad", 1), *[ev(f"ok{i}", 1) for i in range(5)])
    t = 0.0
    for _ in range(10):
        await s.run(until=t)
        t += 10
    assert all(s.versions(f"ok{i}") == [(f"ok{i}-1",)] for i in range(5))
    assert len(s.model.requests) >= 3
    (notice,) = s.pub.failures  # one notice, at parking, with a deterministic id
    assert notice.user_id == "bad" and notice.event_ids == ("bad-1",) and notice.attempts == 3
    (parked,) = await s.buffer.parked()
    assert parked.error_type == "model_request" and "prompt refused" in parked.reason
    assert [e.event_id for e in parked.entries] == ["bad-1"]
    assert s.buffer.pending_count() == 0 and len(s.index) == 0
    # the poison user's later events are applied normally once the model accepts them
    del s.model.fail["bad"]
    await s.send(ev("bad", 2))
    await s.run(until=t)
    assert s.versions("bad") == [("bad-2",)]


class RejectsFor(Model):
    """Garbage for the given users' prompts, good summaries for everyone else."""

    def __init__(self, users):
        super().__init__()
        self.users = users

    async def generate(self, request):
        reply = await super().generate(request)
        if request.triples[0].event_id.split("-")[0] in self.users:
            return type(reply)("no think", reply.model, 1, 1, "stop")
        return reply


async def test_rejected_output_is_retried_then_parked_while_others_succeed():
    s = Stack(max_events=1, park_after=2, model=RejectsFor({"u1"}))
    await s.send(ev("u1", 1))
    for t in (0, 5, 10, 20):
        await s.send(ev(f"ok{t}", 1), ev(f"ok{t}", 2))
        await s.run(until=t)
    (notice,) = s.pub.failures
    assert notice.reasons and notice.user_id == "u1"
    assert (await s.buffer.parked())[0].error_type == "output_rejected"


async def test_nobody_is_parked_while_every_update_fails():
    s = Stack(max_events=1, park_after=2, model=RejectsFor({"u1", "u2", "u3"}))
    await s.send(ev("u1", 1), ev("u2", 1), ev("u3", 1))
    for t in (0, 5, 10, 20, 40):
        await s.run(until=t)
    assert await s.buffer.parked() == [] and s.pub.failures == []  # the model is at fault
    s.model.users = set()
    await s.run(until=100)
    assert [s.versions(u) for u in ("u1", "u2", "u3")] == [[("u1-1",)], [("u2-1",)], [("u3-1",)]]


async def test_large_window_is_applied_as_a_chain_in_order():
    s = Stack(max_events=1000, max_events_per_update=4)
    await s.send(*[ev("u1", i) for i in range(10)])
    await s.run(until=1000)
    assert s.versions("u1") == [tuple(f"u1-{i}" for i in range(a, min(a + 4, 10)))
                                for a in (0, 4, 8)]
    assert [e.version for e in s.pub.events] == [1, 2, 3]


async def test_chain_splits_by_token_estimate():
    s = Stack(max_events=1000, prompt_tokens=1500)
    big = [pairwise(f"u1-{i}", user_id="u1", chosen=item(f"c{i}", abstract="word " * 200))
           for i in range(6)]
    await s.send(*big)
    await s.run(until=1000)
    chain = s.versions("u1")
    assert len(chain) > 1 and [e for link in chain for e in link] == [f"u1-{i}" for i in range(6)]


async def test_under_overload_windows_grow_instead_of_calls_queueing():
    s = Stack(max_events=1, concurrency=1)  # one model slot, two updates in flight at most
    s.model.gate = asyncio.Event()
    await s.send(ev("u1", 0))
    await s.scheduler.tick()
    for _ in range(5):
        await asyncio.sleep(0)  # the update has read its window and waits for the model
    assert s.scheduler.busy == 1
    await s.send(*[ev("u1", i) for i in range(1, 6)], ev("u2", 0))
    assert await s.scheduler.tick() == 1  # u2 starts and waits for the model slot
    assert s.scheduler.saturated
    assert await s.scheduler.tick() == 0  # u1's new events wait in its (growing) window
    s.model.gate.set()
    await s.scheduler.wait_idle()
    await s.run()
    await s.run()
    assert s.versions("u1") == [("u1-0",), tuple(f"u1-{i}" for i in range(1, 6))]
    assert s.versions("u2") == [("u2-0",)]
    assert len(s.model.requests) == 3  # 7 events, 3 calls
    assert s.scheduler.model.in_flight == 0


async def test_event_id_reused_with_other_content_is_dead_lettered():
    s = Stack(max_events=2)
    first = pairwise("u1-1", user_id="u1", chosen=item("a"))
    other = pairwise("u1-1", user_id="u1", chosen=item("b"))
    await s.send(first, other)  # same id, different bytes: two rows in the buffer
    await s.run()
    assert s.versions("u1") == [("u1-1",)]
    assert [code for code, _ in s.dlq] == ["event_id_reused"]


async def test_event_id_reused_after_it_was_applied_is_dead_lettered_not_dropped():
    s = Stack(max_events=1)
    await s.send(pairwise("u1-1", user_id="u1", chosen=item("a")))
    await s.run()
    await s.send(pairwise("u1-1", user_id="u1", chosen=item("a")))  # a true duplicate
    await s.run()
    await s.send(pairwise("u1-1", user_id="u1", chosen=item("b")))  # same id, other content
    await s.run()
    assert s.versions("u1") == [("u1-1",)]
    assert [code for code, _ in s.dlq] == ["event_id_reused"]
    assert s.buffer.pending_count() == 0


async def test_fenced_update_neither_stores_nor_publishes():
    s = Stack(max_events=1)
    s.scheduler.ownership.partitions = {0}
    s.model.gate = asyncio.Event()
    await s.send(ev("u1", 1))
    await s.scheduler.tick()
    await s.flow.on_revoked([0], wait_s=0.01)  # the partition moves while the call is out
    s.model.gate.set()
    await s.scheduler.wait_idle()
    assert s.versions("u1") == [] and s.pub.events == []
    assert s.buffer.pending_count() == 1  # left for the new owner
    assert len(s.index) == 0


async def test_new_owner_rebuilds_due_windows_from_the_buffer():
    s = Stack(max_events=100, max_age_s=10)
    await s.send(ev("u1", 1), ev("u1", 2), partition=3)
    s2 = Stack(max_events=100, max_age_s=10)
    s2.buffer, s2.scheduler.buffer, s2.flow.buffer = s.buffer, s.buffer, s.buffer
    s2.store = s2.updater.store = s.store
    assert await s2.flow.on_assigned([3]) == 1
    await s2.run(until=10)
    assert s.versions("u1") == [("u1-1", "u1-2")]
    assert await s.buffer.users([3]) == []


async def test_drain_waits_for_in_flight_and_keeps_the_rest_buffered():
    s = Stack(max_events=1)
    s.model.gate = asyncio.Event()
    await s.send(ev("u1", 1))
    await s.scheduler.tick()
    assert await s.scheduler.drain(0.05) is False  # cancelled at the deadline
    assert s.buffer.pending_count() == 1
    assert await s.scheduler.tick() == 0  # closing: nothing new starts


def _gated_buffer(s: Stack) -> tuple[asyncio.Event, list[int]]:
    """Hold every pending-buffer write until the gate opens; record each write's row count."""
    gate, sizes = asyncio.Event(), []
    real_add = s.buffer.add

    async def slow_add(rows, users, **kw):
        sizes.append(len(rows))
        await gate.wait()
        return await real_add(rows, users, **kw)

    s.buffer.add = slow_add
    return gate, sizes


async def test_pipelined_intake_moves_positions_only_after_the_batch_is_buffered():
    s = Stack(max_events=100)
    s.flow.pipeline = True
    gate, sizes = _gated_buffer(s)
    await s.send(ev("u1", 1), ev("u1", 2))  # returns while the batch is being written
    await asyncio.sleep(0.01)
    await s.send(ev("u2", 1))  # queued behind the write in flight
    await s.send(ev("u3", 1), ev("u1", 3))
    await asyncio.sleep(0.01)
    assert s.flow.positions == {} and s.buffer.pending_count() == 0
    gate.set()
    await s.flow.flush_intake()
    # the two queued batches were written together, once the first write had landed
    assert sizes == [2, 3]
    assert s.flow.positions == {("in", 0): 5} and s.buffer.pending_count() == 5
    assert s.index.pending_events() == 5 and len(s.index) == 3


async def test_pipelined_intake_waits_when_too_much_is_queued():
    s = Stack(max_events=100)
    s.flow.pipeline, s.flow.max_queued_rows = True, 2
    gate, sizes = _gated_buffer(s)
    await s.send(ev("u1", 1))
    await asyncio.sleep(0.01)  # in flight
    await s.send(ev("u2", 1), ev("u2", 2))  # queued: the queue is full
    third = asyncio.create_task(s.send(ev("u3", 1)))
    await asyncio.sleep(0.01)
    assert not third.done()  # backpressure: waits for the writer to take the queue
    gate.set()
    await third
    await s.flow.flush_intake()
    assert sizes == [1, 2, 1] and s.flow.positions == {("in", 0): 4}


async def test_a_failed_pipelined_write_stops_intake_and_commits_nothing_after_it():
    s = Stack(max_events=100)
    s.flow.pipeline, s.flow.closing = True, True  # closing: a failed write is not retried
    written = []

    async def add(rows, users, **kw):
        written.append(len(rows))
        if len(written) == 2:
            raise RuntimeError("buffer write refused")
        await asyncio.sleep(0)

    s.buffer.add = add
    await s.send(ev("u1", 1))
    await s.flow.flush_intake()
    assert s.flow.positions == {("in", 0): 1}
    await s.send(ev("u2", 1))
    with pytest.raises(RuntimeError, match="refused"):
        await s.flow.flush_intake()
    with pytest.raises(RuntimeError, match="refused"):
        await s.send(ev("u3", 1))  # the agent stops the worker
    assert s.flow.positions == {("in", 0): 1}  # re-read from here on restart


async def test_recovered_user_keeps_events_that_arrive_during_its_update():
    s = Stack(max_events=100, max_age_s=10)
    await s.send(ev("u1", 1), ev("u1", 2), ev("u1", 3))
    s2 = Stack(max_events=100, max_age_s=10)  # a new owner: count unknown (1) after the rebuild
    s2.buffer = s2.scheduler.buffer = s2.flow.buffer = s.buffer
    s2.offset = s.offset
    await s2.flow.on_assigned([0])
    s2.model.gate = asyncio.Event()
    s2.now[0] = 10
    await s2.scheduler.tick()
    for _ in range(5):
        await asyncio.sleep(0)  # read the 3 buffered events, now in the model call
    await s2.send(ev("u1", 4))  # arrives during the call: not part of this update
    s2.model.gate.set()
    await s2.scheduler.wait_idle()
    assert s2.versions("u1") == [("u1-1", "u1-2", "u1-3")]
    assert "u1" in s2.index and s2.index.pending_events() == 1
    await s2.run(until=100)
    assert s2.versions("u1")[-1] == ("u1-4",) and s2.index.pending_events() == 0


async def test_a_failing_buffer_read_is_retried_never_parked():
    s = Stack(max_events=1, park_after=2)
    await s.send(ev("u1", 1))

    async def broken(*a, **kw):
        raise RuntimeError("read failed on replicas")

    real, s.buffer.read = s.buffer.read, broken
    for t in (0, 10, 20, 40):
        await s.run(until=t)
    assert await s.buffer.parked() == [] and s.pub.failures == []
    s.buffer.read = real
    await s.run(until=100)
    assert s.versions("u1") == [("u1-1",)]


async def test_a_failure_while_parking_does_not_leave_the_user_stuck():
    s = Stack(max_events=1, park_after=1)
    s.model.fail["u1"] = ModelRequestError("400")
    await s.send(ev("ok0", 1))
    await s.run(until=0)

    async def broken(window):
        raise RuntimeError("park table unavailable")

    real, s.buffer.park = s.buffer.park, broken
    await s.send(ev("u1", 1))
    for t in (1, 2, 3):
        await s.send(ev(f"ok{t}", 1))
        await s.run(until=t * 10)
    w = s.index.get("u1")
    assert w is not None and not w.in_flight  # settled, due again later
    assert await s.buffer.parked() == []
    s.buffer.park = real
    await s.send(ev("ok9", 1))
    await s.run(until=100)
    assert len(await s.buffer.parked()) == 1


async def test_records_of_a_revoked_partition_are_buffered_but_not_scheduled():
    s = Stack(max_events=1)
    s.scheduler.ownership.partitions = {1}
    await s.send(ev("u1", 1), partition=0)
    assert s.buffer.pending_count() == 1 and "u1" not in s.index
    assert s.flow.positions == {} and await s.buffer.users([0]) == []


async def test_pending_events_gauge_never_goes_negative():
    s = Stack(max_events=2)
    s.model.gate = asyncio.Event()
    await s.send(ev("u1", 1), ev("u1", 2))
    await s.scheduler.tick()
    await s.send(ev("u1", 3))  # during the update
    assert s.index.pending_events() == 1
    s.model.gate.set()
    await s.scheduler.wait_idle()
    await s.run(until=1000)
    assert s.index.pending_events() == 0 and len(s.index) == 0


async def test_tokens_per_second_budget_spaces_out_window_starts():
    s = Stack(max_events=1, concurrency=8)
    s.scheduler.token_budget = TokenBucket(rate=300)
    await s.send(*[ev(f"u{i}", 1) for i in range(6)])
    cost = s.index.get("u0").tokens
    await s.run(until=0)
    started_at_0 = sum(bool(s.versions(f"u{i}")) for i in range(6))
    assert started_at_0 == 300 // cost  # the burst: one second of tokens
    for t in range(1, 4):  # 300 tokens/s: the rest start over the next seconds
        await s.run(until=t)
    assert all(s.versions(f"u{i}") for i in range(6))


async def test_a_failed_dead_letter_write_is_retried_and_readiness_recovers():
    s = Stack()
    s.flow.retry_backoff_s = 0.01
    calls = []
    real = s.flow.dead_letters.publish

    async def flaky(error, **kw):
        calls.append(error.code)
        if len(calls) == 1:
            raise ConnectionError("broker down")
        return await real(error, **kw)

    s.flow.dead_letters.publish = flaky

    class Bad(Rec):
        def __init__(self):
            super().__init__(ev("u1", 1), 0)
            self.value = b"{not json"

    await s.flow.intake([Bad()])
    assert calls == ["invalid_json", "invalid_json"] and [c for c, _ in s.dlq] == ["invalid_json"]
    assert s.flow.readiness()[0] and s.flow.positions == {("in", 0): 1}


# -- items named by id only: the catalog ------------------------------------------------------


def bare_ev(user, n, item_id, minutes=0):
    from schemas import Item

    return pairwise(f"{user}-{n}", user_id=user, minutes=minutes, chosen=Item(id=item_id),
                    rejected=None)


def publish_item(catalog, item_id):
    from schemas import CatalogItem

    catalog.put(CatalogItem(domain="news", item=item(item_id, title=f"Title of {item_id}",
                                                     abstract="a")))


async def test_an_item_published_after_the_click_resolves_when_the_window_closes():
    c = Catalog()
    s = Stack(max_events=1, catalog=c, catalog_grace_s=300)
    await s.send(bare_ev("u1", 1, "late"))
    await s.run(until=1.0)  # due, but its item is not in the catalog: the window waits
    assert s.versions("u1") == [] and s.model.requests == []
    assert s.scheduler.stats.failures == 0 and s.index.get("u1").attempts == 0
    publish_item(c, "late")
    await s.run(until=1.0 + CATALOG_RECHECK_S)  # looked again: resolved, long before grace ends
    assert s.versions("u1") == [("u1-1",)]
    assert "Title of late" in s.model.requests[0].prompt.messages()[-1]["content"]
    assert s.store.versions["u1"][0].window.unresolved_item_ids == ()


async def test_after_the_grace_period_the_event_is_applied_without_its_item_and_it_is_recorded():
    from streamer.telemetry import setup_telemetry
    from tests.unit.test_telemetry import sample_value

    telemetry = setup_telemetry(None)
    c = Catalog()
    publish_item(c, "known")
    s = Stack(max_events=2, catalog=c, catalog_grace_s=60, telemetry=telemetry)
    metric = "streamer_catalog_unresolved_items_total"
    assert sample_value(telemetry.metrics_text().decode(), metric) == 0
    await s.send(bare_ev("u1", 1, "known"), bare_ev("u1", 2, "never", minutes=1))
    await s.run(until=1.0)  # the first event is applied now, the second waits for its item
    assert s.versions("u1") == [("u1-1",)]
    for t in (3.0, 30.0, 59.0):
        await s.run(until=t)
        assert s.versions("u1") == [("u1-1",)]
    await s.run(until=100.0)  # grace over: the rest of the window closes by its own rules (age)
    assert s.versions("u1") == [("u1-1",), ("u1-2",)]
    v2 = s.store.versions["u1"][1]
    assert v2.window.unresolved_item_ids == ("never",)
    assert v2.dropped_event_ids == ("u1-2",)  # nothing left to show the model: no triple
    assert len(s.model.requests) == 1  # the second version carried the summary forward
    assert s.buffer.pending_count() == 0 and len(s.index) == 0
    assert sample_value(telemetry.metrics_text().decode(), metric) == 1


async def test_while_the_catalog_loads_no_window_gives_up_on_its_items():
    c = Catalog()
    loaded = [False]
    s = Stack(max_events=1, catalog=c, catalog_grace_s=5, catalog_ready=lambda: loaded[0])
    await s.send(bare_ev("u1", 1, "slow"))
    for t in (1.0, 10.0, 100.0):  # long past the grace period, but the catalog is not loaded
        await s.run(until=t)
    assert s.versions("u1") == []
    publish_item(c, "slow")
    loaded[0] = True
    await s.run(until=100.0 + CATALOG_RECHECK_S)
    assert s.versions("u1") == [("u1-1",)]
    assert s.store.versions["u1"][0].window.unresolved_item_ids == ()
