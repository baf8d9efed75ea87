"""Reads for avatar sessions."""

from __future__ import annotations

from sessions.models import LIVE_STATUSES, AvatarSession
from sessions.usage import minutes_used
from systimz.orgs.models import Organisation


def organisation_current_usage(*, org: Organisation) -> dict[str, int]:
    """Live sessions now, and minutes used this calendar month (UTC): the usage ledger plus
    the minutes live sessions have run so far."""
    active = AvatarSession.objects.for_org(org).filter(status__in=LIVE_STATUSES).count()
    return {"active_sessions": active, "minutes_this_month": minutes_used(org=org)}
