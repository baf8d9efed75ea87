"""The usage ledger and what is read from it: minutes used, budgets, reports.

Rules (docs/usage.md): a session is billed from ``started_at`` (the provider session running) to
``ended_at``, rounded up to whole minutes per session; a session that never started bills 0.
Days are UTC; a session counts on the day it ended. The month's minutes are the ledger's rows
that ended this month plus, for sessions still live, the minutes they have run so far.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from sessions.models import LIVE_STATUSES, AvatarSession, UsageKind, UsageRecord
from systimz import errors
from systimz.orgs.models import Organisation

GroupBy = Literal["day", "avatar", "quality"]
REPORT_FIELDS = ("sessions", "session_seconds", "billable_minutes", "speaking_seconds", "tasks")


def billable_minutes(seconds: float) -> int:
    """Whole minutes, rounded up per session; nothing for no time."""
    return math.ceil(seconds / 60) if seconds > 0 else 0


def usage_record_close(session: AvatarSession) -> UsageRecord:
    """Write the ledger row of a session that was just closed. Call it in the transaction that
    closed the row; the unique constraint refuses a second row for the session."""
    ended = session.ended_at or timezone.now()
    seconds = (ended - session.started_at).total_seconds() if session.started_at else 0.0
    seconds = max(seconds, 0.0)
    # The plan's session length bounds what is billed: the reaper stops a session at its
    # length plus up to one tick, and that lag is ours, not the customer's. The seconds stay
    # the real ones, to reconcile with the provider's own record.
    billed = seconds
    if session.started_at and session.expires_at:
        billed = min(seconds, (session.expires_at - session.started_at).total_seconds())
    events = session.events.all()
    speaking_ms = sum(
        float(p.get("duration_ms") or 0)
        for p in events.filter(type="avatar_stop_talking").values_list("payload", flat=True)
        if isinstance(p, dict)
    )
    return UsageRecord.objects.create(
        organisation_id=session.organisation_id,
        session=session,
        kind=UsageKind.SESSION,
        avatar_id=session.avatar_id,
        avatar_slug=session.avatar_slug,
        quality=session.quality,
        provider=session.provider,
        end_user=session.end_user,
        embed_origin=session.embed_origin,
        started_at=session.started_at,
        ended_at=ended,
        session_seconds=int(seconds),
        billable_minutes=billable_minutes(billed),
        speaking_seconds=round(speaking_ms / 1000),
        tasks=events.filter(type="task").count(),
        close_reason=session.close_reason,
    )


CORRECTION_KEY_NAMESPACE = uuid.UUID("6f1d2c3a-52a4-4b8e-9d0e-5b7c1a2f3e40")


def correction_id(session_id: object, key: str) -> uuid.UUID:
    """The primary key of the correction ``key`` of a session: the same key always names the
    same row, so the primary key itself makes a repeated correction impossible."""
    return uuid.uuid5(CORRECTION_KEY_NAMESPACE, f"{session_id}:correction:{key}")


def usage_correct(
    *,
    record: UsageRecord,
    billable_minutes_delta: int,
    note: str,
    session_seconds_delta: int = 0,
    key: str | None = None,
    now: datetime | None = None,
) -> UsageRecord:
    """Correct a session's usage with a new signed row (the ledger is never edited).

    Idempotent per ``key`` (say, a support ticket's id): a repeat returns the row already
    recorded, and a repeat with other amounts is refused (``Conflict``), as Stripe refuses an
    idempotency key reused with other parameters. Without a key every call is a new correction.

    A correction counts on the corrected session's day while that month is still open (the
    current UTC month); once the month is over, its report is final and the correction counts
    now, in the current month, as an adjustment."""
    now = now or timezone.now()
    ended = record.ended_at if month_start(record.ended_at) == month_start(now) else now
    pk = correction_id(record.session_id, key) if key is not None else uuid.uuid4()
    fields = {
        "organisation_id": record.organisation_id,
        "session_id": record.session_id,
        "kind": UsageKind.CORRECTION,
        "avatar_id": record.avatar_id,
        "avatar_slug": record.avatar_slug,
        "quality": record.quality,
        "provider": record.provider,
        "end_user": record.end_user,
        "embed_origin": record.embed_origin,
        "started_at": record.started_at,
        "ended_at": ended,
        "session_seconds": session_seconds_delta,
        "billable_minutes": billable_minutes_delta,
        "close_reason": record.close_reason,
        "note": note,
    }
    try:
        with transaction.atomic():
            return UsageRecord.objects.create(pk=pk, **fields)
    except IntegrityError:
        existing = UsageRecord.objects.filter(pk=pk, session_id=record.session_id).first()
        if existing is None:
            raise
    if (existing.billable_minutes, existing.session_seconds) != (
        billable_minutes_delta,
        session_seconds_delta,
    ):
        raise errors.Conflict(f"Correction {key!r} was already recorded with other amounts.")
    return existing


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def minutes_used(*, org: Organisation, now: datetime | None = None) -> int:
    """Minutes used this calendar month (UTC): the ledger, plus live sessions so far."""
    now = now or timezone.now()
    start = month_start(now)
    ledger = (
        UsageRecord.objects.for_org(org)
        .filter(ended_at__gte=start)
        .aggregate(total=Coalesce(Sum("billable_minutes"), Value(0)))["total"]
    )
    live = 0
    for started in (
        AvatarSession.objects.for_org(org)
        .filter(status__in=LIVE_STATUSES, started_at__isnull=False)
        .values_list("started_at", flat=True)
    ):
        live += billable_minutes((now - started).total_seconds())  # as the ledger will
    return int(ledger) + live


def budget_left(*, org: Organisation, now: datetime | None = None) -> int | None:
    """Minutes left in the month's budget (None: unlimited)."""
    budget = org.limits.monthly_minutes
    if budget is None:
        return None
    return budget - minutes_used(org=org, now=now)


