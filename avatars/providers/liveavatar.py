"""HeyGen LiveAvatar (``https://api.liveavatar.com``), as shared/heygen-protocol.md §5.2-5.3 and
§7 record it.

Two credentials. The API key goes in ``X-API-KEY`` on every call we make except
``/v1/sessions/start``, which takes the session token that ``/v1/sessions/token`` minted, as
``Authorization: Bearer``; that call goes through its own short-lived client, so the API key
never travels with it and the session token never sits in the long-lived client's headers.

Create is token + start. A LiveAvatar session only yields what the browser needs (the LiveKit
URL and client token) once it is started, and the Protocol's ``start`` returns nothing, so
``create`` mints the token *and* starts the session, and ``start`` is a no-op. Neither call is
ever resent once it may have arrived (only connect failures are retried): both cost money, and
a lost start answer cannot be fetched again. What a lost answer leaves behind (a minted token,
or a started session) is listed by ``list_active`` for the reconciler. When the provider
plainly refuses the start (it answered, and said no), the minted session is stopped at once.

Speak and interrupt are refused with ``ProviderInvalidRequest``. In FULL mode LiveAvatar has no
REST call for them: ``avatar.speak_text`` / ``avatar.speak_response`` / ``avatar.interrupt``
are LiveKit data messages on the ``agent-control`` topic, sent by a room participant (§5.3).
The ``ws_url`` WebSocket is LITE mode's, carries PCM audio, and refuses text ("Not permitted in
LITE mode"). So the browser, which is in the room, sends them. A server-side path would have to
join the room with ``livekit_agent_token``, which needs a LiveKit client this package lacks.

Envelope: ``{"code", "data", "message"}``. Success is ``code`` 100 (the docs) or 1000 (the web
SDK's ``SUCCESS_CODE``); which one the service really returns is unverified (§8), so both are
accepted. Failures are mapped by HTTP status and message text: LiveAvatar's numeric error codes
are not documented, and FastAPI's own ``{"detail": ...}`` bodies (422) are read as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from avatars.providers.base import (
    ActiveSession,
    ProviderSession,
    SessionRequest,
    SpeakMode,
    TaskResult,
)
from avatars.providers.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderConcurrencyLimit,
    ProviderConflict,
    ProviderError,
    ProviderInvalidRequest,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
)
from avatars.providers.http import ProviderHttp, RetryPolicy, parse_retry_after

log = logging.getLogger("systimz.providers")

SUCCESS_CODES = {100, 1000, "100", "1000", "SUCCESS", "success"}
QUALITY = {"high": "high", "medium": "medium", "low": "low"}  # ours -> video_settings.quality
SPEED_RANGE = (0.8, 1.2)  # voice_settings.speed, docs.liveavatar.com full-mode/voice-settings
PAGE_SIZE = 100  # the largest page_size the list accepts
MAX_PAGES = 50  # a bound on following pages, far above any key's concurrency cap
LIST_KEYS = ("results", "sessions", "items", "data")  # where a page may hold its sessions
InteractivityType = Literal["CONVERSATIONAL", "PUSH_TO_TALK"]

MEDIA_ROOM_ONLY = (
    "liveavatar: {what} goes over the media room's data channel (topic agent-control), "
    "not REST; the browser in the LiveKit room sends it"
)


def _message(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    message = body.get("message")
    if message:
        return str(message)
    detail = body.get("detail")  # FastAPI: a string, or a list of validation errors
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or "")


def _raise_for(status: int, headers: Mapping[str, str], body: Any) -> None:
    code = body.get("code") if isinstance(body, dict) else None
    message = _message(body)
    text = f"liveavatar: {message or f'HTTP {status}'}"
    kwargs: dict[str, Any] = {"status": status, "code": code}
    lowered = message.lower()
    # Before 429: a concurrency cap may come as a 429, and waiting does not free a slot.
    if "concurren" in lowered or "session limit" in lowered:
        raise ProviderConcurrencyLimit(text, **kwargs)
    if status == 429:
        raise ProviderRateLimited(text, retry_after=parse_retry_after(headers), **kwargs)
    if status >= 500:
        raise ProviderUnavailable(text, **kwargs)
    if status in (401, 403):
        raise ProviderAuthError(text, **kwargs)
    if "avatar" in lowered:  # an avatar it does not know is our bad request, even as a 404
        raise ProviderInvalidRequest(text, **kwargs)
    if status == 404 or "not found" in lowered:
        raise ProviderNotFound(text, **kwargs)
    if status == 409 or any(w in lowered for w in ("state wrong", "wrong state", "already")):
        raise ProviderConflict(text, **kwargs)
    if status in (400, 422):
        raise ProviderInvalidRequest(text, **kwargs)
    raise ProviderError(text, **kwargs)


def parse_envelope(status: int, headers: Mapping[str, str], body: Any) -> Any:
    """``data`` of a successful answer (code 100 or 1000), or the typed error it describes."""
    if status >= 300 or (isinstance(body, dict) and body.get("code") not in (None, *SUCCESS_CODES)):
        _raise_for(status, headers, body)
    if not isinstance(body, dict):
        raise ProviderBadResponse("liveavatar: expected a JSON object", status=status)
    return body.get("data")


def _require(data: Any, *names: str) -> dict[str, Any]:
    if not isinstance(data, dict) or any(not data.get(name) for name in names):
        raise ProviderBadResponse(f"liveavatar: the answer lacks {', '.join(names)}")
    return data


def _created_at(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _page(data: Any, page: int) -> tuple[list[Any], bool]:
    """The items of one list page, and whether another page follows.

    The docs show ``{"count", "results", "next", "previous"}`` (page-number pagination with a
    ``next`` link); the protocol notes leave the shape unverified, so a bare list, ``sessions``
    / ``items`` / ``data`` for the items and ``total`` / ``total_pages`` for the size are read
    too."""
    if isinstance(data, list):
        return data, False
    if not isinstance(data, dict):
        raise ProviderBadResponse("liveavatar: the session list is not an object")
    items = next((data[k] for k in LIST_KEYS if isinstance(data.get(k), list)), None)
    if items is None:
        raise ProviderBadResponse("liveavatar: the session list has no results")
    if "next" in data:
        return items, bool(data["next"])
    pages = data.get("total_pages")
    if isinstance(pages, int):
        return items, page < pages
    total = data.get("count", data.get("total"))
    size = data.get("page_size", PAGE_SIZE)
    if isinstance(total, int) and isinstance(size, int) and size > 0:
        return items, page * size < total
    return items, False


class _LentTransport(httpx.BaseTransport):
    """Lends an injected transport to a short-lived client without letting it close it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)


