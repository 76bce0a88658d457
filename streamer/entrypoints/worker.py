"""The worker's faust surface: the intake agent, the due-window timer, rebalance hooks and the
HTTP pages (``/livez``, ``/readyz``, ``/stats``, ``/metrics``).

:func:`mount_worker` attaches them to a faust app that the composition root
(``streamer/app.py``, ``build_worker``) built with its flow; nothing here constructs adapters.
"""

from __future__ import annotations

import logging

import faust

from ..ports import CatalogView
from ..services.flow import UpdateFlow
from ..settings import Settings
from ..telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry

log = logging.getLogger(__name__)


def mount_worker(app: faust.App, flow: UpdateFlow, settings: Settings,
                 telemetry: Telemetry, *, catalog: CatalogView | None = None) -> None:
    kafka = settings.kafka
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

    if catalog is not None:
        @app.task
        async def follow_catalog() -> None:
            try:
                await catalog.run()
            except Exception as exc:
                log.exception("the catalog view failed; stopping the worker")
                await app.crash(exc)
                raise

        telemetry.observe_value("streamer_catalog_items", lambda: catalog.items)

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
        if hasattr(consumer, "positions"):  # BufferedPositionConsumer commits intake's positions
            consumer.positions = flow.positions
        await flow.on_assigned(parts)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: object, **kwargs: object) -> None:
        # runs after the consumer paused and before its final offset commit
        await flow.shutdown(settings.shutdown_timeout_s)
        if catalog is not None:
            await catalog.stop()
        telemetry.shutdown()  # flush spans of the last updates

    async def live(web: object, request: object) -> object:
        """Liveness: the process serves; independent of Kafka, Cassandra and the model."""
        return web.json({"status": "ok"})  # type: ignore[attr-defined]

    app.page("/livez")(live)
    app.page("/healthz")(live)  # alias of /livez

    @app.page("/readyz")
    async def readyz(web: object, request: object) -> object:
        ready, details = flow.readiness()
        if catalog is not None:  # not ready before the whole catalog is loaded
            details["catalog"] = catalog.status()
            ready = ready and catalog.caught_up
        status = 200 if ready else 503
        return web.json({"ready": ready, **details}, status=status)  # type: ignore[attr-defined]

    @app.page("/stats")
    async def stats(web: object, request: object) -> object:
        return web.json(flow_stats(flow))  # type: ignore[attr-defined]

    @app.page("/metrics")
    async def metrics_page(web: object, request: object) -> object:
        """Prometheus text exposition of the OpenTelemetry instruments."""
        return web.bytes(  # type: ignore[attr-defined]
            telemetry.metrics_text(), content_type=PROMETHEUS_CONTENT_TYPE.split("; charset")[0]
        )

    telemetry.observe("streamer_consumer_lag", lambda: consumer_lag(app))


def flow_stats(flow: UpdateFlow) -> dict[str, object]:
    """The ``/stats`` document: intake and update counters, pending and in-flight work."""
    s, u = flow.stats, flow.scheduler.stats
    return {
        "consumed": s.consumed,
        "buffered": s.buffered,
        "dead_lettered": s.dead_lettered + u.dead_lettered,
        "outcomes": dict(u.outcomes),
        "failures": u.failures,
        "parked": u.parked,
        "pending_users": len(flow.index),
        "pending_events": flow.index.pending_events(),
        "in_flight": flow.scheduler.busy,
        "updates_in_flight": flow.scheduler.updates,
        "owned_partitions": flow.ownership.sorted(),
        "model_endpoints": [
            {"base_url": e.base_url, "engine": e.engine, "healthy": e.healthy,
             "breaker": e.breaker, "outstanding": e.outstanding, "server_queue": e.server_queue,
             "problem": e.problem, "requests": e.requests, "failures": e.failures}
            for e in getattr(flow.scheduler.model, "endpoints", None) or []
        ],
    }


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
