"""Composition root: the only module that wires settings, adapters and flows together."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import faust

from .adapters.kafka.consumer import ContiguousAckConsumer
from .adapters.kafka.publish import DeadLetterPublisher, KafkaChangePublisher
from .domain.prompt import Prompt
from .flows.update_profiles import UpdateFlow
from .ports import ProfileStore, SummaryModel
from .service import ProfileUpdater, PromptCounter, UpdatePolicy
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


def build_token_counter(model: SummaryModel) -> PromptCounter | None:
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
        stream_wait_empty=False,
        producer_acks=-1,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        logging_config=None,
    )
    # commit only contiguous acknowledged offsets (see adapters/kafka/consumer.py)
    app.transport.Consumer = ContiguousAckConsumer
    store = store or build_store(settings)
    model = model or build_model(settings)

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
    flow = UpdateFlow(
        updater,
        DeadLetterPublisher(send, kafka.dead_letter_topic, consumer_group=kafka.consumer_group),
        max_events=settings.window.max_events,
        max_age_s=settings.window.max_age_s,
        max_concurrency=settings.model.max_concurrency,
        max_message_bytes=kafka.max_message_bytes,
        max_pending_events=settings.window.max_pending_events,
        retry_backoff_s=settings.window.retry_backoff_s,
        max_event_age_s=settings.window.max_event_age_s,
        max_clock_skew_s=settings.window.max_clock_skew_s,
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
        async for event in stream.noack().events():
            await flow.handle(event)

    tick_s = max(0.1, min(1.0, settings.window.max_age_s / 4 or 0.1))
    app.timer(tick_s, name="close-aged-windows")(flow.tick)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: object, revoked: set, **kwargs: object) -> None:
        flow.on_revoked(set(revoked))

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
                "dead_lettered": s.dead_lettered,
                "duplicates": s.duplicates,
                "outcomes": s.outcomes,
                "failures": s.failures,
                "pending_users": len(flow.book),
                "pending_events": flow.book.pending_events(),
                "in_flight": flow.book.in_flight,
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