@dataclass(frozen=True)
class UsageReport:
    organisation: str
    start: date
    end: date
    group_by: GroupBy
    rows: list[dict[str, Any]]
    totals: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "organisation": self.organisation,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": self.group_by,
            "rows": self.rows,
            "totals": self.totals,
        }


def _sums() -> dict[str, Any]:
    zero = Value(0, output_field=IntegerField())
    return {
        # One session row per session (a unique constraint), so a plain count is the distinct
        # count, about 3x cheaper on PostgreSQL.
        "sessions": Count("pk", filter=Q(kind=UsageKind.SESSION)),
        "session_seconds": Coalesce(Sum("session_seconds"), zero),
        "billable_minutes": Coalesce(Sum("billable_minutes"), zero),
        "speaking_seconds": Coalesce(Sum("speaking_seconds"), zero),
        "tasks": Coalesce(Sum("tasks"), zero),
    }


def ledger_between(org: Organisation, start: date, end: date) -> QuerySet[UsageRecord]:
    """Rows of sessions that ended on the UTC days ``start`` to ``end``, both included."""
    low = datetime.combine(start, time.min, tzinfo=UTC)
    high = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    return UsageRecord.objects.for_org(org).filter(ended_at__gte=low, ended_at__lt=high)


def usage_report(*, org: Organisation, start: date, end: date, group_by: GroupBy) -> UsageReport:
    """Usage grouped by UTC day of ending, avatar or quality; totals are the rows' sums."""
    rows_qs = ledger_between(org, start, end)
    if group_by == "day":
        grouped = (
            rows_qs.annotate(day=TruncDate("ended_at", tzinfo=UTC))
            .values("day")
            .annotate(**_sums())
            .order_by("day")
        )
        rows = [{"day": r["day"].isoformat(), **{f: r[f] for f in REPORT_FIELDS}} for r in grouped]
    else:
        key = "avatar_slug" if group_by == "avatar" else "quality"
        grouped = rows_qs.values(key).annotate(**_sums()).order_by(key)
        rows = [{group_by: r[key], **{f: r[f] for f in REPORT_FIELDS}} for r in grouped]
    totals = {f: sum(int(r[f]) for r in rows) for f in REPORT_FIELDS}
    return UsageReport(org.slug, start, end, group_by, rows, totals)