class LiveAvatar:
    """LiveAvatar's session API for one API key, in FULL mode (LiveAvatar runs STT, LLM, TTS)."""

    name = "liveavatar"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        interactivity_type: InteractivityType | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.retry = retry
        self.transport = transport
        self.sleep = sleep
        self.interactivity_type = interactivity_type
        self.http = self._http({"X-API-KEY": api_key})

    def _http(self, credential: dict[str, str]) -> ProviderHttp:
        extra = {"sleep": self.sleep} if self.sleep is not None else {}
        return ProviderHttp(
            provider=self.name,
            base_url=self.base_url,
            headers={**credential, "Accept": "application/json"},
            parse=parse_envelope,
            timeout=self.timeout,
            retry=self.retry,
            transport=_LentTransport(self.transport) if self.transport is not None else None,
            **extra,
        )

    def close(self) -> None:
        """Close the connections. An injected transport stays open: its owner closes it."""
        self.http.close()

    def _post(self, path: str, body: dict[str, Any], *, operation: str, idempotent: bool) -> Any:
        return self.http.call(
            "POST", path, operation=operation, idempotent=idempotent, json_body=body
        )

    def _token_body(self, request: SessionRequest) -> dict[str, Any]:
        """The ``/v1/sessions/token`` body for ``request``.

        Not sent, because LiveAvatar has no place for them: the voice's emotion, the idle
        timeout (the provider's own applies; keep-alive resets it) and an inline knowledge
        prompt (LiveAvatar takes knowledge only as a ``context_id`` made beforehand). The voice
        rate becomes ``voice_settings.speed``, clamped to LiveAvatar's 0.8-1.2."""
        body: dict[str, Any] = {
            "avatar_id": request.avatar_id,
            "mode": "FULL",
            # H264 as for HeyGen: VP8 gave iOS Safari no media (protocol notes §6.6).
            "video_settings": {"quality": QUALITY[request.quality], "encoding": "H264"},
        }
        persona: dict[str, Any] = {}
        if request.voice is not None:
            persona["voice_id"] = request.voice.voice_id
            low, high = SPEED_RANGE
            persona["voice_settings"] = {"speed": min(max(request.voice.rate, low), high)}
        if request.language:
            persona["language"] = request.language
        if request.knowledge_base_id:
            persona["context_id"] = request.knowledge_base_id
        if persona:
            body["avatar_persona"] = persona
        if request.max_duration_seconds is not None:
            body["max_session_duration"] = request.max_duration_seconds
        if self.interactivity_type is not None:
            body["interactivity_type"] = self.interactivity_type
        return body

    def create(self, request: SessionRequest) -> ProviderSession:
        """Mint a session token, then start the session: media is ready when this returns.

        Costs money. Neither call is resent once it may have arrived; a lost or timed-out
        answer raises ``ProviderUnavailable`` and leaves a session that ``list_active`` lists.
        A start the provider refused outright stops the minted session before raising."""
        minted = _require(
            self._post(
                "/v1/sessions/token",
                self._token_body(request),
                operation="create_token",
                idempotent=False,
            ),
            "session_id",
            "session_token",
        )
        session_id, session_token = str(minted["session_id"]), str(minted["session_token"])
        try:
            started = self._start(session_token, session_id)
        except ProviderError as exc:
            if not exc.retryable and not isinstance(exc, ProviderBadResponse):
                self._discard(session_id)  # it answered "no": nothing started, free the slot
            raise
        limit = started.get("max_session_duration")
        return ProviderSession(
            session_id=session_id,
            media={
                "kind": "livekit",
                "url": started["livekit_url"],
                "access_token": started["livekit_client_token"],
            },
            duration_limit_seconds=int(limit) if isinstance(limit, int | float) else None,
            extra={"session_token": session_token, "ws_url": started.get("ws_url")},
        )

    def _start(self, session_token: str, session_id: str) -> dict[str, Any]:
        # The session token is its own credential, so its own client (closed right after).
        http = self._http({"Authorization": f"Bearer {session_token}"})
        try:
            data = http.call(
                "POST",
                "/v1/sessions/start",
                operation="create_start",
                idempotent=False,  # billing starts; a resend is refused and loses the tokens
                json_body={"session_id": session_id},
            )
        finally:
            http.close()
        return _require(data, "livekit_url", "livekit_client_token")

    def _discard(self, session_id: str) -> None:
        try:
            self.stop(session_id)
        except ProviderError as exc:  # the reconciler finds it through list_active
            log.warning(
                "provider.discard provider=%s session=%s error=%s",
                self.name,
                session_id,
                type(exc).__name__,
            )

    def start(self, session_id: str) -> None:
        """Nothing to do: ``create`` already started the session, because only the start
        answer carries the LiveKit URL and token the browser needs. Makes no request."""

    def speak(self, session_id: str, text: str, mode: SpeakMode = "repeat") -> TaskResult:
        """Always raises ``ProviderInvalidRequest``: LiveAvatar speaks on a data-channel
        command from a room participant (``avatar.speak_text`` / ``avatar.speak_response``),
        not on a REST call. Makes no request."""
        raise ProviderInvalidRequest(MEDIA_ROOM_ONLY.format(what="speak"))

    def interrupt(self, session_id: str) -> None:
        """Always raises ``ProviderInvalidRequest`` (``avatar.interrupt`` is a data-channel
        command, as for ``speak``). Makes no request."""
        raise ProviderInvalidRequest(MEDIA_ROOM_ONLY.format(what="interrupt"))

    def keep_alive(self, session_id: str) -> None:
        """Reset LiveAvatar's idle timer. Idempotent, so retried on transient failures. An
        unknown session raises ``ProviderNotFound``; an ended one ``ProviderConflict``."""
        self._post(
            "/v1/sessions/keep-alive",
            {"session_id": session_id},
            operation="keep_alive",
            idempotent=True,
        )

    def stop(self, session_id: str) -> None:
        """End the session (reason ``USER_CLOSED``). Idempotent and retried on transient
        failures; a session LiveAvatar does not know, or has ended, counts as stopped."""
        try:
            self._post(
                "/v1/sessions/stop",
                {"session_id": session_id, "reason": "USER_CLOSED"},
                operation="stop",
                idempotent=True,
            )
        except (ProviderNotFound, ProviderConflict):
            return  # unknown or already ended: stopped, which is what was asked

    def list_active(self) -> list[ActiveSession]:
        """The key's active sessions (minted or started), every page of them. Pages are
        numbered, so a session ending mid-walk may shift another out of view: the reconciler
        runs again, and a repeated session is listed once."""
        found: dict[str, ActiveSession] = {}
        for page in range(1, MAX_PAGES + 1):
            data = self.http.call(
                "GET",
                "/v1/sessions",
                operation="list",
                idempotent=True,
                params={"type": "active", "page": page, "page_size": PAGE_SIZE},
            )
            items, more = _page(data, page)
            for item in items:
                ident = item.get("id", item.get("session_id")) if isinstance(item, dict) else None
                if not ident:
                    raise ProviderBadResponse("liveavatar: a listed session has no id")
                found.setdefault(
                    str(ident),
                    ActiveSession(
                        session_id=str(ident),
                        status=str(item.get("status") or "active"),
                        created_at=_created_at(item.get("created_at")),
                    ),
                )
            if not more or not items:
                break
        return list(found.values())
