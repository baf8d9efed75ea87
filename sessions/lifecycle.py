"""The life of a session at its provider: start, speak, interrupt, keep alive, stop.

No session is ever left running at a provider without a row that says so: the provider's
session id is written the moment ``create`` returns it, a start that fails after ``create``
stops what was created, and a stop that does not land is kept ``stop_pending`` for the reaper
to retry. Every state change is a compare-and-set (``services.transition``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from avatars.models import Avatar, ChatMode, Provider
from avatars.providers import errors as perrors
from avatars.providers.base import AvatarProvider, SessionRequest, SpeakMode, TaskResult, Voice
from knowledge.answerers import Turn
from knowledge.services import knowledge_ask
from sessions.models import LIVE_STATUSES, AvatarSession, CloseReason, SessionStatus
from sessions.providers import provider_for
from sessions.services import append_event, session_admit, session_expiry, transition
from sessions.usage import usage_record_close
from systimz import errors
from systimz.orgs.models import Organisation
from systimz.webhooks.services import webhook_emit

log = logging.getLogger("systimz.sessions")
STOP_RETRY_BASE_SECONDS = 10  # then 20, 40, ... up to 10 minutes between attempts
ProviderFactory = Callable[[AvatarSession], AvatarProvider]


def to_api_error(exc: perrors.ProviderError, action: str) -> errors.SystimzError:
    """A provider failure in the contract's words; never the key, never a stack trace."""
    where = f"The avatar provider could not {action}"
    if isinstance(exc, perrors.ProviderRateLimited):
        return errors.ProviderUnavailable(
            f"{where}: it is rate limiting us; retry shortly.",
        )
    if isinstance(exc, perrors.ProviderUnavailable):
        return errors.ProviderUnavailable(f"{where}: it is unreachable or failing ({exc.message}).")
    if isinstance(exc, perrors.ProviderConcurrencyLimit):
        return errors.ConcurrencyLimit(
            f"{where}: the provider key's own concurrent-session limit is reached.", retry_after=60
        )
    if isinstance(exc, perrors.ProviderAuthError):
        return errors.ProviderError(f"{where}: it refused the organisation's API key.")
    return errors.ProviderError(f"{where}: {exc.message}")


def session_request(avatar: Avatar, quality: str) -> SessionRequest:
    voice = avatar.voice_preset
    kb = avatar.knowledge_base
    prompt = None
    if avatar.chat_mode == "provider" and kb is not None and not avatar.provider_knowledge_id:
        from django.conf import settings

        from knowledge.prompt import provider_prompt

        prompt = provider_prompt(kb, max_chars=settings.PROVIDER_KNOWLEDGE_MAX_CHARS).prompt
    return SessionRequest(
        avatar_id=avatar.provider_avatar_id,
        quality=quality,  # type: ignore[arg-type]
        voice=Voice(voice.voice_id, voice.rate, voice.emotion) if voice else None,
        language=avatar.language,
        knowledge_base_id=avatar.provider_knowledge_id or None,
        knowledge_prompt=prompt,
        idle_timeout_seconds=avatar.organisation.limits.idle_timeout_seconds,
    )


def session_open(
    *,
    org: Organisation,
    avatar: Avatar,
    quality: str | None = None,
    end_user: str = "",
    embed_origin: str = "",
    factory: ProviderFactory = provider_for,
) -> AvatarSession:
    """Admit, then create and start the session at its provider. On any failure after the
    provider created a session, that session is stopped (or left ``stop_pending`` for the
    reaper) and ours is closed with reason ``error``; the caller gets 502/503."""
    session = session_admit(
        org=org, avatar=avatar, quality=quality, end_user=end_user, embed_origin=embed_origin
    )
    try:
        provider = factory(session)
    except errors.SystimzError as exc:
        _close(session, CloseReason.ERROR, failure=exc.message)  # frees the slot at once
        raise
    with closing(provider):
        return _open_at_provider(session, provider, org, avatar)


def _open_at_provider(
    session: AvatarSession, provider: AvatarProvider, org: Organisation, avatar: Avatar
) -> AvatarSession:
    try:
        created = provider.create(session_request(avatar, session.quality))
    except perrors.ProviderError as exc:
        _close(session, CloseReason.ERROR, failure=f"create failed: {type(exc).__name__}")
        raise to_api_error(exc, "create the session") from exc
    # Recorded before anything else can fail, so the provider session is never unaccounted for.
    recorded = transition(
        session,
        from_statuses=[SessionStatus.STARTING],
        to_status=SessionStatus.STARTING,
        provider_session_id=created.session_id,
        media=created.media,
    )
    if not recorded:  # stopped while the provider created it: its stop found nothing to stop
        _stop_unrecorded(session, provider, created.session_id)
        raise errors.Conflict("The session was stopped while it started.")
    try:
        provider.start(created.session_id)
    except perrors.ProviderError as exc:
        _stop_at_provider(session, provider)
        _close(session, CloseReason.ERROR, failure=f"start failed: {type(exc).__name__}")
        raise to_api_error(exc, "start the session") from exc
    now = timezone.now()
    started = transition(
        session,
        from_statuses=[SessionStatus.STARTING],
        to_status=SessionStatus.ACTIVE,
        started_at=now,
        last_activity_at=now,
        expires_at=session_expiry(org, now),
    )
    if not started:  # stopped by someone else while it started: do not leave it running
        _stop_at_provider(session, provider)
        raise errors.Conflict("The session was stopped while it started.")
    with transaction.atomic():
        append_event(session, "session_state", {"status": session.status, "reason": None})
        webhook_emit(org=org, type_="session.started", data=_session_data(session))
    session.refresh_from_db(fields=["next_seq"])
    log.info("session.started session=%s provider=%s", session.pk, session.provider)
    return session


