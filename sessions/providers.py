"""Wiring: the provider client for a session, built from its credential and the settings.

The only place that hands a provider its base URL and decrypted key; the clients themselves
never read settings or the database."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from avatars.models import Provider
from avatars.providers.base import AvatarProvider
from avatars.providers.heygen import HeyGenInteractive
from avatars.providers.http import timeouts
from sessions.models import AvatarSession
from systimz import errors
from systimz.orgs.crypto import DecryptionError
from systimz.orgs.models import ProviderCredential


def _timeouts() -> Any:
    return timeouts(
        connect=settings.PROVIDER_CONNECT_TIMEOUT_SECONDS,
        read=settings.PROVIDER_READ_TIMEOUT_SECONDS,
    )


def _api_key(credential: ProviderCredential) -> str:
    try:
        return credential.reveal_api_key()
    except DecryptionError as exc:
        # A key under a dropped encryption key, or a ciphertext moved from another row: a
        # conflict the organisation resolves by storing the key again, raised as our own error
        # so that a session admitted for it is closed at once and frees its slot.
        raise errors.Conflict(
            "A stored credential cannot be decrypted; store it again under provider-credentials/."
        ) from exc


def provider_for_credential(credential: ProviderCredential) -> AvatarProvider:
    """A client for a remote provider's key (HeyGen or LiveAvatar)."""
    if credential.provider == Provider.HEYGEN:
        return HeyGenInteractive(
            api_key=_api_key(credential),
            base_url=settings.HEYGEN_API_BASE,
            timeout=_timeouts(),
        )
    if credential.provider == Provider.LIVEAVATAR:
        from avatars.providers.liveavatar import LiveAvatar

        return LiveAvatar(
            api_key=_api_key(credential),
            base_url=settings.LIVEAVATAR_API_BASE,
            timeout=_timeouts(),
        )
    raise errors.Conflict(f"No client for {credential.provider} credentials.")


def provider_for(session: AvatarSession) -> AvatarProvider:
    """A client for the session's provider and key. Raises Conflict when the credential is
    gone (deleted since the session started)."""
    if session.provider == Provider.LOCAL:
        from avatars.providers.base import Voice
        from avatars.providers.local import LocalAvatar
        from sessions.local_media import local_engine

        media = session.media or {}
        voice = Voice(media.get("voice", ""), media.get("rate", 1.0), media.get("emotion"))
        return LocalAvatar(local_engine(), voice=voice if media else None)
    if session.provider in (Provider.HEYGEN, Provider.LIVEAVATAR):
        if session.credential is None:
            raise errors.Conflict(f"The session's {session.provider} credential no longer exists.")
        return provider_for_credential(session.credential)
    raise errors.Conflict(f"Sessions on the {session.provider} provider are not available.")
