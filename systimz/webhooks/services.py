"""Webhooks: endpoints, the outbox of events, and delivery attempts.

Outbox: :func:`webhook_emit` runs inside the caller's transaction and writes one
``WebhookDelivery`` per subscribed endpoint, so an event is queued if and only if the change it
reports commits. After commit a Celery task is enqueued per delivery; the periodic sweep
(:func:`deliveries_enqueue_due`) re-enqueues whatever is due and was not enqueued recently, so a
lost message or a broker outage delays a delivery but never loses it.

Claim protocol (:func:`delivery_attempt`): a worker may send attempt ``n + 1`` only after a
compare-and-set ``UPDATE ... SET attempts = n + 1, next_attempt_at = now + lease WHERE status =
'pending' AND attempts = n AND next_attempt_at <= now`` changed the row. Two workers holding the
same message (a redelivery, the sweep and a retry at once) therefore never both send the same
attempt. The outcome is written with the same guard (``attempts = n + 1``). A worker that dies
mid-attempt leaves the lease to expire; the sweep then enqueues the next attempt.

Delivery is at least once: a receiver that answered 2xx but whose answer was lost sees the event
again with the same ``id``, and must deduplicate on it. A delivered event is never sent again.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from systimz import errors
from systimz.orgs import crypto
from systimz.orgs.models import Organisation
from systimz.webhooks import delivery as sender
from systimz.webhooks.models import (
    DeliveryStatus,
    EventType,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)

log = logging.getLogger("systimz.webhooks")

MAX_WEBHOOKS_PER_ORGANISATION = 20
# An attempt owns its delivery this long after its claim; longer than the task's hard limit.
ATTEMPT_LEASE = timedelta(seconds=120)
# The sweep re-enqueues a due delivery only if no task for it was enqueued this recently.
REQUEUE_AFTER = timedelta(seconds=120)
# Retries due within this many seconds are enqueued with a countdown at once; later ones are
# left to the sweep (long countdowns sit badly with a broker's visibility timeout).
DIRECT_RETRY_MAX_SECONDS = 300
SWEEP_BATCH = 500
_JITTER = 0.2


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and 32 random bytes, url-safe base64."""
    return sender.SECRET_PREFIX + secrets.token_urlsafe(32)


def max_attempts() -> int:
    return len(settings.WEBHOOK_RETRY_DELAYS_SECONDS) + 1


def backoff_seconds(attempt: int) -> float:
    """The wait after failed attempt ``attempt`` (1-based): the configured schedule, jittered
    by ±20 % so endpoints that failed together do not retry together."""
    delays = settings.WEBHOOK_RETRY_DELAYS_SECONDS
    base = float(delays[min(max(attempt, 1), len(delays)) - 1])
    return base * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter, not crypto


# --- Endpoints ------------------------------------------------------------------------------


def normalise_events(events: Iterable[str]) -> list[str]:
    """Known event types, each once, in the canonical order; raises InvalidInput otherwise."""
    wanted = list(events)
    unknown = sorted(set(wanted) - set(EventType.values))
    if unknown:
        raise errors.InvalidInput(
            f"Unknown event type {', '.join(unknown)}.",
            fields={"events": [f"Unknown: {', '.join(unknown)}."]},
        )
    if not wanted:
        raise errors.InvalidInput(
            "A webhook needs at least one event type.",
            fields={"events": ["At least one event type."]},
        )
    return [type_ for type_ in EventType.values if type_ in wanted]


def check_url(url: str) -> str:
    """``url`` if webhooks may be sent there; raises InvalidInput otherwise."""
    problem = sender.url_problem(url)
    if problem is not None:
        raise errors.InvalidInput(problem, fields={"url": [problem]})
    return url


@dataclass(frozen=True)
class IssuedWebhook:
    webhook: Webhook
    secret: str  # shown once, stored only encrypted


def webhook_create(
    *,
    org: Organisation,
    url: str,
    events: Iterable[str],
    active: bool = True,
    description: str = "",
) -> IssuedWebhook:
    """Register an endpoint with a new signing secret; the plaintext exists only in the return
    value (and, encrypted, in the row)."""
    webhook = Webhook(
        organisation=org,
        url=check_url(url),
        events=normalise_events(events),
        active=active,
        description=description,
    )
    secret = generate_secret()
    webhook.set_secret(secret)
    with transaction.atomic():
        # Lock the organisation so two concurrent creates cannot both pass the cap.
        Organisation.objects.select_for_update().filter(pk=org.pk).first()
        if Webhook.objects.for_org(org).count() >= MAX_WEBHOOKS_PER_ORGANISATION:
            raise errors.InvalidInput(
                f"An organisation may have at most {MAX_WEBHOOKS_PER_ORGANISATION} webhooks."
            )
        webhook.save()
    log.info("webhook.created org=%s webhook=%s events=%s", org.slug, webhook.pk, webhook.events)
    return IssuedWebhook(webhook=webhook, secret=secret)