def _stop_unrecorded(session: AvatarSession, provider: AvatarProvider, created_id: str) -> None:
    """Stop a provider session created for a row that another actor closed meanwhile. Its id
    goes on the row first (a plain write: the row's state and version are the closer's), so a
    stop that does not land is retried by the reaper like any other."""
    type(session).objects.filter(pk=session.pk, provider_session_id="").update(
        provider_session_id=created_id
    )
    session.refresh_from_db()
    if session.provider_session_id != created_id:  # cannot happen: one create per row
        log.error("session.create_unrecorded session=%s", session.pk)
        return
    if not _stop_at_provider(session, provider):
        log.warning("session.stopped_while_starting session=%s stop=pending", session.pk)


def _stop_at_provider(session: AvatarSession, provider: AvatarProvider) -> bool:
    """Stop the provider's session; on failure mark the row so the reaper retries."""
    if not session.provider_session_id:
        return True
    try:
        provider.stop(session.provider_session_id)
    except perrors.ProviderError as exc:
        log.warning("session.stop_failed session=%s error=%s", session.pk, type(exc).__name__)
        type(session).objects.filter(pk=session.pk).update(
            stop_pending=True, next_stop_attempt_at=timezone.now()
        )
        session.refresh_from_db()
        return False
    return True


def _close(session: AvatarSession, reason: str, *, failure: str = "") -> bool:
    """Close the row, write its usage (exactly once: the ledger's unique key) and its events
    and webhooks, all in one transaction; False if another actor closed it first."""
    with transaction.atomic():
        closed = transition(
            session,
            from_statuses=LIVE_STATUSES,
            to_status=SessionStatus.CLOSED,
            close_reason=reason,
            failure=failure,
            ended_at=timezone.now(),
        )
        if not closed:
            return False
        record = usage_record_close(session)
        append_event(session, "session_state", {"status": session.status, "reason": reason})
        usage = {
            "session_seconds": record.session_seconds,
            "billable_minutes": record.billable_minutes,
            "speaking_seconds": record.speaking_seconds,
            "tasks": record.tasks,
        }
        webhook_emit(
            org=session.organisation,
            type_="session.ended",
            data={**_session_data(session), "reason": reason, "usage": usage},
        )
        webhook_emit(
            org=session.organisation,
            type_="usage.recorded",
            data={"session_id": str(session.pk), "avatar": session.avatar_slug, **usage},
        )
    log.info("session.closed session=%s reason=%s", session.pk, reason)
    return True


def _session_data(session: AvatarSession) -> dict[str, Any]:
    return {
        "session_id": str(session.pk),
        "avatar": session.avatar_slug,
        "provider": session.provider,
        "quality": session.quality,
        "end_user": session.end_user,
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
    }


def session_stop(
    *,
    session: AvatarSession,
    reason: str = CloseReason.USER,
    factory: ProviderFactory = provider_for,
) -> AvatarSession:
    """Stop a session. Idempotent: a closed session is returned as it is. Exactly one of
    any number of concurrent callers closes it; the provider stop that fails is retried by
    the reaper (``stop_pending``)."""
    if session.status == SessionStatus.CLOSED:
        return session
    if not transition(
        session,
        from_statuses=[SessionStatus.STARTING, SessionStatus.ACTIVE],
        to_status=SessionStatus.STOPPING,
        close_reason=reason,
    ):
        return session  # another actor is stopping or has stopped it
    return session_finish_stop(session=session, factory=factory)


def session_finish_stop(
    *, session: AvatarSession, factory: ProviderFactory = provider_for
) -> AvatarSession:
    """Finish a session in ``stopping`` (its close reason already chosen): stop it at the
    provider, then close it with its usage. Safe to run twice or after a crash mid-way: the
    provider stop is idempotent and the close is a compare-and-set."""
    if session.status != SessionStatus.STOPPING:
        return session
    reason = session.close_reason or CloseReason.ERROR
    try:
        provider = factory(session)
    except errors.SystimzError as exc:  # the credential is gone: nothing can stop it now
        log.error("session.stop_impossible session=%s error=%s", session.pk, exc.message)
        _close(session, reason, failure=f"not stopped at the provider: {exc.message}")
        return session
    with closing(provider):
        stopped = _stop_at_provider(session, provider)
    _close(session, reason, failure="" if stopped else "provider stop pending")
    return session


