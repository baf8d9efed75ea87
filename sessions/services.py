"""Writes for avatar sessions: admission, state changes and the event log.

Admission is decided in the database, atomically: the organisation's row is locked, its live
sessions (and the provider key's) are counted, and the ``starting`` row is inserted in the same
transaction, so concurrent starts can never pass a limit together, and a refused start reaches
no provider. The provider is called after that commit (two-phase); what follows changes the
row only through :func:`transition`, a compare-and-set on ``status`` and ``version``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from avatars.models import Avatar, Provider
from sessions.events import publish_after_commit
from sessions.models import LIVE_STATUSES, AvatarSession, SessionEvent
from sessions.usage import budget_left
from systimz import errors
from systimz.orgs.limits import TRIAL
from systimz.orgs.models import Organisation, Plan, ProviderCredential

log = logging.getLogger("systimz.sessions")

# How long a refused start should wait before trying again: a session ends at the earliest
# when someone stops it; a minute is an honest hint, not a promise.
CONCURRENCY_RETRY_AFTER_SECONDS = 60


def _credential_for(org: Organisation, provider: str) -> ProviderCredential | None:
    if provider == Provider.LOCAL:
        return None
    credential = ProviderCredential.objects.for_org(org).filter(provider=provider).first()
    if credential is None:
        raise errors.Conflict(
            f"The organisation has no {provider} credential; add one under provider-credentials/."
        )
    return credential


def _provider_key_cap(credential: ProviderCredential | None) -> int | None:
    """A trial provider key allows the provider's trial concurrency (3), whatever our plan."""
    if credential is not None and credential.plan == Plan.TRIAL:
        return TRIAL.concurrent_sessions
    return None


def session_admit(
    *,
    org: Organisation,
    avatar: Avatar,
    quality: str | None = None,
    end_user: str = "",
    embed_origin: str = "",
) -> AvatarSession:
    """Reserve a session for ``avatar`` within every limit, or raise 429 ``concurrency_limit``.

    Atomic under concurrency on PostgreSQL (the organisation row is locked for the count and
    the insert) and on SQLite (whose writers are serialised). Nothing is sent to a provider."""
    with transaction.atomic():
        locked = Organisation.objects.select_for_update().get(pk=org.pk)
        credential = _credential_for(locked, avatar.provider)
        live = AvatarSession.objects.for_org(locked).filter(status__in=LIVE_STATUSES)
        limit = locked.limits.concurrent_sessions
        if live.count() >= limit:
            raise errors.ConcurrencyLimit(
                f"The organisation runs {limit} session(s) at once, its limit.",
                retry_after=CONCURRENCY_RETRY_AFTER_SECONDS,
            )
        key_cap = _provider_key_cap(credential)
        if key_cap is not None and live.filter(credential=credential).count() >= key_cap:
            raise errors.ConcurrencyLimit(
                f"The {avatar.provider} key is a trial key: {key_cap} session(s) at once.",
                retry_after=CONCURRENCY_RETRY_AFTER_SECONDS,
            )
        left = budget_left(org=locked)
        if left is not None and left <= 0:
            raise errors.QuotaExceeded(
                f"The organisation has used its {locked.limits.monthly_minutes} minutes this "
                "month.",
                retry_after=seconds_to_next_month(),
            )
        session = AvatarSession.objects.create(
            organisation=locked,
            idle_timeout_seconds=locked.limits.idle_timeout_seconds,
            state_changed_at=timezone.now(),
            avatar=avatar,
            avatar_slug=avatar.slug,
            provider=avatar.provider,
            quality=quality or avatar.quality,
            credential=credential,
            end_user=end_user[:200],
            embed_origin=embed_origin[:300],
        )
        append_event(session, "session_state", {"status": session.status, "reason": None})
    log.info(
        "session.admitted org=%s session=%s provider=%s", org.slug, session.pk, session.provider
    )
    return session


def seconds_to_next_month() -> int:
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return max(int((following - now).total_seconds()), 1)


def transition(
    session: AvatarSession,
    *,
    from_statuses: Iterable[str],
    to_status: str,
    **fields: Any,
) -> bool:
    """Move ``session`` to ``to_status`` if it is still in one of ``from_statuses`` at the
    version this process last saw. True when this call made the change; False when another
    actor got there first (then nothing was written). Refreshes ``session`` either way."""
    updated = AvatarSession.objects.filter(
        pk=session.pk, status__in=list(from_statuses), version=session.version
    ).update(
        status=to_status,
        version=F("version") + 1,
        state_changed_at=timezone.now(),
        **fields,
    )
    session.refresh_from_db()
    return updated == 1


def append_event(
    session: AvatarSession,
    type_: str,
    payload: dict[str, Any],
    *,
    only_if: Iterable[str] | None = None,
) -> SessionEvent | None:
    """Append an event with the session's next ``seq``, allocated under the row's lock in the
    caller's transaction (or a new one). With ``only_if``, the event is appended only while
    the session's status is one of those (checked under the same lock), else None."""
    with transaction.atomic():
        row = (
            AvatarSession.objects.select_for_update().only("next_seq", "status").get(pk=session.pk)
        )
        if only_if is not None and row.status not in set(only_if):
            return None
        event = SessionEvent.objects.create(
            organisation_id=session.organisation_id,
            session_id=session.pk,
            seq=row.next_seq,
            type=type_,
            payload=payload,
        )
        AvatarSession.objects.filter(pk=session.pk).update(next_seq=F("next_seq") + 1)
        publish_after_commit(event)
    return event


def session_expiry(org: Organisation, started_at: datetime) -> datetime:
    """When a session started at ``started_at`` must end: the plan's session length."""
    return started_at + timedelta(seconds=org.limits.session_seconds)
