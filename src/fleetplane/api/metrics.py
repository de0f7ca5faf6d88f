"""`/metrics` in the Prometheus text format: requests per route, the heartbeat buffer, fleet
gauges, the sweeper and webhook deliveries.

Request counts, latencies and the buffer are this process's own (scrape every process);
the fleet, sweep and delivery-log gauges are read from the database and so are the same in
every process. Fleet gauges count what the fleet API counts: archived runtimes apart.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetplane.api.context import AppContext
from fleetplane.api.deps import Context, Token
from fleetplane.api.pauses import CollectorPauses, LoopLag
from fleetplane.domain.errors import Unauthenticated
from fleetplane.domain.fleet import Drift, Health
from fleetplane.services import lifecycle
from fleetplane.services import webhooks as webhook_service
from fleetplane.services.sweeper import last_sweep

if TYPE_CHECKING:
    from fleetplane.api.alerts import Alerting

log = logging.getLogger("fleetplane.metrics")
router = APIRouter(tags=["probes"])
UNMATCHED = "unmatched"


class FleetCollector(Collector):
    """Reads, at each scrape, what the server knows: buffer, fleet, sweeps, deliveries."""

    def __init__(self, context: AppContext, alerting: Alerting) -> None:
        self.context = context
        self.alerting = alerting

    def collect(self) -> Iterable[Metric]:
        """Every family; the database-backed ones are left out when the database is down."""
        liveness = self.context.hot.liveness
        yield GaugeMetricFamily(
            "fleetplane_heartbeat_buffer_depth",
            "Runtimes whose heartbeat waits in this process's liveness buffer",
            value=liveness.depth,
        )
        yield CounterMetricFamily(
            "fleetplane_liveness_flushes",
            "Batched heartbeat writes made by this process",
            value=liveness.flushes,
        )
        yield CounterMetricFamily(
            "fleetplane_liveness_rows_written",
            "Runtime rows updated by this process's heartbeat flushes",
            value=liveness.rows_written,
        )
        flush_seconds = getattr(liveness, "flush_seconds", None)
        if isinstance(flush_seconds, int | float):
            yield CounterMetricFamily(
                "fleetplane_liveness_flush_seconds",
                "Time this process spent writing heartbeat flushes",
                value=flush_seconds,
            )
        hot = self.context.hot
        yield CounterMetricFamily(
            "fleetplane_cache_invalidations",
            "Times this process dropped its credential and runtime caches after a change",
            value=hot.generation,
        )
        yield CounterMetricFamily(
            "fleetplane_heartbeat_cache_misses",
            "Heartbeats whose runtime this process read from the database on the request path",
            value=hot.identity_loads,
        )
        full_route = CounterMetricFamily(
            "fleetplane_heartbeat_full_route",
            "Heartbeats this process's hot path handed to the full route, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(hot.full_route.items()):
            full_route.add_metric([reason], count)
        yield full_route
        yield CounterMetricFamily(
            "fleetplane_heartbeat_cache_miss_reads",
            "Database reads that answered those misses (many misses per read under load)",
            value=hot.identity_reads,
        )
        yield CounterMetricFamily(
            "fleetplane_cache_runtimes_forgotten",
            "Runtimes dropped from this process's caches after a change to them alone",
            value=hot.forgotten,
        )
        yield CounterMetricFamily(
            "fleetplane_cache_refreshed",
            "Cache entries re-read ahead of expiry, in batches, by this process",
            value=hot.refreshed,
        )
        yield CounterMetricFamily(
            "fleetplane_cache_warmed_runtimes",
            "Runtimes this process read into its caches at start, before their first heartbeat",
            value=hot.warmed,
        )
        yield CounterMetricFamily(
            "fleetplane_sweeps", "Fleet sweeps run by this process", value=self.alerting.sweeps
        )
        yield CounterMetricFamily(
            "fleetplane_status_transitions",
            "Runtime status transitions recorded by this process's sweeps",
            value=self.alerting.transitions,
        )
        attempts = CounterMetricFamily(
            "fleetplane_webhook_attempts",
            "Webhook delivery attempts made by this process, by outcome",
            labels=["outcome"],
        )
        for outcome in ("delivered", "retrying", "gave_up"):
            attempts.add_metric([outcome], self.alerting.attempts[outcome])
        yield attempts
        try:
            families = list(self._from_database())
        except SQLAlchemyError:
            log.warning("metrics: database unavailable", exc_info=True)
            yield GaugeMetricFamily(
                "fleetplane_metrics_database_up", "Whether the database answered", value=0
            )
            return
        yield GaugeMetricFamily(
            "fleetplane_metrics_database_up", "Whether the database answered", value=1
        )
        yield from families

    def _from_database(self) -> Iterable[Metric]:
        context = self.context
        now = context.clock()
        with context.database.read() as session:
            counts = lifecycle.fleet_counts(session, rules=context.fleet_rules, now=now)
            deliveries = webhook_service.delivery_counts(session)
        health = GaugeMetricFamily(
            "fleetplane_runtimes", "Runtimes in the inventory by health", labels=["health"]
        )
        drift = GaugeMetricFamily(
            "fleetplane_runtimes_drift", "Runtimes in the inventory by drift", labels=["drift"]
        )
        totals_health = dict.fromkeys(Health, 0)
        totals_drift = dict.fromkeys(Drift, 0)
        archived_total = 0
        for item in counts:
            for health_state, count in item.health.items():
                totals_health[health_state] += count
            for drift_state, count in item.drift.items():
                totals_drift[drift_state] += count
            archived_total += item.archived
        for health_state, count in totals_health.items():
            health.add_metric([health_state.value], count)
        for drift_state, count in totals_drift.items():
            drift.add_metric([drift_state.value], count)
        yield health
        yield drift
        yield GaugeMetricFamily(
            "fleetplane_runtimes_archived", "Archived runtimes", value=archived_total
        )
        if context.settings.metrics_per_workspace:
            yield from _per_workspace(counts)
        status = GaugeMetricFamily(
            "fleetplane_webhook_deliveries",
            "Webhook deliveries in the log, by status",
            labels=["status"],
        )
        for name, count in sorted(deliveries.items()):
            status.add_metric([name], count)
        yield status
        run = last_sweep(context.database)
        if run is not None:
            yield GaugeMetricFamily(
                "fleetplane_last_sweep_timestamp_seconds",
                "When the last fleet sweep started (any process)",
                value=run.last_started_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "fleetplane_last_sweep_duration_seconds",
                "How long the last completed fleet sweep took",
                value=run.last_duration_ms / 1000,
            )


def _per_workspace(counts: list[lifecycle.FleetCounts]) -> Iterable[Metric]:
    health = GaugeMetricFamily(
        "fleetplane_workspace_runtimes",
        "Runtimes in a workspace's inventory by health",
        labels=["workspace", "health"],
    )
    drift = GaugeMetricFamily(
        "fleetplane_workspace_runtimes_drift",
        "Runtimes in a workspace's inventory by drift",
        labels=["workspace", "drift"],
    )
    archived = GaugeMetricFamily(
        "fleetplane_workspace_runtimes_archived",
        "Archived runtimes of a workspace",
        labels=["workspace"],
    )
    for item in counts:
        for health_state, count in item.health.items():
            health.add_metric([item.workspace_id, health_state.value], count)
        for drift_state, count in item.drift.items():
            drift.add_metric([item.workspace_id, drift_state.value], count)
        archived.add_metric([item.workspace_id], item.archived)
    yield health
    yield drift
    yield archived


class Metrics:
    """One app's registry: request metrics observed by the middleware, the rest collected."""

    def __init__(self, app: FastAPI, context: AppContext, alerting: Alerting) -> None:
        self.app = app
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fleetplane_http_requests",
            "HTTP requests answered by this process, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fleetplane_http_request_duration_seconds",
            "Time to answer HTTP requests in this process, by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(FleetCollector(context, alerting))
        # Started and stopped with the app (its lifespan): they need its running event loop.
        self.loop_lag = LoopLag(self.registry)
        self.gc_pauses = CollectorPauses(self.registry)
        self._static_paths: frozenset[str] | None = None
        # (method, route, status) -> its counter and histogram, looked up once: the label
        # values are bounded (HTTP methods, route templates, status codes).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def route_label(self, scope: Scope) -> str:
        """The route template that answered (bounded label values), or `unmatched`."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            return template
        # The hot path answers heartbeats and 304s before routing; their paths are static
        # ones of the route table (which the OpenAPI document lists in full).
        if self._static_paths is None:
            paths = self.app.openapi().get("paths", {})
            self._static_paths = frozenset(path for path in paths if "{" not in path)
        path = scope.get("path", "")
        return path if path in self._static_paths else UNMATCHED


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            self.metrics.observe(
                scope.get("method", ""),
                self.metrics.route_label(scope),
                status,
                time.perf_counter() - started,
            )


def install(app: FastAPI, context: AppContext, alerting: Alerting) -> Metrics:
    """Add `/metrics` and the request middleware (outermost, so every answer is counted)."""
    metrics = Metrics(app, context, alerting)
    app.state.metrics = metrics
    app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return metrics


@router.get("/metrics", responses={200: {"content": {"text/plain": {}}}})
def metrics_endpoint(request: Request, context: Context, token: Token) -> Response:
    """Prometheus metrics; needs the METRICS_TOKEN bearer when one is set."""
    expected = context.settings.metrics_token
    if expected is not None and not (
        token is not None
        and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
    ):
        raise Unauthenticated("/metrics needs the metrics token (Authorization: Bearer …)")
    try:
        # This process's buffered heartbeats count, as in the fleet API.
        context.hot.liveness.flush()
    except SQLAlchemyError:
        log.warning("metrics: liveness flush failed", exc_info=True)
    metrics: Metrics = request.app.state.metrics
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(metrics.registry), media_type=content_type)