def _live_provider(session: AvatarSession, factory: ProviderFactory) -> AvatarProvider:
    if session.status != SessionStatus.ACTIVE:
        raise errors.Conflict(f"The session is {session.status}.")
    return factory(session)


def _touch(session: AvatarSession) -> None:
    type(session).objects.filter(pk=session.pk).update(last_activity_at=timezone.now())


def _history(session: AvatarSession) -> list[Turn]:
    turns: list[Turn] = []
    for payload in (
        session.events.filter(type="task").order_by("seq").values_list("payload", flat=True)
    ):
        if payload.get("question"):
            turns.append(Turn("user", payload["question"]))
        turns.append(Turn("avatar", payload.get("text", "")))
    return turns[-12:]


def session_speak(
    *, session: AvatarSession, text: str, mode: SpeakMode, factory: ProviderFactory = provider_for
) -> TaskResult:
    """Make the avatar speak. ``repeat`` says ``text``. ``chat`` answers it: from the avatar's
    knowledge base with Systimz's answerer (the reply is spoken as a repeat task, so the
    provider's default persona never answers in its place), or, for an avatar set to
    provider-side chat, by the provider's own LLM."""
    if session.provider == Provider.LIVEAVATAR:
        raise errors.InvalidInput(
            "LiveAvatar sessions take speech from the player's media room, not from the API.",
            fields={"session": ["Speak through the player for LiveAvatar avatars."]},
        )
    provider_live = _live_provider(session, factory)
    avatar = session.avatar
    record: dict[str, Any] = {"text": text, "mode": mode}
    spoken, provider_mode = text, mode
    if mode == "chat" and (avatar is None or avatar.chat_mode != ChatMode.PROVIDER):
        kb = avatar.knowledge_base if avatar is not None else None
        if kb is None:
            provider_live.close()
            raise errors.InvalidInput(
                "This avatar has no knowledge base to chat from.",
                fields={"mode": ["No knowledge base."]},
            )
        # What the person said, in the record and on every player, before the answer.
        append_event(session, "user_talking_message", {"message": text, "source": "text"})
        append_event(session, "user_end_message", {})
        answer = knowledge_ask(
            kb=kb, question=text, history=_history(session), session_id=session.pk, source="session"
        )
        spoken, provider_mode = answer.text, "repeat"
        record = {
            "text": answer.text,
            "mode": mode,
            "question": text,
            "answered": answer.answered,
            "citations": [
                {"document": str(c.document), "title": c.title, "quote": c.quote}
                for c in answer.citations
            ],
        }
    with closing(provider_live) as provider:
        try:
            result = provider.speak(session.provider_session_id, spoken, provider_mode)
        except perrors.ProviderConflict as exc:
            raise errors.Conflict("The provider says the session is not running.") from exc
        except perrors.ProviderError as exc:
            raise to_api_error(exc, "speak") from exc
    _touch(session)
    append_event(session, "task", {"task_id": result.task_id, **record})
    return result


def session_control(
    *, session: AvatarSession, action: str, factory: ProviderFactory = provider_for
) -> None:
    """``interrupt`` or ``keep_alive``."""
    with closing(_live_provider(session, factory)) as provider:
        call: Any = provider.interrupt if action == "interrupt" else provider.keep_alive
        try:
            call(session.provider_session_id)
        except perrors.ProviderConflict as exc:
            raise errors.Conflict("The provider says the session is not running.") from exc
        except perrors.ProviderError as exc:
            raise to_api_error(exc, action.replace("_", " ")) from exc
    _touch(session)


def session_retry_stop(*, session: AvatarSession, factory: ProviderFactory = provider_for) -> bool:
    """Try again to stop, at the provider, a closed session whose stop did not land
    (``stop_pending``). True once it has landed (now or before). The reaper calls this until
    it does; the row was closed already, so usage is never counted twice."""
    if not session.stop_pending:
        return True
    claimed = (
        type(session)
        .objects.filter(pk=session.pk, stop_pending=True, stop_attempts=session.stop_attempts)
        .update(stop_attempts=F("stop_attempts") + 1)
    )
    if not claimed:  # another retrier got there first
        session.refresh_from_db()
        return not session.stop_pending
    session.refresh_from_db()
    with closing(factory(session)) as provider:
        try:
            provider.stop(session.provider_session_id)
        except perrors.ProviderError as exc:
            log.warning(
                "session.stop_retry_failed session=%s attempt=%s error=%s",
                session.pk,
                session.stop_attempts,
                type(exc).__name__,
            )
            delay = min(STOP_RETRY_BASE_SECONDS * 2 ** (session.stop_attempts - 1), 600)
            type(session).objects.filter(pk=session.pk).update(
                next_stop_attempt_at=timezone.now() + timedelta(seconds=delay),
                failure=f"provider stop pending ({session.stop_attempts} attempts)",
            )
            return False
    type(session).objects.filter(pk=session.pk).update(stop_pending=False, failure="")
    session.refresh_from_db()
    log.info("session.stop_landed session=%s attempts=%s", session.pk, session.stop_attempts)
    return True
