"""Reads for organisations."""

from __future__ import annotations

from typing import Any

from systimz.orgs.models import Organisation


def organisation_overview(*, org: Organisation) -> dict[str, Any]:
    """What the organisation may use (its limits) and is using now (``current``)."""
    from sessions.selectors import organisation_current_usage

    return {
        "slug": org.slug,
        "name": org.name,
        "plan": org.plan,
        "limits": org.limits.as_dict(),
        "current": organisation_current_usage(org=org),
    }
