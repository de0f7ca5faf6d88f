"""Status history, alerts and webhooks over HTTP, and the background sweeper and delivery
worker of one server process (docs/alerts.md).

`install(app, context)` adds the routes, `/metrics` and the workers to an app; it is what
`create_app` calls, and it is idempotent so that tests can call it on any app.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import Field

from fleetplane.api import metrics, responses, schemas
from fleetplane.api.context import AppContext, fleet_rules
from fleetplane.api.deps import Context, Operator
from fleetplane.api.schemas import OperatorBody
from fleetplane.domain.errors import Invalid
from fleetplane.services import access, alerts, history, lifecycle
from fleetplane.services import webhooks as webhook_service
from fleetplane.services.access import Level
from fleetplane.services.background import Worker
from fleetplane.services.fleet import check_limit, decode_cursor, encode_cursor
from fleetplane.services.lifecycle import Retention
from fleetplane.services.sweeper import SweepPolicy, SweepReport, sweep_once
from fleetplane.services.webhooks import RetryPolicy, iso
from fleetplane.settings import Settings
from fleetplane.store.models import Webhook, WebhookAttempt, WebhookDelivery

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=schemas.OPERATOR_ERRORS)


# --- the background work of one process -----------------------------------------------------


def sweep_policy(settings: Settings) -> SweepPolicy:
    """The sweep policy of a server's settings."""
    return SweepPolicy(
        rules=fleet_rules(settings),
        retention=Retention(
            archive_after=timedelta(days=settings.archive_after_days),
            purge_after=timedelta(days=settings.purge_after_days),
            events=timedelta(days=settings.event_retention_days),
            telemetry=timedelta(days=settings.telemetry_retention_days),
            evidence=timedelta(days=settings.evidence_retention_days),
            history=timedelta(days=settings.history_retention_days),
            delivery_log=timedelta(days=settings.webhook_log_retention_days),
        ),
        interval=timedelta(seconds=settings.sweep_seconds),
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """The webhook retry policy of a server's settings."""
    return RetryPolicy(
        base_seconds=settings.webhook_retry_base_seconds,
        window_seconds=settings.webhook_retry_window_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
    )


DELIVERY_BATCH = 20


@dataclass
class Alerting:
    """This process's sweeper and webhook delivery worker, and what they did (for /metrics)."""

    context: AppContext
    sweeps: int = 0
    transitions: int = 0
    last_report: SweepReport | None = None
    attempts: Counter[str] = field(default_factory=Counter)
    sweeper: Worker = field(init=False)
    deliverer: Worker = field(init=False)

    def __post_init__(self) -> None:
        settings = self.context.settings
        self.policy = sweep_policy(settings)
        self.retry = retry_policy(settings)
        self.sweeper = Worker(
            "fleetplane-sweeper", idle_seconds=settings.sweep_seconds, work=self._sweep_job
        )
        self.deliverer = Worker(
            "fleetplane-webhooks",
            idle_seconds=settings.webhook_poll_seconds,
            work=self._delivery_job,
        )

    def sweep(self, *, force: bool = False) -> SweepReport:
        """Run this interval's sweep now, unless another process already has."""
        # This process's buffered heartbeats count; other processes' are a flush behind.
        self.context.hot.liveness.flush()
        report = sweep_once(
            self.context.database, policy=self.policy, now=self.context.clock(), force=force
        )
        if report.ran:
            self.sweeps += 1
            self.transitions += report.transitions
            self.last_report = report
            # Alerts the sweep queued go out now, not at the worker's next idle look.
            self.deliverer.wake()
        return report

    def deliver(self) -> list[webhook_service.AttemptOutcome]:
        """Send the webhook deliveries that are due (one batch)."""
        outcomes = webhook_service.deliver_due(
            self.context.database,
            clock=self.context.clock,
            policy=self.retry,
            limit=DELIVERY_BATCH,
        )
        for outcome in outcomes:
            self.attempts[_outcome_label(outcome)] += 1
        return outcomes

    def _sweep_job(self) -> None:
        self.sweep()

    def _delivery_job(self) -> float | None:
        if len(self.deliver()) >= DELIVERY_BATCH:
            return 0.0  # more may be due: go on at once
        due = webhook_service.next_due(self.context.database)
        if due is None:
            return None
        return (due - self.context.clock()).total_seconds()

    def start(self) -> None:
        """Start both background threads."""
        self.sweeper.start()
        self.deliverer.start()

    def stop(self) -> None:
        """Stop both threads, waiting for work in progress."""
        self.deliverer.stop()
        self.sweeper.stop()


def _outcome_label(outcome: webhook_service.AttemptOutcome) -> str:
    if outcome.error is None:
        return "delivered"
    if outcome.status is webhook_service.DeliveryStatus.FAILED:
        return "gave_up"
    return "retrying"


def install(app: FastAPI, context: AppContext) -> Alerting:
    """Add the alert routes, `/metrics` and this process's workers to an app (once).

    The workers start with `alerting.start()` in the app's lifespan and stop with `stop()`.
    """
    existing: Alerting | None = getattr(app.state, "alerting", None)
    if existing is not None:
        return existing
    alerting = Alerting(context)
    app.state.alerting = alerting
    app.include_router(router)
    metrics.install(app, context, alerting)
    return alerting


# --- status history -------------------------------------------------------------------------


def _int_cursor(cursor: str | None) -> int | None:
    """The id in a one-number cursor (as `encode_cursor([id])` made it)."""
    if not cursor:
        return None
    [value] = decode_cursor(cursor, length=1)
    if not isinstance(value, int):
        raise Invalid("cursor is not one this server issued", code="invalid_cursor")
    return value


@router.get(
    "/workspaces/{workspace_id}/runtimes/{runtime_id}/history",
    response_model=responses.RuntimeHistory,
)
def runtime_history(
    workspace_id: str,
    runtime_id: str,
    context: Context,
    user: Operator,
    kind: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A runtime's health, drift and life-cycle transitions, newest first, with durations."""
    page_size = check_limit(limit)
    before = _int_cursor(cursor)
    now = context.clock()
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        runtime, state, items = history.runtime_history(
            session,
            workspace=workspace,
            runtime_id=runtime_id,
            kind=kind,
            limit=page_size + 1,
            before_id=before,
            now=now,
        )
    more = len(items) > page_size
    items = items[:page_size]
    current = None
    if state is not None:
        current = {
            "health": state.health,
            "healthSince": iso(state.health_since),
            "drift": state.drift,
            "driftReason": state.drift_reason,
            "driftSince": iso(state.drift_since),
            "sweptAt": iso(state.swept_at),
        }
    return {
        "runtimeId": runtime.id,
        "agentId": runtime.agent_id,
        "archived": lifecycle.is_archived(runtime),
        "archivedAt": iso(runtime.archived_at) if lifecycle.is_archived(runtime) else None,
        "current": current,
        "items": items,
        "nextCursor": encode_cursor([items[-1]["id"]]) if more else None,
    }


# --- thresholds -----------------------------------------------------------------------------


class ThresholdsUpdate(OperatorBody):
    alignedShareBelow: float | None = Field(default=None, ge=0, le=100)  # noqa: N815
    dormantShareAbove: float | None = Field(default=None, ge=0, le=100)  # noqa: N815
    upgradeRequired: bool = False  # noqa: N815


@router.get(
    "/workspaces/{workspace_id}/alerts/thresholds", response_model=responses.AlertThresholds
)
def get_thresholds(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The workspace's alert thresholds and which of them are crossed."""
    with context.database.read() as session:
        access.require_workspace(session, user=user, workspace_id=workspace_id, level=Level.READ)
        return alerts.thresholds_view(alerts.get_rules(session, workspace_id=workspace_id))


@router.put(
    "/workspaces/{workspace_id}/alerts/thresholds", response_model=responses.AlertThresholds
)
def put_thresholds(
    workspace_id: str, body: ThresholdsUpdate, context: Context, user: Operator
) -> dict[str, Any]:
    """Replace the thresholds; a crossing they cause is alerted at the next sweep."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        rules = alerts.put_thresholds(
            session,
            workspace=workspace,
            thresholds=alerts.Thresholds(
                aligned_share_below=body.alignedShareBelow,
                dormant_share_above=body.dormantShareAbove,
                upgrade_required=body.upgradeRequired,
            ),
            actor=user.email,
            now=context.clock(),
        )
        return alerts.thresholds_view(rules)


@router.get("/workspaces/{workspace_id}/alerts", response_model=responses.ThresholdCrossingList)
def list_alerts(
    workspace_id: str,
    context: Context,
    user: Operator,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Threshold crossings of the workspace (firing and resolved), newest first."""
    page_size = check_limit(limit)
    before = _int_cursor(cursor)
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.READ
        )
        rows = alerts.list_crossings(
            session, workspace=workspace, limit=page_size + 1, before_id=before
        )
    more = len(rows) > page_size
    rows = rows[:page_size]
    return {
        "items": [alerts.crossing_view(row) for row in rows],
        "nextCursor": encode_cursor([rows[-1].id]) if more else None,
    }


# --- webhooks -------------------------------------------------------------------------------


class WebhookCreate(OperatorBody):
    url: str = Field(min_length=1, max_length=webhook_service.MAX_URL_LENGTH)
    events: list[str] = Field(min_length=1, max_length=20)
    secret: str | None = Field(default=None, min_length=16, max_length=200)
    active: bool = True


class WebhookUpdate(OperatorBody):
    url: str | None = Field(default=None, min_length=1, max_length=webhook_service.MAX_URL_LENGTH)
    events: list[str] | None = Field(default=None, min_length=1, max_length=20)
    secret: str | None = Field(default=None, min_length=16, max_length=200)
    active: bool | None = None


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    """A webhook without its secret."""
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": webhook.events,
        "active": webhook.active,
        "createdBy": webhook.created_by,
        "createdAt": iso(webhook.created_at),
        "updatedAt": iso(webhook.updated_at),
    }


def delivery_view(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    """A delivery with its attempts, as the delivery log shows it."""
    return {
        "id": delivery.id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "createdAt": iso(delivery.created_at),
        "nextAttemptAt": iso(delivery.next_attempt_at),
        "lastAttemptAt": iso(delivery.last_attempt_at),
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "deliveredAt": iso(delivery.delivered_at),
        "payload": json.loads(delivery.body),
        "attemptLog": [
            {
                "number": a.number,
                "at": iso(a.at),
                "statusCode": a.status_code,
                "error": a.error,
                "durationMs": a.duration_ms,
            }
            for a in attempts
        ],
    }


@router.get("/workspaces/{workspace_id}/webhooks", response_model=responses.WebhookList)
def list_webhooks(workspace_id: str, context: Context, user: Operator) -> dict[str, Any]:
    """The workspace's webhooks (URLs can hold secrets: admins only)."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        rows = webhook_service.list_webhooks(session, workspace=workspace)
        return {"items": [webhook_view(row) for row in rows], "nextCursor": None}


@router.post(
    "/workspaces/{workspace_id}/webhooks", status_code=201, response_model=responses.WebhookCreated
)
def create_webhook(
    workspace_id: str, body: WebhookCreate, context: Context, user: Operator
) -> dict[str, Any]:
    """Subscribe a URL to alerts; the signing secret is shown in this answer only."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        webhook = webhook_service.create_webhook(
            session,
            workspace=workspace,
            url=body.url,
            events=body.events,
            secret=body.secret,
            active=body.active,
            actor=user.email,
            now=context.clock(),
        )
        return {**webhook_view(webhook), "secret": webhook.secret}


@router.get(
    "/workspaces/{workspace_id}/webhooks/{webhook_id}", response_model=responses.WebhookRead
)
def get_webhook(
    workspace_id: str, webhook_id: str, context: Context, user: Operator
) -> dict[str, Any]:
    """One webhook."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        webhook = webhook_service.get_webhook(session, workspace=workspace, webhook_id=webhook_id)
        return webhook_view(webhook)


@router.patch(
    "/workspaces/{workspace_id}/webhooks/{webhook_id}", response_model=responses.WebhookRead
)
def update_webhook(
    workspace_id: str, webhook_id: str, body: WebhookUpdate, context: Context, user: Operator
) -> dict[str, Any]:
    """Change a webhook's URL, events, secret or whether it is active."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        webhook = webhook_service.update_webhook(
            session,
            workspace=workspace,
            webhook_id=webhook_id,
            url=body.url,
            events=body.events,
            secret=body.secret,
            active=body.active,
            actor=user.email,
            now=context.clock(),
        )
        return webhook_view(webhook)


