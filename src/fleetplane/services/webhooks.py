"""Webhook subscriptions and their deliveries: an outbox written in the transaction that found
the alert, sent by a background worker with HMAC-SHA256 signatures and exponential backoff.

Nothing here runs on a request's path: routes and the sweeper only insert outbox rows. Each
process's worker claims due rows with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), sends
them outside any transaction, and records the attempt; a process that dies mid-send leaves the
row to be retried when its lease ends, so delivery is at least once and receivers deduplicate
on the `X-Fleetplane-Delivery` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Invalid, NotFound
from fleetplane.services import audit
from fleetplane.store.db import Database
from fleetplane.store.models import Webhook, WebhookAttempt, WebhookDelivery, Workspace

MAX_WEBHOOKS_PER_WORKSPACE = 20
MAX_URL_LENGTH = 2000
SIGNATURE_HEADER = "X-Fleetplane-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
USER_AGENT = "fleetplane-webhooks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class AlertEvent(StrEnum):
    """What a webhook can subscribe to."""

    HEALTH_CHANGED = "runtime.health_changed"
    DRIFT_CHANGED = "runtime.drift_changed"
    ARCHIVED = "runtime.archived"
    UNARCHIVED = "runtime.unarchived"
    ALIGNED_SHARE = "threshold.aligned_share"
    DORMANT_SHARE = "threshold.dormant_share"
    UPGRADE_REQUIRED = "threshold.upgrade_required"


PING = "ping"
ALL_EVENTS = "*"


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the retry window
    CANCELLED = "cancelled"  # its webhook was disabled before it went out


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a Z suffix."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


# --- subscriptions -------------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials in it."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise Invalid("url is not a valid URL", code="invalid_webhook_url") from exc
    if parts.scheme not in ("http", "https"):
        raise Invalid("url must start with http:// or https://", code="invalid_webhook_url")
    if not host:
        raise Invalid("url must name a host", code="invalid_webhook_url")
    if parts.username is not None or parts.password is not None:
        raise Invalid("url must not carry credentials", code="invalid_webhook_url")
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() for ch in url):
        raise Invalid("url is too long or contains spaces", code="invalid_webhook_url")
    return url


def check_events(events: list[str]) -> list[str]:
    """Known event names, without duplicates, in a stable order; `*` means every event."""
    known = {event.value for event in AlertEvent}
    if not events:
        raise Invalid("events must name at least one event", code="invalid_webhook_events")
    unknown = [event for event in events if event not in known and event != ALL_EVENTS]
    if unknown:
        raise Invalid(
            f"unknown events; choose from {', '.join(sorted(known))} or *",
            code="invalid_webhook_events",
            details={"unknown": unknown},
        )
    return sorted(set(events))


def subscribed(webhook: Webhook, event: str) -> bool:
    """Whether an active webhook wants an event."""
    return webhook.active and (ALL_EVENTS in webhook.events or event in webhook.events)


def create_webhook(
    session: Session,
    *,
    workspace: Workspace,
    url: str,
    events: list[str],
    secret: str | None,
    active: bool,
    actor: str,
    now: datetime,
) -> Webhook:
    """Subscribe a URL to a workspace's alerts; without a secret, one is generated."""
    count = session.scalar(select(func.count()).where(Webhook.workspace_id == workspace.id)) or 0
    if count >= MAX_WEBHOOKS_PER_WORKSPACE:
        raise Invalid(
            f"a workspace has at most {MAX_WEBHOOKS_PER_WORKSPACE} webhooks",
            code="too_many_webhooks",
        )
    webhook = Webhook(
        workspace_id=workspace.id,
        url=check_webhook_url(url),
        secret=secret or SECRET_PREFIX + secrets.token_urlsafe(32),
        events=check_events(events),
        active=active,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(webhook)
    session.flush()
    _audit(session, workspace, webhook, "webhook.create", actor, now)
    return webhook


def get_webhook(session: Session, *, workspace: Workspace, webhook_id: str) -> Webhook:
    """A webhook of the workspace, else NotFound."""
    webhook = session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.workspace_id == workspace.id)
    )
    if webhook is None:
        raise NotFound("webhook not found")
    return webhook


def list_webhooks(session: Session, *, workspace: Workspace) -> list[Webhook]:
    """The workspace's webhooks, oldest first."""
    return list(
        session.scalars(
            select(Webhook)
            .where(Webhook.workspace_id == workspace.id)
            .order_by(Webhook.created_at, Webhook.id)
        )
    )


