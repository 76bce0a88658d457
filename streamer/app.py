"""Composition root: the one module that chooses adapters and wires them into services.

Every entry point is built here, from the one :class:`~streamer.settings.Settings` object:

=================  ==========================================================================
``build_worker``   the faust worker: intake, pending buffer, scheduler, updater, publishers
``build_api``      the read API (aiohttp) over the readable store, with a lazy Kafka sender
``build_replay``   the embedded replay (event time, in-memory buffer): ``streamer replay``
``build_backfill`` the same replay into the configured store: ``streamer backfill``
``build_eval``     the paper's offline evaluation (``streamer.evaluation``, loaded on demand)
=================  ==========================================================================

Each takes its dependencies as keyword arguments whose production default is built here when
omitted (tests pass fakes or real servers), and reads every knob from the settings sub-models,
so each default has exactly one source: the settings field.  No other module constructs an
adapter; the CLI (``streamer/entrypoints/cli.py``) only calls these builders and runs what they
return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from .adapters.kafka.catalog import CatalogFollower
from .adapters.kafka.consumer import BufferedPositionConsumer
from .adapters.kafka.monitor import QuietMonitor
from .adapters.kafka.producer import FaustSender, IdempotentProducer, KafkaSender
from .adapters.kafka.publish import DeadLetterPublisher, KafkaChangePublisher
from .adapters.security import faust_credentials
from .domain.baseline import BASELINE_MODEL_NAME
from .domain.catalog import Catalog
from .domain.mapping import Mapping, parse_mapping
from .domain.pending import PendingIndex, WindowRules
from .domain.prompt import Prompt
from .entrypoints.replay import EVENT_TIME_WINDOW_AGE_S, CountingDeadLetters, Replay, Tee
from .entrypoints.worker import mount_worker
from .errors import ConfigurationError, TopicMismatchError
from .ports import (
    ChangePublisher,
    DeadLetterSink,
    Judge,
    PendingBuffer,
    ReadableProfileStore,
    RecordSender,
    SummaryModel,
    TokenCounter,
)
from .services.flow import UpdateFlow
from .services.ownership import Ownership
from .services.policy import RetryPolicy
from .services.quality import QualityPolicy, QualityScorer
from .services.scheduler import BudgetedModel, Scheduler
from .services.updater import ProfileUpdater, UpdatePolicy
from .settings import ModelSettings, Settings, WindowSettings
from .telemetry import Telemetry, setup_telemetry

if TYPE_CHECKING:
    from aiohttp import web

    from .evaluation.benchmark import Evaluation

log = logging.getLogger(__name__)


# --- adapters ------------------------------------------------------------------------------


def build_store(settings: Settings) -> ReadableProfileStore:
    """The configured profile store (connects and migrates Cassandra)."""
    if settings.store == "sqlite":
        from .adapters.sqlite.store import SqliteProfileStore

        return SqliteProfileStore(settings.sqlite_path)
    from .adapters.cassandra.store import CassandraProfileStore

    return CassandraProfileStore.from_settings(settings.cassandra)


def build_buffer(settings: Settings, store: object) -> PendingBuffer:
    """The durable pending buffer: beside the summaries in Cassandra (sharing the store's
    session), in memory for the SQLite demo store."""
    if settings.store == "sqlite":
        from .adapters.memory.pending import MemoryPendingBuffer

        return MemoryPendingBuffer()
    from .adapters.cassandra.pending import CassandraPendingBuffer

    return CassandraPendingBuffer.from_store(store)


def build_model(settings: Settings, *, base_urls: Sequence[str] | None = None,
                model_id: str | None = None, health_checks: bool = True) -> SummaryModel:
    """The configured summary model: the OpenAI-compatible pool client, or the CPU baseline.

    ``base_urls``/``model_id`` override ``STREAMER_MODEL__BASE_URLS``/``__MODEL`` (the CLI's
    ``--model-url``); every other knob still comes from ``settings.model``."""
    m = settings.model
    if base_urls is None and m.engine == "baseline":
        return baseline_model()
    from .adapters.llm.client import OpenAICompatSummaryModel

    update: dict[str, Any] = {}
    if base_urls is not None:
        update["base_urls"] = list(base_urls)
    if model_id is not None:
        update["model"] = model_id
    client = OpenAICompatSummaryModel.from_settings(m.model_copy(update=update))
    if not health_checks:
        client.health_interval_s = None
    return client


async def check_model_pool(settings: Settings, *, probe_sampling: bool = True) -> list[Any]:
    """The self-check of every configured endpoint (``streamer doctor``, the worker's start):
    one :class:`~streamer.adapters.llm.engines.EndpointReport` each."""
    from .adapters.llm.client import OpenAICompatSummaryModel

    client = OpenAICompatSummaryModel.from_settings(settings.model)
    try:
        return await client.self_check(probe_sampling=probe_sampling)
    finally:
        await client.aclose()


def require_model_pool(reports: Sequence[Any]) -> None:
    """Stop (:class:`~streamer.errors.ConfigurationError`) when a reachable endpoint is
    misconfigured; endpoints not reachable yet only warn (the pool waits for them)."""
    problems = [p for r in reports for p in r.problems]
    if problems:
        raise ConfigurationError("model endpoint self-check failed (run `streamer doctor`):\n  "
                                 + "\n  ".join(problems))
    for r in reports:
        if r.reachable:
            log.info("model endpoint %s: %s, context %s, tokenize %s, load %s", r.base_url,
                     r.engine, r.context, r.tokenize, r.load)
        else:
            log.warning("model endpoint %s not reachable at startup (%s); updates wait for it",
                        r.base_url, r.error)


def build_vllm_engine(settings: Settings, *, tensor_parallel_size: int) -> SummaryModel:
    """In-process ``vllm.LLM`` (the ``gpu`` extra) with the reference sampling."""
    from .adapters.llm.vllm_engine import VllmEngineSummaryModel

    m = settings.model
    return VllmEngineSummaryModel(m.model, max_model_len=m.context_tokens,
                                  tensor_parallel_size=tensor_parallel_size,
                                  temperature=m.temperature, top_p=m.top_p, top_k=m.top_k,
                                  max_tokens=m.max_tokens)


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


def demo_store(path: str) -> ReadableProfileStore:
    """A fresh SQLite store for the embedded demo (the file is replaced)."""
    from pathlib import Path

    from .adapters.sqlite.store import SqliteProfileStore

    if path != ":memory:":
        Path(path).unlink(missing_ok=True)
    return SqliteProfileStore(path)


def baseline_model() -> SummaryModel:
    """The deterministic CPU baseline summarizer (term statistics; never AlignXplore+)."""
    from .adapters.llm.baseline import BaselineSummaryModel

    return BaselineSummaryModel()


def migrate_schema(settings: Settings) -> list[str]:
    """Create the keyspace and apply pending CQL migrations; returns the ones applied."""
    from .adapters.cassandra.store import connect, migrate

    cluster, session = connect(settings.cassandra)
    try:
        return migrate(session, settings.cassandra)
    finally:
        cluster.shutdown()


async def provision_topics(settings: Settings) -> list[str]:
    """Create missing topics; raises :class:`~streamer.errors.TopicMismatchError` when an
    existing one differs.  Returns a description of each topic."""
    from .adapters.kafka.admin import ensure_topics, topic_specs

    catalog = settings.catalog.topic if settings.catalog.enabled else None
    problems = await ensure_topics(settings.kafka, catalog_topic=catalog)
    if problems:
        raise TopicMismatchError(problems)
    return [f"{t.name}: partitions={t.partitions} {t.config}"
            for t in topic_specs(settings.kafka, catalog)]


def load_mapping(path: str) -> Mapping:
    """A mapping file (YAML) parsed and checked; ConfigurationError says what is wrong."""
    from pathlib import Path

    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the mapping file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the mapping file {path} is not valid YAML: {exc}") from exc
    return parse_mapping(doc, source=path)


def build_sender(settings: Settings) -> KafkaSender:
    """An idempotent Kafka producer, connected on first use."""
    return KafkaSender(settings.kafka)


def change_publisher(settings: Settings, sender: RecordSender) -> KafkaChangePublisher:
    return KafkaChangePublisher(sender.send, settings.kafka.output_topic,
                                settings.kafka.failures_topic, source=settings.kafka.event_source)


# --- services ------------------------------------------------------------------------------


def window_rules(window: WindowSettings) -> WindowRules:
    return WindowRules(max_events=window.max_events, max_age_s=window.max_age_s,
                       max_tokens=window.max_tokens, min_interval_s=window.min_interval_s)


def prompt_tokens(model: ModelSettings) -> int:
    """Token budget of one update's interactions: the context less the output allowance and
    room for the previous summary (its character cap / 2 tokens) and the template."""
    return max(256, model.context_tokens - model.max_tokens - model.max_summary_chars // 2 - 512)


def build_flow(
    settings: Settings,
    *,
    store: ReadableProfileStore,
    model: SummaryModel,
    publisher: ChangePublisher,
    buffer: PendingBuffer,
    dead_letters: DeadLetterSink,
    clock: Callable[[], float] = time.time,
    require_key: bool = True,
    pipeline: bool = False,
    telemetry: Telemetry | None = None,
    token_counter: TokenCounter | None = None,
    window: WindowSettings | None = None,
    retry: RetryPolicy | None = None,
    input_topic: str | None = None,
    catalog: Catalog | None = None,
    catalog_grace_s: float | None = None,
    catalog_ready: Callable[[], bool] = lambda: True,
) -> UpdateFlow:
    """Intake, index, scheduler and updater of one worker (also of replay, on event time).

    The model sits behind the scheduler's budget (``STREAMER_MODEL__MAX_CONCURRENCY`` calls in
    flight); ``window`` overrides ``settings.window`` (replay closes windows on event time).
    ``catalog`` fills in items named by id only, when windows close (``catalog_grace_s``
    overrides ``STREAMER_CATALOG__GRACE_S``; ``catalog_ready`` says it finished loading)."""
    window = window or settings.window
    budget = BudgetedModel(model, settings.model.max_concurrency)
    judge = build_judge(settings, model)
    scorer = (QualityScorer(judge, QualityPolicy.from_settings(settings.quality),
                            spare_slot=budget.spare_slot, telemetry=telemetry)
              if judge is not None else None)
    updater = ProfileUpdater(store, budget, publisher,
                             UpdatePolicy.from_settings(window, settings.model),
                             token_counter=token_counter, telemetry=telemetry, scorer=scorer,
                             keep_triples=settings.quality.keep_triples,
                             input_topic=settings.kafka.input_topic if input_topic is None
                             else input_topic,
                             check_forgotten=settings.forget.suppress_s > 0,
                             catalog=catalog.get if catalog is not None else None)
    index = PendingIndex(window_rules(window))
    scheduler = Scheduler(
        index, buffer, updater, publisher,
        budget=budget,
        prompt_tokens=prompt_tokens(settings.model),
        clock=clock,
        retry=retry or RetryPolicy.from_settings(window),
        max_events_per_update=window.max_events_per_update,
        tokens_per_s=settings.model.tokens_per_s,
        ownership=Ownership(),
        dead_letters=dead_letters,
        telemetry=telemetry,
        catalog=catalog.get if catalog is not None else None,
        catalog_grace_s=settings.catalog.grace_s if catalog_grace_s is None else catalog_grace_s,
        catalog_ready=catalog_ready,
    )
    return UpdateFlow(
        index, buffer, scheduler, dead_letters,
        max_message_bytes=settings.kafka.max_message_bytes,
        require_key=require_key,
        max_event_age_s=window.max_event_age_s,
        max_clock_skew_s=window.max_clock_skew_s,
        dedupe_horizon_s=settings.cassandra.dedupe_ttl_s,
        clock=clock,
        pipeline=pipeline,
        max_queued_rows=4 * settings.kafka.intake_batch,
        telemetry=telemetry,
        mapping=load_mapping(settings.mapping.file) if settings.mapping.file else None,
    )


# --- the worker ----------------------------------------------------------------------------


@dataclass
class Worker:
    app: faust.App
    flow: UpdateFlow
    store: ReadableProfileStore
    model: SummaryModel
    telemetry: Telemetry
    catalog: CatalogFollower | None = None


def faust_app(settings: Settings) -> faust.App:
    """The faust app: our consumer (commits intake's positions on an interval, read_committed)
    and idempotent producer; static membership and group timeouts from the settings."""
    kafka = settings.kafka
    app = faust.App(
        kafka.consumer_group,
        broker=[f"kafka://{b.strip()}" for b in kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(kafka),
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
        monitor=QuietMonitor(),
    )
    app.transport.Consumer = BufferedPositionConsumer
    app.transport.Producer = IdempotentProducer
    return app


def build_worker(
    settings: Settings,
    *,
    store: ReadableProfileStore | None = None,
    model: SummaryModel | None = None,
    buffer: PendingBuffer | None = None,
    telemetry: Telemetry | None = None,
) -> Worker:
    """The faust worker with its flow and dependencies (``streamer worker``)."""
    telemetry = telemetry or setup_telemetry(settings)
    app = faust_app(settings)
    store = store or build_store(settings)
    model = model or build_model(settings)
    buffer = buffer or build_buffer(settings, store)
    sender = FaustSender(app)
    kafka = settings.kafka
    follower = build_catalog_follower(settings) if settings.catalog.enabled else None
    flow = build_flow(
        settings, store=store, model=model, publisher=change_publisher(settings, sender),
        buffer=buffer,
        dead_letters=DeadLetterPublisher(sender.send, kafka.dead_letter_topic,
                                         consumer_group=kafka.consumer_group),
        pipeline=True, telemetry=telemetry, token_counter=build_token_counter(model),
        catalog=follower.catalog if follower else None,
        catalog_ready=(lambda: follower.caught_up) if follower else (lambda: True),
    )
    mount_worker(app, flow, settings, telemetry, catalog=follower)
    return Worker(app=app, flow=flow, store=store, model=model, telemetry=telemetry,
                  catalog=follower)


def build_catalog_follower(settings: Settings) -> CatalogFollower:
    """This worker's in-memory view of the catalog topic (``STREAMER_CATALOG__TOPIC``)."""
    return CatalogFollower(settings.kafka, settings.catalog.topic)


# --- the read API --------------------------------------------------------------------------


@dataclass
class Api:
    app: web.Application
    store: ReadableProfileStore
    sender: RecordSender
    telemetry: Telemetry

    async def aclose(self) -> None:
        await self.sender.aclose()
        await self.store.aclose()
        self.telemetry.shutdown()


def build_api(
    settings: Settings,
    *,
    store: ReadableProfileStore | None = None,
    sender: RecordSender | None = None,
    telemetry: Telemetry | None = None,
) -> Api:
    """The read API (``streamer api``).  Kafka is connected on the first rollback, before
    anything is written, so reads need no broker."""
    from .entrypoints.api import create_api, store_probe

    token = settings.api.token.get_secret_value() if settings.api.token else None
    if not token:
        log.warning("STREAMER_API__TOKEN is not set: the rollback route is disabled (403)")
    store = store or build_store(settings)
    sender = sender or build_sender(settings)
    telemetry = telemetry or setup_telemetry(settings)
    start = getattr(sender, "start", None)
    api = settings.api
    read_tokens = [t.strip() for t in api.read_tokens.get_secret_value().split(",")
                   if t.strip()] if api.read_tokens else []
    if api.anonymous_reads:
        log.warning("STREAMER_API__ANONYMOUS_READS is on: anyone who reaches the API reads "
                    "every user's summary (a local demo only)")
    elif not read_tokens and not token:
        log.warning("no STREAMER_API__READ_TOKENS nor STREAMER_API__TOKEN: reads answer 403")
    app = create_api(store, change_publisher(settings, sender), token=token,
                     read_tokens=read_tokens, anonymous_reads=api.anonymous_reads,
                     as_of_max_versions=api.as_of_max_versions,
                     buffer=build_buffer(settings, store),
                     forget_suppress_s=settings.forget.suppress_s,
                     ready=store_probe(store), before_write=start, telemetry=telemetry)
    return Api(app=app, store=store, sender=sender, telemetry=telemetry)


# --- replay and backfill -------------------------------------------------------------------


def build_replay(
    settings: Settings,
    *,
    store: ReadableProfileStore,
    model: SummaryModel,
    publisher: ChangePublisher | None = None,
    token_counter: TokenCounter | None = None,
    window_events: int | None = None,
    window_age_s: float = EVENT_TIME_WINDOW_AGE_S,
) -> Replay:
    """Records through the worker's own intake and scheduler, on EVENT time (reproducible),
    with an in-memory pending buffer; failed windows are retried at once, parked after 3.
    Catalog records in the file (``type: catalog.item``) fill in items named by id only; a
    window closes with what the file gave before it (no grace period on event time)."""
    from .adapters.memory.pending import MemoryPendingBuffer

    events = window_events or settings.window.max_events
    window = settings.window.model_copy(update={
        "max_events": events, "max_age_s": window_age_s, "max_tokens": None,
        "min_interval_s": 0.0, "max_events_per_update": max(events, 1),
        # a file is applied on its own event time: a dataset years old is not "too old"
        "max_event_age_s": 1e12})
    clock = Replay.Clock()
    dead_letters = CountingDeadLetters()
    tee = Tee(publisher)
    catalog = Catalog()  # the file's own catalog records; items resolve when windows close
    flow = build_flow(
        settings, store=store, model=model, publisher=tee, buffer=MemoryPendingBuffer(),
        dead_letters=dead_letters, clock=clock, require_key=False, token_counter=token_counter,
        window=window, retry=RetryPolicy(base_s=0.0, max_s=0.0, park_after=3),
        input_topic="",  # file lines, not Kafka offsets: versions carry no input ranges
        catalog=catalog, catalog_grace_s=0.0,
    )
    return Replay(flow, clock, tee, dead_letters, catalog)


@dataclass
class Backfill:
    replay: Replay
    store: ReadableProfileStore
    model: SummaryModel
    sender: RecordSender | None = None

    async def aclose(self) -> None:
        await self.model.aclose()
        await self.store.aclose()
        if self.sender is not None:
            await self.sender.aclose()


def build_backfill(
    settings: Settings,
    *,
    engine: str = "pool",
    tensor_parallel_size: int = 1,
    publish: bool = False,
    window_age_s: float = EVENT_TIME_WINDOW_AGE_S,
    store: ReadableProfileStore | None = None,
    model: SummaryModel | None = None,
    sender: RecordSender | None = None,
) -> Backfill:
    """History files into the configured store, as the stream would (``streamer backfill``);
    ``publish`` also sends the change events to ``STREAMER_KAFKA__OUTPUT_TOPIC``."""
    if model is None:
        model = (build_vllm_engine(settings, tensor_parallel_size=tensor_parallel_size)
                 if engine == "vllm" else build_model(settings))
    store = store or build_store(settings)
    if publish:
        sender = sender or build_sender(settings)
    replay = build_replay(settings, store=store, model=model,
                          publisher=change_publisher(settings, sender) if sender else None,
                          token_counter=build_token_counter(model), window_age_s=window_age_s)
    return Backfill(replay=replay, store=store, model=model, sender=sender)


# --- evaluation ----------------------------------------------------------------------------


def build_eval(
    settings: Settings,
    *,
    summarizer_url: str | None,
    summarizer_model: str,
    judge_url: str,
    judge_model: str,
    baseline: bool,
) -> Evaluation:
    """The offline evaluation (``streamer eval``): each summarizer's streaming summaries through
    the update service on an in-memory store, then the pairwise judge."""
    from .evaluation.benchmark import Evaluation

    engines: list[SummaryModel] = []
    if summarizer_url:
        engines.append(build_model(settings, base_urls=[summarizer_url],
                                   model_id=summarizer_model, health_checks=False))
    if baseline or not summarizer_url:
        engines.append(baseline_model())
    return Evaluation([eval_updater(settings, e) for e in engines],
                      judge=pool_judge(settings, base_urls=[judge_url], model_id=judge_model))


def pool_judge(settings: Settings, *, base_urls: Sequence[str],
               model_id: str) -> Judge:
    """The paper's judge over its own OpenAI-compatible pool client."""
    from .adapters.llm.client import OpenAICompatSummaryModel
    from .adapters.llm.judge import PoolJudge

    client = OpenAICompatSummaryModel.from_settings(settings.model.model_copy(update={
        "base_urls": list(base_urls), "model": model_id, "extra_body": {}}))
    client.health_interval_s = None
    return PoolJudge(client, extra_body=settings.quality.judge_extra_body)


def build_judge(settings: Settings, model: SummaryModel) -> Judge | None:
    """The judge of the live quality score: None when scoring is off
    (``STREAMER_QUALITY__SAMPLE_RATE=0``); the labelled CPU baseline judge when asked for
    (``JUDGE_MODEL=baseline``) or when the summarizer is the baseline with no judge configured
    (the demo); else the paper's judge on ``JUDGE_URLS`` or, by default, the model pool."""
    q = settings.quality
    if q.sample_rate <= 0:
        return None
    from .adapters.llm.judge import BaselineJudge, PoolJudge

    if q.judge_model == "baseline":
        return BaselineJudge()
    if not q.judge_urls and not hasattr(model, "chat"):
        # no pool to judge with: the demo's baseline summarizer gets the baseline judge; an
        # in-process engine (backfill --engine vllm) is unscored unless JUDGE_URLS is set
        return BaselineJudge() if model.name == BASELINE_MODEL_NAME else None
    name = q.judge_model or settings.model.model
    if q.judge_urls or name != getattr(model, "model", name):
        servers = q.judge_urls or getattr(model, "configured_urls", settings.model.base_urls)
        return pool_judge(settings, base_urls=servers, model_id=name)
    # the same pool client: same routing, health and breakers
    return PoolJudge(model, extra_body=q.judge_extra_body)


def eval_updater(settings: Settings, model: SummaryModel) -> ProfileUpdater:
    """An update service on an in-memory store, for one evaluated summarizer."""
    from .adapters.memory.publish import CollectingPublisher
    from .adapters.memory.store import InMemoryProfileStore

    return ProfileUpdater(InMemoryProfileStore(), model, CollectingPublisher(),
                          UpdatePolicy.from_settings(settings.window, settings.model))