def webhook_update(
    *,
    webhook: Webhook,
    url: str | None = None,
    events: Iterable[str] | None = None,
    active: bool | None = None,
    description: str | None = None,
) -> Webhook:
    """Change an endpoint; the secret stays. Pending deliveries go to the new URL."""
    if url is not None:
        webhook.url = check_url(url)
    if events is not None:
        webhook.events = normalise_events(events)
    if active is not None:
        webhook.active = active
    if description is not None:
        webhook.description = description
    webhook.save()
    log.info("webhook.updated org=%s webhook=%s", webhook.organisation_id, webhook.pk)
    return webhook


def webhook_rotate_secret(*, webhook: Webhook) -> str:
    """Replace the signing secret; returns the new one (shown once). Attempts from now on are
    signed with it, including retries of events queued before."""
    secret = generate_secret()
    webhook.set_secret(secret)
    webhook.save(update_fields=["encrypted_api_key", "key_id", "last4", "updated_at"])
    log.info("webhook.secret_rotated org=%s webhook=%s", webhook.organisation_id, webhook.pk)
    return secret


# --- Events ---------------------------------------------------------------------------------


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_emit(*, org: Organisation, type_: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue ``type_`` for every active endpoint of ``org`` subscribed to it, in the caller's
    transaction (the outbox); delivery starts after commit. Every endpoint gets the same event
    ``id``. Returns the deliveries written (none when nobody listens)."""
    if type_ not in EventType.values:
        raise ValueError(f"unknown webhook event type {type_!r}")
    webhooks = [
        webhook
        for webhook in Webhook.objects.for_org(org).filter(active=True).only("id", "events")
        if webhook.subscribes_to(type_)
    ]
    if not webhooks:
        return []
    now = timezone.now()
    event_id = uuid.uuid4()
    body = {
        "id": str(event_id),
        "type": type_,
        "created_at": _timestamp(now),
        "organisation": org.slug,
        "data": json.loads(json.dumps(data, cls=DjangoJSONEncoder)),
    }
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            organisation=org,
            webhook=webhook,
            event_id=event_id,
            type=type_,
            body=body,
            next_attempt_at=now,
            enqueued_at=now,
        )
        for webhook in webhooks
    )
    ids = [str(d.pk) for d in deliveries]
    transaction.on_commit(lambda: _enqueue(ids), robust=True)
    log.info(
        "webhook.event org=%s type=%s event=%s deliveries=%s", org.slug, type_, event_id, len(ids)
    )
    return deliveries


def _enqueue(delivery_ids: Iterable[str], *, countdown: float | None = None) -> int:
    """Send a delivery task per id; a broker failure is logged and left to the sweep."""
    from systimz.webhooks.tasks import webhook_deliver

    sent = 0
    for delivery_id in delivery_ids:
        try:
            webhook_deliver.apply_async((delivery_id,), countdown=countdown, retry=False)
        except Exception as exc:  # noqa: BLE001 - the sweep re-enqueues what was not sent
            log.warning(
                "webhook.enqueue_failed delivery=%s error=%s", delivery_id, type(exc).__name__
            )
        else:
            sent += 1
    return sent


# --- Attempts -------------------------------------------------------------------------------


def _claim(delivery: WebhookDelivery, now: datetime) -> bool:
    """Compare-and-set: attempt ``attempts + 1`` is ours if nobody moved the row on."""
    claimed = WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        pk=delivery.pk,
        status=DeliveryStatus.PENDING,
        attempts=delivery.attempts,
    ).update(attempts=delivery.attempts + 1, next_attempt_at=now + ATTEMPT_LEASE, updated_at=now)
    if claimed:
        delivery.attempts += 1
    return bool(claimed)


def _record(
    delivery: WebhookDelivery, outcome: sender.Outcome, *, final: bool = False
) -> tuple[str, float | None]:
    """Write the outcome of the attempt this worker claimed; returns the delivery's status and,
    for a retry soon enough to enqueue now, its delay."""
    now = timezone.now()
    number = delivery.attempts
    fields: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": outcome.error[:200],
        "updated_at": now,
    }
    retry_in: float | None = None
    if outcome.ok:
        fields.update(
            status=DeliveryStatus.DELIVERED, delivered_at=now, last_error="", next_attempt_at=None
        )
    elif final or number >= max_attempts():
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        delay = backoff_seconds(number)
        fields.update(next_attempt_at=now + timedelta(seconds=delay))
        if delay <= DIRECT_RETRY_MAX_SECONDS:
            fields.update(enqueued_at=now)
            retry_in = delay
    with transaction.atomic():
        updated = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=number
        ).update(**fields)
        if not updated:  # deleted with its webhook, or its lease was taken over
            return "stale", None
        WebhookAttempt.objects.create(
            organisation_id=delivery.organisation_id,
            delivery_id=delivery.pk,
            number=number,
            status_code=outcome.status_code,
            error=outcome.error[:200],
            duration_ms=outcome.duration_ms,
        )
    status = fields.get("status", DeliveryStatus.PENDING)
    level = logging.INFO if outcome.ok else logging.WARNING
    log.log(
        level,
        "webhook.attempt org=%s webhook=%s delivery=%s event=%s type=%s attempt=%s "
        "status_code=%s error=%s ms=%s result=%s",
        delivery.organisation_id,
        delivery.webhook_id,
        delivery.pk,
        delivery.event_id,
        delivery.type,
        number,
        outcome.status_code,
        outcome.error or "-",
        outcome.duration_ms,
        status,
    )
    return status, retry_in


def delivery_attempt(*, delivery_id: str) -> str:
    """Make the next attempt of a delivery if it is due and nobody else is making it.

    Returns what happened: ``delivered``, ``pending`` (failed; a retry is scheduled),
    ``failed`` (given up), ``not_due``, ``claimed`` (another worker has it), ``missing``, or
    ``stale``. Safe to call any number of times for the same id."""
    delivery = (
        WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
        if _is_uuid(delivery_id)
        else None
    )
    if delivery is None:
        return "missing"
    if delivery.status != DeliveryStatus.PENDING:
        return str(delivery.status)
    now = timezone.now()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return "not_due"
    if not _claim(delivery, now):
        return "claimed"
    webhook = delivery.webhook
    if not webhook.active:
        outcome = sender.Outcome(False, None, "the webhook is disabled", 0)
        return _record(delivery, outcome, final=True)[0]
    problem = sender.url_problem(webhook.url)
    if problem is not None:
        outcome = sender.Outcome(False, None, f"refused URL: {problem}", 0)
        return _record(delivery, outcome, final=True)[0]
    try:
        secret = webhook.reveal_secret()
    except crypto.DecryptionError:
        outcome = sender.Outcome(False, None, "cannot decrypt the signing secret", 0)
    else:
        outcome = sender.send(url=webhook.url, secret=secret, body=delivery.body)
    status, retry_in = _record(delivery, outcome)
    if retry_in is not None:
        _enqueue([str(delivery.pk)], countdown=retry_in)
    return status


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def deliveries_enqueue_due(*, limit: int = SWEEP_BATCH) -> int:
    """The outbox sweep: enqueue pending deliveries that are due and have no recent task (a
    lost message, a broker outage, a worker that died mid-attempt, a retry too far off for a
    countdown). Returns how many tasks were enqueued."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - REQUEUE_AFTER))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    ids = [str(pk) for pk in due]
    if not ids:
        return 0
    WebhookDelivery.objects.filter(pk__in=ids).update(enqueued_at=now)
    sent = _enqueue(ids)
    log.info("webhook.sweep due=%s enqueued=%s", len(ids), sent)
    return sent


@dataclass(frozen=True)
class RetryReport:
    queued: int
    skipped: int


def deliveries_retry_now(*, deliveries: QuerySet[WebhookDelivery]) -> RetryReport:
    """Make pending or failed deliveries due now and enqueue them (the admin's "retry now").
    A failed delivery gets one more attempt. Delivered ones are never sent again, and one
    with an attempt in flight is left to finish."""
    now = timezone.now()
    queued: list[str] = []
    skipped = 0
    rows = (
        deliveries.select_related(None)
        .annotate(logged=Count("attempt_log"))
        .only("id", "status", "attempts", "next_attempt_at")
    )
    for row in rows:
        in_flight = (
            row.attempts > row.logged
            and row.next_attempt_at is not None
            and row.next_attempt_at > now
        )
        if row.status == DeliveryStatus.DELIVERED or in_flight:
            skipped += 1
            continue
        reset = WebhookDelivery.objects.filter(
            pk=row.pk, status=row.status, attempts=row.attempts
        ).update(status=DeliveryStatus.PENDING, next_attempt_at=now, enqueued_at=now)
        if reset:
            queued.append(str(row.pk))
        else:
            skipped += 1
    _enqueue(queued)
    return RetryReport(queued=len(queued), skipped=skipped)