def update_webhook(
    session: Session,
    *,
    workspace: Workspace,
    webhook_id: str,
    url: str | None,
    events: list[str] | None,
    secret: str | None,
    active: bool | None,
    actor: str,
    now: datetime,
) -> Webhook:
    """Change a webhook; disabling it cancels its deliveries still waiting to go out."""
    webhook = get_webhook(session, workspace=workspace, webhook_id=webhook_id)
    if url is not None:
        webhook.url = check_webhook_url(url)
    if events is not None:
        webhook.events = check_events(events)
    if secret is not None:
        webhook.secret = secret
    if active is not None:
        if webhook.active and not active:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.webhook_id == webhook.id,
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                )
                .values(status=DeliveryStatus.CANCELLED, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )
        webhook.active = active
    webhook.updated_at = now
    session.flush()
    _audit(session, workspace, webhook, "webhook.update", actor, now)
    return webhook


def delete_webhook(
    session: Session, *, workspace: Workspace, webhook_id: str, actor: str, now: datetime
) -> None:
    """Remove a webhook with its delivery log."""
    webhook = get_webhook(session, workspace=workspace, webhook_id=webhook_id)
    session.delete(webhook)
    session.flush()
    _audit(session, workspace, webhook, "webhook.delete", actor, now)


def ping_webhook(
    session: Session, *, workspace: Workspace, webhook_id: str, actor: str, now: datetime
) -> WebhookDelivery:
    """Queue a `ping` delivery, to try a receiver and its signature check."""
    webhook = get_webhook(session, workspace=workspace, webhook_id=webhook_id)
    event_id = f"ping_{secrets.token_hex(8)}"
    [delivery] = enqueue(
        session,
        webhooks=[webhook],
        workspace=workspace,
        event=PING,
        event_id=event_id,
        data={"webhookId": webhook.id},
        now=now,
        force=True,
    )
    _audit(session, workspace, webhook, "webhook.ping", actor, now)
    session.flush()  # the delivery's id, which the answer names
    return delivery


