"""A HeyGen LiveAvatar emulator over real HTTP on loopback.

Behaves as shared/heygen-protocol.md §5.2 and §7 record, and the docs.liveavatar.com OpenAPI
pages show:

- ``POST /v1/sessions/token`` needs ``X-API-KEY`` (a session token as Bearer is refused: a
  session JWT cannot mint tokens) and answers ``{session_id, session_token}``; the session
  token is JWT-shaped, with ``start_session_data.mode`` in its payload as the web SDK reads it.
- ``POST /v1/sessions/start`` needs ``Authorization: Bearer <session token>`` and answers
  ``{session_id, livekit_url, livekit_client_token, livekit_agent_token,
  max_session_duration, ws_url}`` with LiveKit-shaped JWTs.
- ``POST /v1/sessions/keep-alive`` and ``/v1/sessions/stop`` take either credential;
  ``GET /v1/sessions?type=active|historic&page=&page_size=`` needs the key and pages as the
  docs show: ``{count, results: [{id, created_at, ...}], next, previous}``.
- Success is ``{"code": 100, "data", "message": "success"}`` on calls made with the API key
  and ``code`` 1000 on calls made with a session token: the docs say 100, the web SDK accepts
  only 1000 (§5.2, unverified which the service sends), so a client must take both.
- A null field counts as not given (§7). ``session_id`` must be a UUID and ``reason`` one of the
  documented stop reasons, else FastAPI's 422 ``{"detail": [...]}``.

State machine: ``minted`` (token) → ``started`` (start) → ``stopped`` (stop, idle timeout or
``max_session_duration``, on an injectable clock). Minted and started sessions both hold a
slot of the cap and are listed as active. Starting twice, or keeping alive a session that is
not started, is a wrong state; an unknown session id is not found.

LiveAvatar's numeric error codes and the HTTP status of a concurrency refusal are not
documented (§8). This emulator's own choices, with the message texts a client can key on:

========  ======  =================================================================
code      HTTP    when
========  ======  =================================================================
4000      400     a field value it does not accept
4010      401     no credential, an unknown API key or session token
4030      403     a session token where the API key is needed (minting a token)
4040      404     session not found
4041      404     avatar not found
4090      409     "session state wrong: <state>"
4290      429     "Concurrent session limit reached" (3 per trial key, 100 otherwise),
                  without Retry-After: waiting does not free a slot
4291      429     rate limited, with Retry-After (the ``rate_limited`` fault)
========  ======  =================================================================

The idle timeout (default 120 s) and the plan's longest session (trial 600 s, otherwise
3600 s; a longer ``max_session_duration`` is clamped) are LiveAvatar-unverified too.

Tell it to fail with :meth:`LiveAvatarEmulator.fail_next`, naming the operation as its path
after ``/v1/`` (``sessions/token``, ``sessions/start``, ``sessions/keep-alive``,
``sessions/stop``, ``sessions``): ``status`` (any HTTP status and body), ``unauthorized``,
``rate_limited`` (429 with Retry-After), ``hang`` (no answer for a while, then the call takes
effect), ``malformed`` (not JSON), ``lost`` (the call takes effect, the answer never comes).

By hand: ``python -m tests.emulators.liveavatar --port 8802 --key demo-key:trial`` and point
``LIVEAVATAR_API_BASE`` at ``http://127.0.0.1:8802``.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode

from tests.emulators.base import EmulatorBase, EmulatorHandler, Fault, Reply, parse_keys

TRIAL_CAP, ENTERPRISE_CAP = 3, 100
TRIAL_MAX_DURATION, ENTERPRISE_MAX_DURATION = 600, 3600
DEFAULT_IDLE_TIMEOUT = 120
DEFAULT_AVATARS = (
    "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a",
    "7b888024-f8c9-4205-95e1-78ce01497bda",
)
QUALITIES = {"very_high", "high", "medium", "low"}
ENCODINGS = {"VP8", "H264"}
MODES = {"FULL", "LITE"}
INTERACTIVITY = {"CONVERSATIONAL", "PUSH_TO_TALK"}
SPEED_RANGE = (0.8, 1.2)
STOP_REASONS = {
    "UNKNOWN",
    "USER_DISCONNECTED",
    "SERVER_ERROR",
    "IDLE_TIMEOUT",
    "NO_CREDITS",
    "USER_CLOSED",
    "AVATAR_DELETED",
    "MAX_DURATION_REACHED",
    "ZOMBIE_SESSION_REAP",
    "AGENT_HANG_UP",
}

ERR_INVALID, ERR_UNAUTHORIZED, ERR_FORBIDDEN = 4000, 4010, 4030
ERR_SESSION_NOT_FOUND, ERR_AVATAR_NOT_FOUND, ERR_WRONG_STATE = 4040, 4041, 4090
ERR_CONCURRENCY, ERR_RATE_LIMITED = 4290, 4291


@dataclass
class Session:
    session_id: str
    api_key: str
    token: str
    avatar_id: str
    body: dict[str, Any]
    created_at: float
    last_activity: float
    max_duration: int
    status: str = "minted"
    started_at: float | None = None
    ended_at: float | None = None
    stop_reason: str | None = None


@dataclass(frozen=True)
class Caller:
    api_key: str
    session: Session | None = None  # set when the caller came with a session token


def _jwt(claims: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.{secrets.token_urlsafe(32)}"


def _error(status: int, code: int, message: str) -> tuple[int, Any]:
    return status, {"code": code, "data": None, "message": message}


def _invalid(field: str, message: str) -> tuple[int, Any]:
    return 422, {"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]}


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class LiveAvatarEmulator(EmulatorBase):
    def __init__(
        self,
        *,
        keys: dict[str, str] | None = None,
        avatars: tuple[str, ...] = DEFAULT_AVATARS,
        clock: Callable[[], float] = time.time,
        idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
        page_size_limit: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            keys=keys or {"test-liveavatar-key": "trial"},
            avatars=avatars,
            clock=clock,
            host=host,
            port=port,
        )
        self.idle_timeout = idle_timeout
        self.page_size_limit = page_size_limit  # the most a page holds, whatever was asked
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, str] = {}  # session token -> session id

    # --- control ------------------------------------------------------------------------

    def active(self, api_key: str | None = None) -> list[Session]:
        """Sessions holding a slot (minted or started), for ``api_key`` or every key."""
        with self.lock:
            self._expire()
            return [
                s
                for s in self.sessions.values()
                if s.status != "stopped" and (api_key is None or s.api_key == api_key)
            ]

    # --- behaviour ----------------------------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        for s in self.sessions.values():
            if s.status == "stopped":
                continue
            if now - s.last_activity > self.idle_timeout:
                self._end(s, "IDLE_TIMEOUT", now)
            elif s.started_at is not None and now - s.started_at > s.max_duration:
                self._end(s, "MAX_DURATION_REACHED", now)

    @staticmethod
    def _end(session: Session, reason: str, now: float) -> None:
        session.status, session.stop_reason, session.ended_at = "stopped", reason, now

    def _trial(self, api_key: str) -> bool:
        return self.keys.get(api_key) == "trial"

    def caller(self, api_key: str | None, bearer: str | None) -> Caller | None:
        """Who is calling: a known API key, or a session token (standing for its key)."""
        if api_key is not None:
            return Caller(api_key) if api_key in self.keys else None
        session = self.sessions.get(self.tokens.get(bearer or "", ""))
        return Caller(session.api_key, session) if session is not None else None

    def handle(
        self, operation: str, caller: Caller, body: dict[str, Any], query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        with self.lock:
            self._expire()
            if operation == "sessions/token":
                if caller.session is not None:
                    return _error(403, ERR_FORBIDDEN, "A session token cannot mint a token")
                return self._token(caller.api_key, body)
            if operation == "sessions":
                if caller.session is not None:
                    return _error(403, ERR_FORBIDDEN, "Listing sessions needs the API key")
                return self._list(caller.api_key, query)
            if operation in {"sessions/start", "sessions/keep-alive", "sessions/stop"}:
                return self._on_session(operation, caller, body)
            return 404, {"detail": "Not Found"}

    def _ok(self, caller: Caller, data: Any) -> tuple[int, Any]:
        return 200, {
            "code": 1000 if caller.session is not None else 100,
            "data": data,
            "message": "success",
        }

    def _token(self, api_key: str, body: dict[str, Any]) -> tuple[int, Any]:
        checked = self._check_token_body(body)
        if checked is not None:
            return checked
        live = [s for s in self.sessions.values() if s.api_key == api_key and s.status != "stopped"]
        if len(live) >= (TRIAL_CAP if self._trial(api_key) else ENTERPRISE_CAP):
            return _error(429, ERR_CONCURRENCY, "Concurrent session limit reached")
        plan_limit = TRIAL_MAX_DURATION if self._trial(api_key) else ENTERPRISE_MAX_DURATION
        asked = body.get("max_session_duration")
        now = self.clock()
        session_id = str(uuid.uuid4())
        mode = body.get("mode") or "FULL"
        token = _jwt(
            {
                "sub": session_id,
                "session_id": session_id,
                "start_session_data": {"mode": mode},
                "iat": int(now),
                "exp": int(now) + 3600,
            }
        )
        self.sessions[session_id] = Session(
            session_id=session_id,
            api_key=api_key,
            token=token,
            avatar_id=str(body["avatar_id"]),
            body=body,
            created_at=now,
            last_activity=now,
            max_duration=min(int(asked), plan_limit) if asked is not None else plan_limit,
        )
        self.tokens[token] = session_id
        return 200, {
            "code": 100,
            "data": {"session_id": session_id, "session_token": token},
            "message": "success",
        }

    def _check_token_body(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        avatar = body.get("avatar_id")
        if avatar is None:
            return _invalid("avatar_id", "Field required")
        if avatar not in self.avatars:
            return _error(404, ERR_AVATAR_NOT_FOUND, "avatar not found")
        if (body.get("mode") or "FULL") not in MODES:
            return _error(400, ERR_INVALID, "mode must be FULL or LITE")
        video = body.get("video_settings") or {}
        if video.get("quality") not in (None, *QUALITIES):
            return _error(400, ERR_INVALID, f"invalid video quality: {video['quality']}")
        if video.get("encoding") not in (None, *ENCODINGS):
            return _error(400, ERR_INVALID, f"invalid video encoding: {video['encoding']}")
        persona = body.get("avatar_persona") or {}
        speed = (persona.get("voice_settings") or {}).get("speed")
        if speed is not None and not SPEED_RANGE[0] <= float(speed) <= SPEED_RANGE[1]:
            return _error(400, ERR_INVALID, "voice_settings.speed must be between 0.8 and 1.2")
        if body.get("interactivity_type") not in (None, *INTERACTIVITY):
            return _error(400, ERR_INVALID, "invalid interactivity_type")
        duration = body.get("max_session_duration")
        if duration is not None and (not isinstance(duration, int) or duration <= 0):
            return _invalid("max_session_duration", "Input should be a positive integer")
        return None

    def _list(self, api_key: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        kind = (query.get("type") or [None])[0]
        if kind not in {"active", "historic"}:
            return 422, {"detail": [{"loc": ["query", "type"], "msg": "Field required"}]}
        try:
            page = int((query.get("page") or ["1"])[0])
            size = int((query.get("page_size") or ["20"])[0])
        except ValueError:
            return 422, {"detail": [{"loc": ["query", "page"], "msg": "Input should be int"}]}
        if page < 1 or not 1 <= size <= 100:
            return 422, {"detail": [{"loc": ["query", "page_size"], "msg": "Out of range"}]}
        size = min(size, self.page_size_limit)
        mine = sorted(
            (
                s
                for s in self.sessions.values()
                if s.api_key == api_key and (s.status == "stopped") == (kind == "historic")
            ),
            key=lambda s: s.created_at,
        )
        chunk = mine[(page - 1) * size : page * size]

        def link(to: int) -> str:
            query = urlencode({"type": kind, "page": to, "page_size": size})
            return f"{self.base_url}/v1/sessions?{query}"

        now = self.clock()
        results = [
            {
                "id": s.session_id,
                "created_at": datetime.fromtimestamp(s.created_at, tz=UTC).isoformat(),
                "updated_at": datetime.fromtimestamp(s.last_activity, tz=UTC).isoformat(),
                "duration": int((s.ended_at or now) - (s.started_at or s.created_at)),
                "source": "API",
                "mode": s.body.get("mode") or "FULL",
                "is_sandbox": bool(s.body.get("is_sandbox")),
                "credits_consumed": 0,
            }
            for s in chunk
        ]
        return 200, {
            "code": 100,
            "data": {
                "count": len(mine),
                "results": results,
                "next": link(page + 1) if page * size < len(mine) else None,
                "previous": link(page - 1) if page > 1 else None,
            },
            "message": "success",
        }

    def _on_session(self, operation: str, caller: Caller, body: dict[str, Any]) -> tuple[int, Any]:
        if operation == "sessions/start" and caller.session is None:
            return _error(401, ERR_UNAUTHORIZED, "Starting a session needs its session token")
        wanted = body.get("session_id")
        if wanted is not None and not _is_uuid(wanted):
            return _invalid("session_id", "Input should be a valid UUID")
        if caller.session is not None:
            session: Session | None = caller.session
            if wanted is not None and str(wanted) != caller.session.session_id:
                return _error(403, ERR_FORBIDDEN, "The session token is for another session")
        elif wanted is None:
            return _invalid("session_id", "session_id is required with an API key")
        else:
            session = self.sessions.get(str(wanted))
            if session is not None and session.api_key != caller.api_key:
                session = None
        if session is None:
            return _error(404, ERR_SESSION_NOT_FOUND, "session not found")
        now = self.clock()
        if operation == "sessions/stop":
            reason = body.get("reason") or "UNKNOWN"
            if reason not in STOP_REASONS:
                return _invalid("reason", f"Input should be one of {sorted(STOP_REASONS)}")
            if session.status == "stopped":
                return self._wrong_state(session)
            self._end(session, reason, now)
            return self._ok(caller, None)
        if operation == "sessions/start":
            if session.status != "minted":
                return self._wrong_state(session)
            session.status, session.started_at, session.last_activity = "started", now, now
            return self._ok(caller, self._room(session))
        if session.status != "started":  # keep-alive
            return self._wrong_state(session)
        session.last_activity = now
        return self._ok(caller, None)

    def _room(self, session: Session) -> dict[str, Any]:
        room, exp = session.session_id, int(self.clock()) + session.max_duration

        def grant(identity: str) -> str:
            return _jwt(
                {
                    "video": {"room": room, "roomJoin": True, "canPublishData": True},
                    "sub": identity,
                    "exp": exp,
                }
            )

        return {
            "session_id": session.session_id,
            "livekit_url": "wss://emulated-liveavatar.livekit.cloud",
            "livekit_client_token": grant(f"user-{room}"),
            "livekit_agent_token": grant(f"liveavatar-agent-{room}"),
            "max_session_duration": session.max_duration,
            "ws_url": f"wss://emulated-liveavatar.example/v1/ws/{room}",
        }

    @staticmethod
    def _wrong_state(session: Session) -> tuple[int, Any]:
        return _error(409, ERR_WRONG_STATE, f"session state wrong: {session.status}")

    # --- HTTP ---------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(EmulatorHandler):
            def operation(self, path: str) -> str:
                return path.removeprefix("/v1/").rstrip("/")

            def bad_body(self, body: Any) -> Reply | None:
                if not isinstance(body, dict):
                    detail = [{"loc": ["body"], "msg": "JSON object expected"}]
                    return 422, {"detail": detail}, None
                return None

            def caller(self) -> Caller | None:
                auth = self.headers.get("Authorization", "")
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                return emulator.caller(self.headers.get("X-API-KEY"), bearer)

            def refusal(self, kind: str, fault: Fault | None = None) -> Reply:
                if kind == "unauthorized":
                    message = "Invalid API key" if fault else "Invalid API key or session token"
                    return (*_error(401, ERR_UNAUTHORIZED, message), None)
                if kind == "rate_limited":
                    retry_after = str(fault.retry_after if fault else 1.0)
                    return (
                        *_error(429, ERR_RATE_LIMITED, "Rate limit exceeded"),
                        {"Retry-After": retry_after},
                    )
                assert fault is not None
                body = fault.body
                if body is None:
                    body = {"code": fault.status, "data": None, "message": "Internal error"}
                return fault.status, body, None

        Handler.emulator = emulator
        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="HeyGen LiveAvatar emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--key", action="append", default=[], help="API key[:trial|enterprise]")
    parser.add_argument("--idle-timeout", type=int, default=DEFAULT_IDLE_TIMEOUT)
    args = parser.parse_args()
    keys = parse_keys(args.key, "demo-liveavatar-key")
    emulator = LiveAvatarEmulator(
        keys=keys, host=args.host, port=args.port, idle_timeout=args.idle_timeout
    )
    print(f"LiveAvatar emulator on {emulator.base_url}, keys: {', '.join(keys)}")  # noqa: T201
    print(f"avatars: {', '.join(sorted(emulator.avatars))}")  # noqa: T201
    emulator.server.serve_forever()


if __name__ == "__main__":
    main()
