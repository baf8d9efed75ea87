"""Reads for the avatar catalogue."""

from __future__ import annotations

from avatars.models import Avatar


def published_avatar_get(*, org_slug: str, avatar_slug: str) -> Avatar | None:
    """A published avatar by its organisation's and its own slug, for the public pages."""
    return (
        Avatar.objects.select_related("organisation", "voice_preset")
        .filter(organisation__slug=org_slug, slug=avatar_slug, published=True)
        .first()
    )
