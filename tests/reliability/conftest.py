"""Shared by the ledger, worker and outbox reliability tests (T1-T5, T12, T13): skips for the
services they need, and a HeyGen emulator that counts the stops that changed a session's state.

Other reliability helpers keep their own fixtures in their own modules; keep this file small."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from sessions.models import AvatarSession
from systimz.orgs.models import Organisation, ProviderCredential
from tests import factories
from tests.emulators.heygen import HeyGenEmulator, Session

KEY = "hg-reliability-key-0123456789"
AVATAR_ID = "Anna_public_3_20240108"

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent writers and row locks need PostgreSQL"
)
needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


class CountingHeyGen(HeyGenEmulator):
    """The HeyGen emulator, also counting per provider session the ``streaming.stop`` calls
    that changed its state (``connected → closed``); later stops are the provider's no-ops."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_changing_stops: Counter[str] = Counter()
        self.stop_calls: Counter[str] = Counter()

    def _on_session(self, operation: str, session: Session, body: dict[str, Any]) -> Any:
        if operation == "streaming.stop":
            self.stop_calls[session.session_id] += 1
            if session.status != "closed":
                self.state_changing_stops[session.session_id] += 1
        return super()._on_session(operation, session, body)

    def open_session(self) -> str:
        """A running provider session made directly (no HTTP): the cheap way to set up
        thousands of sessions that the code under test must then stop."""
        now = self.clock()
        session_id = str(uuid.uuid4())
        with self.lock:
            self.sessions[session_id] = Session(
                session_id=session_id,
                api_key=KEY,
                avatar_id=AVATAR_ID,
                body={},
                created_at=now,
                last_activity=now,
                idle_timeout=10**9,  # the emulator must not end them on its own clock
                duration_limit=10**9,
                status="connected",
            )
        return session_id


@pytest.fixture
def heygen(settings) -> Iterator[CountingHeyGen]:
    emulator = CountingHeyGen(keys={KEY: "enterprise"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


def heygen_avatar(org: Organisation) -> tuple[Any, ProviderCredential]:
    credential = factories.ProviderCredentialFactory(
        organisation=org, provider="heygen", api_key=KEY, plan="enterprise"
    )
    avatar = factories.AvatarFactory(
        organisation=org, slug="anna", provider="heygen", provider_avatar_id=AVATAR_ID
    )
    return avatar, credential


def active_session(
    *,
    org: Organisation,
    avatar: Any,
    credential: ProviderCredential,
    provider_session_id: str,
    started_at: datetime,
    expires_at: datetime,
    last_activity_at: datetime | None = None,
    idle_timeout_seconds: int = 3600,
) -> AvatarSession:
    """An ``active`` session row as ``session_open`` leaves it, with the given times."""
    return AvatarSession.objects.create(
        organisation=org,
        avatar=avatar,
        avatar_slug=avatar.slug,
        provider="heygen",
        quality="medium",
        credential=credential,
        provider_session_id=provider_session_id,
        status="active",
        started_at=started_at,
        last_activity_at=last_activity_at or started_at,
        expires_at=expires_at,
        idle_timeout_seconds=idle_timeout_seconds,
        state_changed_at=started_at,
    )
