"""Reads for avatar sessions."""

from __future__ import annotations

from sessions.models import LIVE_STATUSES, AvatarSession
from systimz.orgs.models import Organisation


def organisation_current_usage(*, org: Organisation) -> dict[str, int]:
    """Live sessions now, and minutes used this calendar month (UTC).

    Minutes come from the usage ledger, which the usage work adds; until then no session can
    be billed and the figure is 0."""
    active = AvatarSession.objects.for_org(org).filter(status__in=LIVE_STATUSES).count()
    return {"active_sessions": active, "minutes_this_month": 0}
