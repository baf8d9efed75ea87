"""The reaper: no session outlives its limits, and no provider stop is forgotten.

Each tick (``sessions.tasks.reap_sessions``, every few seconds) finds the sessions that must end
and *claims* them in bulk with a compare-and-set ``active|starting → stopping`` that records the
reason, so a session is claimed once however many reapers, users and failures race on it. Each
claimed session is then finished by its own task (``session_finish_stop``: the provider stop,
then the close with its usage, in one transaction). A claim whose task was lost (a killed worker)
is found again once it has been ``stopping`` for ``STOPPING_STALE``, and finished then. Stops
that did not land are retried with backoff (``session_retry_stop``) until they do.

Reasons, in order of precedence: ``timeout`` (past the session's length, or the organisation's
monthly minutes are spent), ``idle`` (no activity for the organisation's idle timeout; speak,
interrupt and keep-alive are activity), ``disconnected`` (no player for the grace period),
``error`` (a start stuck in ``starting``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from sessions.models import AvatarSession, CloseReason, SessionStatus
from sessions.usage import budget_left
from systimz.orgs.models import Organisation
from systimz.webhooks.services import webhook_emit

log = logging.getLogger("systimz.sessions.reaper")

STARTING_STALE = timedelta(seconds=120)  # a start takes seconds; this one is stuck
STOPPING_STALE = timedelta(seconds=60)  # the default of REAPER_STOPPING_STALE_SECONDS
MIN_IDLE = timedelta(seconds=30)  # the smallest idle timeout an organisation may set
BATCH = 5000


@dataclass
class Claimed:
    """Sessions this tick moved to ``stopping``, by reason, and stale ones to finish again."""

    by_reason: dict[str, list[str]] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [i for ids in self.by_reason.values() for i in ids] + self.stale


def _claim(ids: list[str], reason: str, statuses: list[str], now: datetime) -> list[str]:
    """Compare-and-set ``ids`` (still in ``statuses``) to ``stopping`` with ``reason``; the ids
    this call moved. The rows are locked first (``SKIP LOCKED``: a row another reaper is
    claiming is its claim), so two reapers never both claim a session, even two ticks at the
    same instant; the check on the tick's own time covers databases without row locks."""
    if not ids:
        return []
    with transaction.atomic():
        mine = list(
            AvatarSession.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids, status__in=statuses)
            .values_list("pk", flat=True)
        )
        AvatarSession.objects.filter(pk__in=mine, status__in=statuses).update(
            status=SessionStatus.STOPPING,
            close_reason=reason,
            version=F("version") + 1,
            state_changed_at=now,
        )
    return [
        str(pk)
        for pk in AvatarSession.objects.filter(
            pk__in=mine, status=SessionStatus.STOPPING, close_reason=reason, state_changed_at=now
        ).values_list("pk", flat=True)
    ]


def _over_budget(now: datetime) -> list[str]:
    """Active sessions of organisations whose monthly minutes are spent (with the one
    ``limit.reached`` webhook per organisation and tick that stops them)."""
    ids: list[str] = []
    orgs = Organisation.objects.filter(
        pk__in=AvatarSession.objects.filter(status=SessionStatus.ACTIVE).values("organisation")
    )
    for org in orgs:
        left = budget_left(org=org, now=now)
        if left is None or left > 0:
            continue
        live = list(
            AvatarSession.objects.for_org(org)
            .filter(status=SessionStatus.ACTIVE)
            .values_list("pk", flat=True)
        )
        ids.extend(str(pk) for pk in live)
        with transaction.atomic():
            webhook_emit(
                org=org,
                type_="limit.reached",
                data={
                    "limit": "monthly_minutes",
                    "monthly_minutes": org.limits.monthly_minutes,
                    "sessions_stopped": [str(pk) for pk in live],
                },
            )
        log.warning("reaper.budget_spent org=%s sessions=%s", org.slug, len(live))
    return ids


def sessions_claim_due(now: datetime | None = None) -> Claimed:
    """Claim every session that must end now (see the module's reasons)."""
    now = now or timezone.now()
    active = AvatarSession.objects.filter(status=SessionStatus.ACTIVE)
    claimed = Claimed()

    def ids(queryset: QuerySet[AvatarSession]) -> list[str]:
        return [str(pk) for pk in queryset.values_list("pk", flat=True)[:BATCH]]

    expired = ids(active.filter(expires_at__lte=now)) + _over_budget(now)
    claimed.by_reason[CloseReason.TIMEOUT] = _claim(
        expired, CloseReason.TIMEOUT, [SessionStatus.ACTIVE], now
    )
    idle = [
        str(pk)
        for pk, last, timeout in active.filter(last_activity_at__lte=now - MIN_IDLE).values_list(
            "pk", "last_activity_at", "idle_timeout_seconds"
        )[:BATCH]
        if last <= now - timedelta(seconds=timeout)
    ]
    claimed.by_reason[CloseReason.IDLE] = _claim(
        idle, CloseReason.IDLE, [SessionStatus.ACTIVE], now
    )
    grace = timedelta(seconds=settings.DISCONNECT_GRACE_SECONDS)
    gone = ids(active.filter(listeners=0, disconnected_at__lte=now - grace))
    claimed.by_reason[CloseReason.DISCONNECTED] = _claim(
        gone, CloseReason.DISCONNECTED, [SessionStatus.ACTIVE], now
    )
    stuck = ids(
        AvatarSession.objects.filter(
            status=SessionStatus.STARTING, created_at__lte=now - STARTING_STALE
        )
    )
    claimed.by_reason[CloseReason.ERROR] = _claim(
        stuck, CloseReason.ERROR, [SessionStatus.STARTING], now
    )
    stale = timedelta(seconds=settings.REAPER_STOPPING_STALE_SECONDS)  # its task was lost
    claimed.stale = ids(
        AvatarSession.objects.filter(status=SessionStatus.STOPPING).filter(
            Q(state_changed_at__lte=now - stale) | Q(state_changed_at__isnull=True)
        )
    )
    for reason, moved in claimed.by_reason.items():
        if moved:
            log.info("reaper.claimed reason=%s sessions=%s", reason, len(moved))
    return claimed


def stops_due(now: datetime | None = None) -> list[str]:
    """Closed sessions whose provider stop has not landed and is due for another attempt."""
    now = now or timezone.now()
    return [
        str(pk)
        for pk in AvatarSession.objects.filter(stop_pending=True, status=SessionStatus.CLOSED)
        .filter(Q(next_stop_attempt_at__lte=now) | Q(next_stop_attempt_at__isnull=True))
        .values_list("pk", flat=True)[:BATCH]
    ]
