"""Observability: OpenTelemetry metrics (Prometheus text on ``GET /metrics``) and traces.

``setup_telemetry(settings)`` builds the providers once per process (the composition root calls
it); everything else receives a :class:`Telemetry` and only calls its ``record_*`` methods, so
unit tests pass nothing and get :meth:`Telemetry.noop`.

Trace context travels in Kafka headers (W3C ``traceparent``): a window merges many input
events, so its ``update_window`` span *links* to each input's context instead of having a
parent, and the change event carries the window span's ``traceparent``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVICE_NAME = "prefstream"
MAX_LINKS = 128  # links per window span (a window holds at most a few hundred events)

_PROPAGATOR = TraceContextTextMapPropagator()
_window_span: ContextVar[Span | None] = ContextVar("prefstream_window_span", default=None)

# Histogram buckets (the SDK defaults are tuned for milliseconds).
_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FRESHNESS_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 86400)
_EVENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True, slots=True)
class WindowTrace:
    """What the transport knows about a window's input records: their trace contexts (to link
    to) and their Kafka timestamps (epoch seconds, by event id; for freshness)."""

    links: tuple[SpanContext, ...] = ()
    event_times: Mapping[str, float] = field(default_factory=dict)
    offsets: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """(partition, offset) of each input record, by event id (the version's window facts)."""


def _header_value(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        key = k.decode() if isinstance(k, bytes) else k
        if key.lower() == name:
            if v is None:
                return None
            return v.decode("latin-1") if isinstance(v, bytes) else str(v)
    return None


def extract_span_context(headers: Any) -> SpanContext | None:
    """The remote span context of a record's ``traceparent`` header (None when absent/invalid)."""
    value = _header_value(headers, "traceparent")
    if not value:
        return None
    carrier = {"traceparent": value}
    state = _header_value(headers, "tracestate")
    if state:
        carrier["tracestate"] = state
    ctx = _PROPAGATOR.extract(carrier)
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None


def outgoing_trace_headers() -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``tracestate``) of the window being updated, else of the current span;
    empty when no span is recording-valid."""
    span = _window_span.get() or trace.get_current_span()
    if not span.get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return [(k, v.encode()) for k, v in carrier.items()]


class Telemetry:
    """Instruments and tracer of one process.  Build with :func:`setup_telemetry` (real) or
    :meth:`noop` (tests, tools)."""

    def __init__(
        self,
        *,
        meter_provider: Any | None = None,
        tracer_provider: Any | None = None,
        registry: Any | None = None,
    ) -> None:
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.registry = registry  # prometheus_client registry holding our collector
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("prefstream")
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer("prefstream")
        self._gauges: dict[str, list[Callable[[], Iterable[tuple[float, Mapping[str, Any]]]]]] = {}

        self.updates = meter.create_counter(
            "streamer_updates_total", description="Window updates by outcome (error: retried later).")
        self.window_events = meter.create_histogram(
            "streamer_window_events", description="Events per updated window.",
            explicit_bucket_boundaries_advisory=_EVENT_BUCKETS)
        self.model_duration = meter.create_histogram(
            "streamer_model_request_duration_seconds",
            description="Duration of one summary-model call (retries across endpoints included).",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self.model_tokens = meter.create_counter(
            "streamer_model_tokens_total", description="Model tokens by kind (prompt, completion).")
        self.dead_letters = meter.create_counter(
            "streamer_dead_letters_total", description="Input records dead-lettered, by reason.")
        self.freshness = meter.create_histogram(
            "streamer_freshness_seconds",
            description="From an input record's Kafka timestamp (else occurred_at) to the broker's "
                        "acknowledgement of the change event that includes it.",
            explicit_bucket_boundaries_advisory=_FRESHNESS_BUCKETS)
        self.store_regressions = meter.create_counter(
            "streamer_store_regressions_total",
            description="Updates refused because the store's latest version was below one this "
                        "worker had already published (acknowledged writes were lost).")
        self.parked = meter.create_counter(
            "streamer_parked_windows_total",
            description="Windows parked after bounded attempts, by error type.")
        self.buffered = meter.create_counter(
            "streamer_buffered_events_total",
            description="Valid input events written to the durable pending buffer.")
        self.quality_windows = meter.create_counter(
            "streamer_quality_windows_total",
            description="Windows whose previous summary was judged, by outcome (scored, "
                        "skipped_busy, failed, late).")
        self.judge_calls = meter.create_counter(
            "streamer_judge_calls_total", description="Judge calls of the quality score.")
        self.judge_tokens = meter.create_counter(
            "streamer_judge_tokens_total",
            description="Judge tokens by kind (prompt, completion), apart from update tokens.")
        self.quality_accuracy = meter.create_histogram(
            "streamer_quality_accuracy",
            description="Per scored window: the judge's accuracy on the window's choices given "
                        "the previous summary, by summary age.",
            explicit_bucket_boundaries_advisory=_UNIT_BUCKETS)
        self.quality_p_correct = meter.create_histogram(
            "streamer_quality_p_correct",
            description="Per scored window: mean probability of the user's choice, by summary "
                        "age.", explicit_bucket_boundaries_advisory=_UNIT_BUCKETS)
        self.quality_no_summary = meter.create_histogram(
            "streamer_quality_accuracy_no_summary",
            description="The same windows' accuracy with an empty summary (on a sample).",
            explicit_bucket_boundaries_advisory=_UNIT_BUCKETS)
        self.unresolved_items = meter.create_counter(
            "streamer_catalog_unresolved_items_total",
            description="Items named by id only that the catalog did not know within the grace "
                        "period; their events were applied without them.")
        # Label-less counters start at an exported 0, so that the first increment is an
        # increase that rate()/increase() see (alerts on the first store regression).
        self.store_regressions.add(0)
        self.buffered.add(0)
        self.unresolved_items.add(0)
        for name, description in (
            ("streamer_pool_in_flight", "Window updates (model calls) in flight."),
            ("streamer_pool_saturated", "1 while every update slot is busy (windows grow)."),
            ("streamer_pending_events", "Events in durable pending windows (not yet applied)."),
            ("streamer_pending_users", "Users with durable pending windows on this worker."),
            ("streamer_oldest_pending_age_seconds",
             "Age of the longest-waiting pending window on this worker."),
            ("streamer_parked_users", "Users with a window parked by this worker since start."),
            ("streamer_consumer_lag", "Per assigned partition: highwater minus committed offset."),
            ("streamer_ready", "1 while this worker's /readyz answers ready, else 0."),
            ("streamer_catalog_items", "Items in this worker's view of the catalog topic."),
        ):
            self._gauges[name] = []
            meter.create_observable_gauge(name, callbacks=[self._observer(name)],
                                          description=description)

    @classmethod
    def noop(cls) -> Telemetry:
        return cls()

    # -- observable gauges ------------------------------------------------------------------
    def _observer(self, name: str) -> Callable[[Any], Iterator[metrics.Observation]]:
        def observe(options: Any) -> Iterator[metrics.Observation]:
            for source in list(self._gauges.get(name, ())):
                try:
                    for value, attributes in source():
                        yield metrics.Observation(value, dict(attributes))
                except Exception:  # a gauge must never break a scrape
                    log.debug("gauge %s source failed", name, exc_info=True)

        return observe

    def observe(self, name: str, source: Callable[[], Iterable[tuple[float, Mapping[str, Any]]]]) -> None:
        """Register a source of ``(value, attributes)`` pairs for an observable gauge."""
        self._gauges[name].append(source)

    def observe_value(self, name: str, value: Callable[[], float]) -> None:
        self.observe(name, lambda: [(float(value()), {})])

    # -- recording (the only places metrics are written) ------------------------------------
    def record_update(self, outcome: str, events: int) -> None:
        self.updates.add(1, {"outcome": outcome})
        if outcome != "error":
            self.window_events.record(events)

    def record_model_call(self, duration_s: float, *, prompt_tokens: int, completion_tokens: int,
                          ok: bool = True) -> None:
        self.model_duration.record(duration_s, {"outcome": "ok" if ok else "error"})
        if prompt_tokens:
            self.model_tokens.add(prompt_tokens, {"kind": "prompt"})
        if completion_tokens:
            self.model_tokens.add(completion_tokens, {"kind": "completion"})

    def record_store_regression(self) -> None:
        self.store_regressions.add(1)

    def record_parked(self, error_type: str) -> None:
        self.parked.add(1, {"error_type": error_type})

    def record_buffered(self, n: int) -> None:
        self.buffered.add(n)

    def record_unresolved_items(self, n: int) -> None:
        self.unresolved_items.add(n)

    def record_dead_letter(self, reason: str) -> None:
        self.dead_letters.add(1, {"reason": reason})

    def record_quality_outcome(self, outcome: str) -> None:
        self.quality_windows.add(1, {"outcome": outcome})

    def record_quality(self, *, accuracy: float, p_correct: float, no_summary: float | None,
                       age: str, judge: str, calls: int, prompt_tokens: int,
                       completion_tokens: int) -> None:
        self.quality_windows.add(1, {"outcome": "scored"})
        self.quality_accuracy.record(accuracy, {"summary_age": age})
        self.quality_p_correct.record(p_correct, {"summary_age": age})
        if no_summary is not None:
            self.quality_no_summary.record(no_summary)
        self.judge_calls.add(calls, {"judge": judge})
        if prompt_tokens:
            self.judge_tokens.add(prompt_tokens, {"kind": "prompt"})
        if completion_tokens:
            self.judge_tokens.add(completion_tokens, {"kind": "completion"})

    def record_freshness(self, seconds: float) -> None:
        self.freshness.record(max(0.0, seconds))

    # -- tracing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def window_span(self, user_id: str, events: int, links: Sequence[SpanContext] = ()) -> Iterator[Span]:
        """The ``update_window`` span (a new trace, linked to the inputs' contexts); while open,
        :func:`outgoing_trace_headers` returns its ``traceparent``."""
        unique = {(sc.trace_id, sc.span_id): sc for sc in links}  # (SpanContext isn't hashable)
        span_links = [Link(sc) for sc in list(unique.values())[:MAX_LINKS]]
        with self.tracer.start_as_current_span(
            "update_window", context=Context(), links=span_links,
            kind=trace.SpanKind.CONSUMER,
            attributes={"prefstream.user_id": user_id, "prefstream.window.events": events,
                        "prefstream.window.links": len(span_links)},
        ) as span:
            token = _window_span.set(span)
            try:
                yield span
            finally:
                _window_span.reset(token)

    def span(self, name: str, **kwargs: Any) -> contextlib.AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(name, **kwargs)

    # -- exposition -------------------------------------------------------------------------
    def metrics_text(self) -> bytes:
        """Prometheus text exposition of every instrument (empty for the no-op telemetry)."""
        if self.registry is None:
            return b""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def shutdown(self) -> None:
        for provider in (self.meter_provider, self.tracer_provider):
            if provider is not None:
                with contextlib.suppress(Exception):
                    provider.shutdown()
        self.meter_provider = self.tracer_provider = None


def setup_telemetry(
    settings: Any | None = None,
    *,
    span_exporter: Any | None = None,
    service_name: str = SERVICE_NAME,
) -> Telemetry:
    """Metrics with a Prometheus reader (private registry, served on ``/metrics``) and a tracer.

    Spans are exported over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and
    ``opentelemetry-exporter-otlp-proto-http`` (or ``-grpc``) is installed; otherwise they are
    still created, so trace and span ids appear in logs and in Kafka headers.
    ``span_exporter`` (tests: an in-memory exporter) is added with a simple processor.
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from prometheus_client import CollectorRegistry

    resource = Resource.create({"service.name": service_name})
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False,
                                    registry=registry)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    otlp = _otlp_exporter()
    if otlp is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(otlp))
    return Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider, registry=registry)


def _otlp_exporter() -> Any | None:
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but no OTLP exporter is installed "
                        "(pip install opentelemetry-exporter-otlp-proto-http); spans not exported")
            return None
    return OTLPSpanExporter()


def now_epoch() -> float:
    return time.time()