def _audit(
    session: Session, workspace: Workspace, webhook: Webhook, action: str, actor: str, now: datetime
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        target=f"webhook:{webhook.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )


# --- the outbox ----------------------------------------------------------------------------


def event_body(
    *, event: str, event_id: str, workspace: Workspace, data: dict[str, Any], now: datetime
) -> str:
    """The JSON document a delivery carries; the same bytes on every retry."""
    document = {
        "id": event_id,
        "type": event,
        "createdAt": iso(now),
        "workspaceId": workspace.id,
        "orgId": workspace.org_id,
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def enqueue(
    session: Session,
    *,
    webhooks: Iterable[Webhook],
    workspace: Workspace,
    event: str,
    event_id: str,
    data: dict[str, Any],
    now: datetime,
    force: bool = False,
) -> list[WebhookDelivery]:
    """Add one pending delivery of an event per subscribed webhook, in the caller's transaction.

    `event_id` is unique per alert, and (webhook, event id) is unique in the table: the same
    alert can never be queued twice for one webhook.
    """
    body = event_body(event=event, event_id=event_id, workspace=workspace, data=data, now=now)
    deliveries = [
        WebhookDelivery(
            webhook_id=webhook.id,
            workspace_id=workspace.id,
            event=event,
            dedupe_key=event_id,
            body=body,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for webhook in webhooks
        if force or subscribed(webhook, event)
    ]
    session.add_all(deliveries)
    return deliveries


# --- signing -------------------------------------------------------------------------------


def sign(secret: str, *, timestamp: int, body: bytes) -> str:
    """The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str,
    header: str,
    *,
    body: bytes,
    now: datetime,
    tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the signature matches and its timestamp is recent."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp=timestamp, body=body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, value) for value in fields.get("v1", []))


# --- retries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from `base_seconds`, for at most `window_seconds` after the alert."""

    base_seconds: float = 10.0
    window_seconds: float = 3600.0
    timeout_seconds: float = 5.0

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is hidden from other workers while it is being sent."""
        return timedelta(seconds=self.timeout_seconds + 60)


def next_attempt_at(
    *, created_at: datetime, attempted_at: datetime, attempts: int, policy: RetryPolicy
) -> datetime | None:
    """When to retry after `attempts` failures, or None to give up.

    Waits double from `base_seconds` (10 s, 20 s, 40 s …); the last retry is made exactly
    when the window ends, and a failure then is final.
    """
    deadline = created_at + timedelta(seconds=policy.window_seconds)
    if attempted_at >= deadline:
        return None
    wait = timedelta(seconds=policy.base_seconds * 2 ** max(attempts - 1, 0))
    return min(attempted_at + wait, deadline)


def retry_schedule(policy: RetryPolicy, *, start: datetime) -> list[datetime]:
    """Every attempt time of a delivery that always fails, the first at `start`."""
    times = [start]
    while True:
        following = next_attempt_at(
            created_at=start, attempted_at=times[-1], attempts=len(times), policy=policy
        )
        if following is None:
            return times
        times.append(following)


# --- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt."""

    delivery_id: str
    url: str
    secret: str
    event: str
    body: str


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt did."""

    delivery_id: str
    status_code: int | None
    error: str | None
    status: DeliveryStatus


def claim_due(
    database: Database, *, now: datetime, policy: RetryPolicy, limit: int
) -> list[Claimed]:
    """Lease up to `limit` due deliveries to this worker (others skip them meanwhile)."""
    with database.unit_of_work() as session:
        due = session.execute(
            select(WebhookDelivery.id, Webhook.url, Webhook.secret, WebhookDelivery.event)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(of=WebhookDelivery, skip_locked=True)
        ).all()
        if not due:
            return []
        ids = [row.id for row in due]
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids))
            .values(next_attempt_at=now + policy.lease)
            .execution_options(synchronize_session=False)
        )
        bodies = dict(
            session.execute(
                select(WebhookDelivery.id, WebhookDelivery.body).where(WebhookDelivery.id.in_(ids))
            ).all()
        )
    return [Claimed(row.id, row.url, row.secret, row.event, bodies[row.id]) for row in due]


def send(client: httpx.Client, claimed: Claimed, *, now: datetime) -> tuple[int | None, str | None]:
    """POST one signed delivery; (status code, error) where error is None on a 2xx."""
    body = claimed.body.encode()
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Fleetplane-Event": claimed.event,
        "X-Fleetplane-Delivery": claimed.delivery_id,
        "X-Fleetplane-Timestamp": str(timestamp),
        SIGNATURE_HEADER: sign(claimed.secret, timestamp=timestamp, body=body),
    }
    try:
        response = client.post(claimed.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


def record_attempt(
    database: Database,
    *,
    delivery_id: str,
    status_code: int | None,
    error: str | None,
    attempted_at: datetime,
    duration_ms: int,
    policy: RetryPolicy,
) -> DeliveryStatus | None:
    """Log an attempt and schedule the next one or close the delivery; None if it is gone."""
    with database.unit_of_work() as session:
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return None  # deleted, or its webhook disabled, while it was in flight
        delivery.attempts += 1
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                at=attempted_at,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
            )
        )
        delivery.last_attempt_at = attempted_at
        delivery.last_status_code = status_code
        delivery.last_error = error
        if error is None:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = attempted_at
            delivery.next_attempt_at = None
        else:
            following = next_attempt_at(
                created_at=delivery.created_at,
                attempted_at=attempted_at,
                attempts=delivery.attempts,
                policy=policy,
            )
            delivery.next_attempt_at = following
            if following is None:
                delivery.status = DeliveryStatus.FAILED
        return DeliveryStatus(delivery.status)


def deliver_due(
    database: Database,
    *,
    clock: Callable[[], datetime],
    policy: RetryPolicy,
    limit: int = 20,
) -> list[AttemptOutcome]:
    """Send every delivery due now (up to `limit`), one attempt each, and log the attempts."""
    claimed = claim_due(database, now=clock(), policy=policy, limit=limit)
    if not claimed:
        return []
    outcomes = []
    # Redirects are not followed (a receiver answers itself) and no proxy settings are read
    # from the environment: deliveries go where the URL says.
    with httpx.Client(
        timeout=policy.timeout_seconds, follow_redirects=False, trust_env=False
    ) as client:
        for item in claimed:
            attempted_at = clock()
            started = time.monotonic()
            status_code, error = send(client, item, now=attempted_at)
            duration_ms = int((time.monotonic() - started) * 1000)
            status = record_attempt(
                database,
                delivery_id=item.delivery_id,
                status_code=status_code,
                error=error,
                attempted_at=attempted_at,
                duration_ms=duration_ms,
                policy=policy,
            )
            if status is not None:
                outcomes.append(AttemptOutcome(item.delivery_id, status_code, error, status))
    return outcomes


def next_due(database: Database) -> datetime | None:
    """When the earliest pending delivery is next due (leases included), or None."""
    with database.read() as session:
        return session.scalar(
            select(func.min(WebhookDelivery.next_attempt_at)).where(
                WebhookDelivery.status == DeliveryStatus.PENDING
            )
        )


# --- the delivery log ----------------------------------------------------------------------


def list_deliveries(
    session: Session,
    *,
    webhook: Webhook,
    status: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """A webhook's deliveries, newest first, each with its attempts in order."""
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise Invalid(
            f"status must be one of {', '.join(s.value for s in DeliveryStatus)}",
            code="invalid_status_filter",
        )
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        created, delivery_id = before
        query = query.where(
            (WebhookDelivery.created_at < created)
            | ((WebhookDelivery.created_at == created) & (WebhookDelivery.id < delivery_id))
        )
    deliveries = list(
        session.scalars(
            query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
                limit
            )
        )
    )
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.id]) for d in deliveries]


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries in the log per status, across every workspace."""
    rows = session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    )
    counts = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    for status, count in rows:
        counts[str(status)] = int(count)
    return counts
