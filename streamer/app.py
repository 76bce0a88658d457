"""Composition root: the only module that wires settings, adapters and flows together."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import faust
from faust.transport.drivers.aiokafka import Producer as _FaustProducer

from .adapters.kafka.consumer import BufferedPositionConsumer
from .adapters.kafka.publish import DeadLetterPublisher, KafkaChangePublisher
from .domain.pending import PendingIndex, WindowRules
from .domain.prompt import Prompt
from .ports import PendingBuffer, ProfileStore, SummaryModel, TokenCounter
from .services.flow import UpdateFlow
from .services.policy import RetryPolicy
from .services.scheduler import Scheduler
from .services.updater import ProfileUpdater, UpdatePolicy
from .settings import Settings
from .telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry, setup_telemetry

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> ProfileStore:
    """The configured profile store (connects and migrates Cassandra)."""
    if settings.store == "sqlite":
        from .adapters.sqlite.store import SqliteProfileStore

        return SqliteProfileStore(settings.sqlite_path)
    from .adapters.cassandra.store import CassandraProfileStore

    return CassandraProfileStore.from_settings(settings.cassandra)


def build_buffer(settings: Settings, store: ProfileStore) -> PendingBuffer:
    """The durable pending buffer: beside the summaries in Cassandra (sharing the store's
    session), in memory for the SQLite demo store."""
    if settings.store == "sqlite":
        from .adapters.memory.pending import MemoryPendingBuffer

        return MemoryPendingBuffer()
    from .adapters.cassandra.pending import CassandraPendingBuffer

    return CassandraPendingBuffer.from_store(store)


def window_rules(settings: Settings) -> WindowRules:
    w = settings.window
    return WindowRules(max_events=w.max_events, max_age_s=w.max_age_s, max_tokens=w.max_tokens,
                       min_interval_s=w.min_interval_s)


def retry_policy(settings: Settings) -> RetryPolicy:
    w = settings.window
    return RetryPolicy(base_s=w.retry_backoff_s, max_s=w.retry_backoff_max_s,
                       park_after=w.park_after_attempts)


def prompt_tokens(settings: Settings) -> int:
    """Token budget of one update's interactions: the context less the output allowance and
    room for the previous summary (its character cap / 2 tokens) and the template."""
    m = settings.model
    return max(256, m.context_tokens - m.max_tokens - m.max_summary_chars // 2 - 512)


def build_flow(settings: Settings, updater: ProfileUpdater, buffer: PendingBuffer,
               dead_letters: object, *, clock: object = None, require_key: bool = True,
               pipeline: bool = False, telemetry: Telemetry | None = None) -> UpdateFlow:
    """Index, scheduler and intake of one worker (also used by replay, with event time)."""
    import time

    clock = clock or time.time
    index = PendingIndex(window_rules(settings))
    scheduler = Scheduler(
        index, buffer, updater, updater.publisher,
        decode=lambda e: flow.decode(e),
        max_concurrency=settings.model.max_concurrency,
        clock=clock,  # type: ignore[arg-type]
        retry=retry_policy(settings),
        prompt_tokens=prompt_tokens(settings),
        max_events_per_update=settings.window.max_events_per_update,
        tokens_per_s=settings.model.tokens_per_s,
        telemetry=telemetry,
    )
    flow = UpdateFlow(
        index, buffer, scheduler, dead_letters,  # type: ignore[arg-type]
        max_message_bytes=settings.kafka.max_message_bytes,
        require_key=require_key,
        max_event_age_s=settings.window.max_event_age_s,
        max_clock_skew_s=settings.window.max_clock_skew_s,
        dedupe_horizon_s=settings.cassandra.dedupe_ttl_s,
        clock=clock,  # type: ignore[arg-type]
        pipeline=pipeline,
        telemetry=telemetry,
    )
    return flow


def build_model(settings: Settings) -> SummaryModel:
    """The configured summary model: the vLLM pool client, or the CPU baseline."""
    if settings.model.engine == "baseline":
        from .adapters.llm.baseline import BaselineSummaryModel

        return BaselineSummaryModel()
    from .adapters.llm.client import OpenAICompatSummaryModel

    return OpenAICompatSummaryModel.from_settings(settings.model)


def update_policy(settings: Settings) -> UpdatePolicy:
    return UpdatePolicy(
        rating_threshold=settings.window.rating_threshold,
        max_summary_chars=settings.model.max_summary_chars,
        output_attempts=settings.model.output_attempts,
        context_tokens=settings.model.context_tokens,
        output_tokens=settings.model.max_tokens,
    )


def build_token_counter(model: SummaryModel) -> TokenCounter | None:
    """Exact prompt token counts: the serving pool's ``/tokenize`` first, else the real Qwen3
    tokenizer when installed locally; None leaves the conservative estimate alone."""
    from .adapters.llm.qwen_tokenizer import load_qwen_counter

    local = load_qwen_counter()
    remote = getattr(model, "count_tokens", None)
    if remote is None and local is None:
        return None

    async def count(prompt: Prompt) -> int | None:
        if remote is not None:
            n = await remote(prompt.messages())
            if n is not None:
                return n
        return local(prompt.chat_text()) if local is not None else None

    return count


class IdempotentProducer(_FaustProducer):
    """faust's aiokafka producer with ``enable_idempotence``: a retried send never duplicates
    or reorders a record within a partition (each user's versions stay in order)."""

    def _settings_extra(self) -> Mapping[str, object]:
        return {**super()._settings_extra(), "enable_idempotence": True}


@dataclass
class StreamerApp:
    app: faust.App
    flow: UpdateFlow
    store: ProfileStore
    model: SummaryModel
    telemetry: Telemetry


def create_app(
    settings: Settings,
    *,
    store: ProfileStore | None = None,
    model: SummaryModel | None = None,
    telemetry: Telemetry | None = None,
) -> StreamerApp:
    """Build the faust worker app with its flow and dependencies."""
    telemetry = telemetry or setup_telemetry(settings)
    kafka = settings.kafka
    app = faust.App(
        kafka.consumer_group,
        broker=[f"kafka://{b.strip()}" for b in kafka.bootstrap_servers.split(",")],
        store="memory://",
        autodiscover=False,
        web_port=settings.web_port,
        web_host="0.0.0.0",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=kafka.group_instance_id,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_request_timeout=max(90.0, kafka.session_timeout_s + 5),
        stream_wait_empty=False,
        producer_acks=-1,
        broker_commit_every=2**31 - 1,  # commit on the interval only
        broker_commit_interval=kafka.commit_interval_s,
        logging_config=None,
    )
    app.transport.Consumer = BufferedPositionConsumer
    app.transport.Producer = IdempotentProducer
    store = store or build_store(settings)
    model = model or build_model(settings)
    buffer = build_buffer(settings, store)

    async def send(topic: str, key: bytes | None, value: bytes | None, headers: Sequence) -> None:
        await app.producer.send_and_wait(topic, key, value, None, None, list(headers))

    updater = ProfileUpdater(
        store,
        model,
        KafkaChangePublisher(send, kafka.output_topic, kafka.failures_topic),
        update_policy(settings),
        token_counter=build_token_counter(model),
        telemetry=telemetry,
    )
    flow = build_flow(
        settings, updater, buffer,
        DeadLetterPublisher(send, kafka.dead_letter_topic, consumer_group=kafka.consumer_group),
        pipeline=True,
        telemetry=telemetry,
    )
    topic = app.topic(
        kafka.input_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=kafka.partitions,
    )

    @app.agent(topic, name="update-profiles")
    async def update_profiles(stream: faust.StreamT) -> None:
        async for events in stream.take_events(kafka.intake_batch, within=kafka.intake_linger_s):
            try:
                await flow.intake([e.message for e in events])
            except Exception as exc:
                # faust would restart the agent past this batch (take_events acknowledges it
                # anyway): stop the worker instead; its offsets stop before the batch
                log.exception("intake failed; stopping the worker (input is re-read from the "
                              "last committed offset on restart)")
                await app.crash(exc)
                raise

    tick_s = max(0.05, min(0.5, settings.window.max_age_s / 10 or 0.05))
    app.timer(tick_s, name="start-due-windows")(flow.tick)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: object, revoked: set, **kwargs: object) -> None:
        parts = [tp.partition for tp in revoked if tp.topic == kafka.input_topic]
        await flow.on_revoked(parts)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        parts = [tp.partition for tp in assigned if tp.topic == kafka.input_topic]
        consumer = app.consumer
        if isinstance(consumer, BufferedPositionConsumer):
            consumer.positions = flow.positions
        await flow.on_assigned(parts)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: object, **kwargs: object) -> None:
        # runs after the consumer paused and before its final offset commit
        await flow.shutdown(settings.shutdown_timeout_s)
        telemetry.shutdown()  # flush spans of the last updates

    async def live(web: object, request: object) -> object:
        """Liveness: the process serves; independent of Kafka, Cassandra and the model."""
        return web.json({"status": "ok"})  # type: ignore[attr-defined]

    app.page("/livez")(live)
    app.page("/healthz")(live)  # alias of /livez

    @app.page("/readyz")
    async def readyz(web: object, request: object) -> object:
        ready, details = flow.readiness()
        status = 200 if ready else 503
        return web.json({"ready": ready, **details}, status=status)  # type: ignore[attr-defined]

    @app.page("/stats")
    async def stats(web: object, request: object) -> object:
        s = flow.stats
        return web.json(  # type: ignore[attr-defined]
            {
                "consumed": s.consumed,
                "buffered": s.buffered,
                "dead_lettered": s.dead_lettered,
                "outcomes": s.outcomes,
                "failures": s.failures,
                "parked": s.parked,
                "pending_users": len(flow.index),
                "pending_events": flow.index.pending_events(),
                "in_flight": flow.scheduler.busy,
                "updates_in_flight": flow.scheduler.updates,
                "owned_partitions": sorted(flow.owned or ()),
            }
        )

    @app.page("/metrics")
    async def metrics_page(web: object, request: object) -> object:
        """Prometheus text exposition of the OpenTelemetry instruments."""
        return web.bytes(  # type: ignore[attr-defined]
            telemetry.metrics_text(), content_type=PROMETHEUS_CONTENT_TYPE.split("; charset")[0]
        )

    telemetry.observe("streamer_consumer_lag", lambda: consumer_lag(app))

    return StreamerApp(app=app, flow=flow, store=store, model=model, telemetry=telemetry)


def consumer_lag(app: faust.App) -> list[tuple[float, dict[str, object]]]:
    """Per assigned partition: highwater (from the last fetch, no broker round trip) minus the
    committed offset (faust's own bookkeeping).  Partitions not fetched or committed yet are
    left out.  Cheap enough for every scrape."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return []
    committed = getattr(consumer, "_committed_offset", {})
    out = []
    for tp in consumer.assignment():
        try:
            high = consumer.highwater(tp)
        except Exception:
            continue
        done = committed.get(tp) if hasattr(committed, "get") else None
        if high is None or done is None:
            continue
        out.append((float(max(0, high - done)), {"topic": tp.topic, "partition": tp.partition}))
    return out