@router.delete("/workspaces/{workspace_id}/webhooks/{webhook_id}", status_code=204)
def delete_webhook(
    workspace_id: str, webhook_id: str, context: Context, user: Operator
) -> Response:
    """Remove a webhook and its delivery log."""
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        webhook_service.delete_webhook(
            session,
            workspace=workspace,
            webhook_id=webhook_id,
            actor=user.email,
            now=context.clock(),
        )
    return Response(status_code=204)


@router.post(
    "/workspaces/{workspace_id}/webhooks/{webhook_id}/ping",
    status_code=202,
    response_model=responses.DeliveryQueued,
)
def ping_webhook(
    workspace_id: str, webhook_id: str, request: Request, context: Context, user: Operator
) -> dict[str, Any]:
    """Queue a signed `ping` delivery to the webhook; the delivery log shows how it went."""
    alerting: Alerting = request.app.state.alerting
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        delivery = webhook_service.ping_webhook(
            session,
            workspace=workspace,
            webhook_id=webhook_id,
            actor=user.email,
            now=context.clock(),
        )
        answer = {"deliveryId": delivery.id, "status": delivery.status}
    alerting.deliverer.wake()  # after the commit, so that the worker finds it
    return answer


@router.get(
    "/workspaces/{workspace_id}/webhooks/{webhook_id}/deliveries",
    response_model=responses.DeliveryList,
)
def list_deliveries(
    workspace_id: str,
    webhook_id: str,
    context: Context,
    user: Operator,
    status: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The webhook's delivery log, newest first, each delivery with its attempts."""
    page_size = check_limit(limit)
    before = None
    if cursor:
        millis, delivery_id = decode_cursor(cursor, length=2)
        if not isinstance(millis, int) or not isinstance(delivery_id, str):
            raise Invalid("cursor is not one this server issued", code="invalid_cursor")
        before = (datetime.fromtimestamp(millis / 1000, tz=UTC), delivery_id)
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=user, workspace_id=workspace_id, level=Level.ADMIN
        )
        webhook = webhook_service.get_webhook(session, workspace=workspace, webhook_id=webhook_id)
        rows = webhook_service.list_deliveries(
            session, webhook=webhook, status=status, limit=page_size + 1, before=before
        )
    more = len(rows) > page_size
    rows = rows[:page_size]
    next_cursor = None
    if more:
        last = rows[-1][0]
        next_cursor = encode_cursor([int(last.created_at.timestamp() * 1000), last.id])
    return {"items": [delivery_view(d, a) for d, a in rows], "nextCursor": next_cursor}
