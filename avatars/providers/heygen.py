"""HeyGen Interactive Avatar (``/v1/streaming.*``), as shared/heygen-protocol.md §1-3 records it.

Success is HTTP 200 with ``{"code": 100, "message": "success", "data": {...}}``; failures are
non-2xx with ``{"code": <int>, "message": "<text>"}``. The key goes in ``X-Api-Key``. Field
names are the documented ones (``avatar_id``, ``knowledge_base_id``); emotions are sent in the
documented capitalised spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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

SUCCESS_CODES = {100, "100", "SUCCESS", "success"}
AUTH_CODES = {400112, 40009}
WRONG_STATE_CODES = {10001, 10002, 10003, 10004, 10005}
SESSION_NOT_FOUND = 10006
CONCURRENCY_CODES = {10007, 10014, 10015}
AVATAR_CODES = {10003, 10012, 10013, 400014}
RATE_LIMIT_CODES = {400123}
STARTED_CODES = {10002, 10003}  # "session state wrong: connecting" / "... connected"
STATE_WRONG = re.compile(r"state wrong:\s*(\w+)", re.IGNORECASE)


def _raise_for(status: int, headers: Mapping[str, str], body: Any) -> None:
    code = body.get("code") if isinstance(body, dict) else None
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    text = f"heygen: {message or f'HTTP {status}'}"
    kwargs: dict[str, Any] = {"status": status, "code": code}
    lowered = message.lower()
    if status == 429 or code in RATE_LIMIT_CODES:
        raise ProviderRateLimited(text, retry_after=parse_retry_after(headers), **kwargs)
    if status >= 500:
        raise ProviderUnavailable(text, **kwargs)
    if status in (401, 403) or code in AUTH_CODES:
        raise ProviderAuthError(text, **kwargs)
    if code in CONCURRENCY_CODES or "concurrent" in lowered:
        raise ProviderConcurrencyLimit(text, **kwargs)
    if code == SESSION_NOT_FOUND or "session not found" in lowered:
        raise ProviderNotFound(text, **kwargs)
    if "state wrong" in lowered or (code in WRONG_STATE_CODES and "avatar" not in lowered):
        raise ProviderConflict(text, **kwargs)
    if code in AVATAR_CODES or "avatar" in lowered:
        raise ProviderInvalidRequest(text, **kwargs)
    raise ProviderError(text, **kwargs)


def parse_envelope(status: int, headers: Mapping[str, str], body: Any) -> Any:
    """``data`` of a successful answer, or the typed error the answer describes."""
    if status >= 300 or (isinstance(body, dict) and body.get("code") not in (None, *SUCCESS_CODES)):
        _raise_for(status, headers, body)
    if not isinstance(body, dict):
        raise ProviderBadResponse("heygen: expected a JSON object", status=status)
    return body.get("data")


def _already_started(exc: ProviderConflict) -> bool:
    """Whether a refused start says the session is connecting or connected already."""
    match = STATE_WRONG.search(exc.message)
    if match is not None:
        return match.group(1).lower() in {"connecting", "connected"}
    return exc.code in STARTED_CODES


def _require(data: Any, *names: str) -> dict[str, Any]:
    if not isinstance(data, dict) or any(name not in data for name in names):
        raise ProviderBadResponse(f"heygen: the answer lacks {', '.join(names)}")
    return data


class HeyGenInteractive:
    """The Interactive Avatar streaming API for one API key."""

    name = "heygen"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = ProviderHttp(
            provider=self.name,
            base_url=base_url,
            headers={"X-Api-Key": api_key, "Accept": "application/json"},
            parse=parse_envelope,
            timeout=timeout,
            retry=retry,
            transport=transport,
            **extra,
        )

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any], *, operation: str, idempotent: bool) -> Any:
        return self.http.call(
            "POST", path, operation=operation, idempotent=idempotent, json_body=body
        )

    def create(self, request: SessionRequest) -> ProviderSession:
        body: dict[str, Any] = {
            "avatar_id": request.avatar_id,
            "quality": request.quality,
            "version": "v2",
            "video_encoding": "H264",
        }
        if request.voice is not None:
            voice: dict[str, Any] = {"voice_id": request.voice.voice_id, "rate": request.voice.rate}
            if request.voice.emotion:
                voice["emotion"] = request.voice.emotion.capitalize()
            body["voice"] = voice
        if request.language:
            body["language"] = request.language
        if request.knowledge_base_id:
            body["knowledge_base_id"] = request.knowledge_base_id
        elif request.knowledge_prompt:
            body["knowledge_base"] = request.knowledge_prompt
        if request.idle_timeout_seconds is not None:
            body["activity_idle_timeout"] = request.idle_timeout_seconds
        data = _require(
            self._post("/v1/streaming.new", body, operation="create", idempotent=False),
            "session_id",
            "url",
            "access_token",
        )
        limit = data.get("session_duration_limit")
        return ProviderSession(
            session_id=str(data["session_id"]),
            media={"kind": "livekit", "url": data["url"], "access_token": data["access_token"]},
            duration_limit_seconds=int(limit) if isinstance(limit, int | float) else None,
            extra={"is_paid": data.get("is_paid")},
        )

    def start(self, session_id: str) -> None:
        """Start (connect) a new session. Starting twice is refused as a wrong state, so a lost
        answer is safe to resend; and a resend refused because the session is already
        connecting or connected means the first start landed: started, which was asked."""
        try:
            self._post(
                "/v1/streaming.start",
                {"session_id": session_id},
                operation="start",
                idempotent=True,
            )
        except ProviderConflict as exc:
            if not _already_started(exc):
                raise

    def speak(self, session_id: str, text: str, mode: SpeakMode = "repeat") -> TaskResult:
        body = {"session_id": session_id, "text": text, "task_type": mode, "task_mode": "async"}
        data = _require(
            self._post("/v1/streaming.task", body, operation="speak", idempotent=False), "task_id"
        )
        duration = data.get("duration_ms")
        return TaskResult(
            task_id=str(data["task_id"]),
            duration_ms=float(duration) if isinstance(duration, int | float) else None,
        )

    def interrupt(self, session_id: str) -> None:
        self._post(
            "/v1/streaming.interrupt",
            {"session_id": session_id},
            operation="interrupt",
            idempotent=True,
        )

    def keep_alive(self, session_id: str) -> None:
        self._post(
            "/v1/streaming.keep_alive",
            {"session_id": session_id},
            operation="keep_alive",
            idempotent=True,
        )

    def stop(self, session_id: str) -> None:
        try:
            self._post(
                "/v1/streaming.stop", {"session_id": session_id}, operation="stop", idempotent=True
            )
        except (ProviderNotFound, ProviderConflict):
            return  # unknown or already closed: stopped, which is what was asked

    def list_active(self) -> list[ActiveSession]:
        data = self.http.call("GET", "/v1/streaming.list", operation="list", idempotent=True)
        sessions = _require(data, "sessions")["sessions"]
        if not isinstance(sessions, list):
            raise ProviderBadResponse("heygen: sessions is not a list")
        active = []
        for item in sessions:
            if not isinstance(item, dict) or "session_id" not in item:
                raise ProviderBadResponse("heygen: a listed session has no session_id")
            created = item.get("created_at")
            active.append(
                ActiveSession(
                    session_id=str(item["session_id"]),
                    status=str(item.get("status", "")),
                    created_at=datetime.fromtimestamp(created, tz=UTC)
                    if isinstance(created, int | float)
                    else None,
                )
            )
        return active
