"""Reads for avatar sessions."""

from __future__ import annotations

from systimz.orgs.models import Organisation


def organisation_current_usage(*, org: Organisation) -> dict[str, int]:
    """Active sessions now and minutes used this calendar month (UTC).

    Sessions and the usage ledger arrive with the sessions and usage work; until a session
    can exist, both are truly zero."""
    return {"active_sessions": 0, "minutes_this_month": 0}
