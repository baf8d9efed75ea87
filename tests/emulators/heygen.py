"""A HeyGen Interactive Avatar emulator over real HTTP on loopback.

Behaves as shared/heygen-protocol.md §1-3 and §7 record: the ``{code, message, data}``
envelope, ``X-Api-Key`` (or a session token as Bearer), the trial cap of 3 concurrent sessions
per key (100 for enterprise keys) with code 10007, the state machine
``new → connected → closed`` (``start`` connects: no LiveKit client is emulated) with
"session state wrong: <state>" and "session not found", LiveKit-shaped ``url`` and
``access_token``, idle timeout and duration limit on an injectable clock, and the avatar
events a task would put on the data channel (recorded per session).

Tell it to fail with :meth:`HeyGenEmulator.fail_next`: ``status`` (any HTTP status and body),
``unauthorized``, ``rate_limited`` (429 with Retry-After), ``hang`` (no answer for a while),
``malformed`` (not JSON), ``lost`` (the call takes effect, the answer never comes).

By hand: ``python -m tests.emulators.heygen --port 8801 --key demo-key:trial`` and point
``HEYGEN_API_BASE`` at ``http://127.0.0.1:8801``.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.emulators.base import EmulatorBase, EmulatorHandler, Fault, Reply, parse_keys

TRIAL_CAP, ENTERPRISE_CAP = 3, 100
DEFAULT_AVATARS = ("Wayne_20240711", "Anna_public_3_20240108", "Santa_Fireplace_Front_public")
EMOTIONS = {"excited", "serious", "friendly", "soothing", "broadcaster"}
WORDS_PER_SECOND = 2.5


@dataclass
class Session:
    session_id: str
    api_key: str
    avatar_id: str
    body: dict[str, Any]
    created_at: float
    last_activity: float
    idle_timeout: int
    duration_limit: int
    status: str = "new"
    events: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)


def _livekit_jwt(session_id: str) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims = {
        "video": {"room": session_id, "roomJoin": True},
        "sub": "client",
        "exp": 2_000_000_000,
    }
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}.{secrets.token_urlsafe(32)}"


class HeyGenEmulator(EmulatorBase):
    def __init__(
        self,
        *,
        keys: dict[str, str] | None = None,
        avatars: tuple[str, ...] = DEFAULT_AVATARS,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            keys=keys or {"test-heygen-key": "trial"},
            avatars=avatars,
            clock=clock,
            host=host,
            port=port,
        )
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, str] = {}  # session token -> api key (unused tokens only)

    # --- control ------------------------------------------------------------------------

    def active(self, api_key: str | None = None) -> list[Session]:
        with self.lock:
            self._expire()
            return [
                s
                for s in self.sessions.values()
                if s.status != "closed" and (api_key is None or s.api_key == api_key)
            ]

    # --- behaviour ----------------------------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        for s in self.sessions.values():
            if s.status == "closed":
                continue
            if now - s.last_activity > s.idle_timeout or now - s.created_at > s.duration_limit:
                s.status = "closed"

    def _cap(self, api_key: str) -> int:
        return TRIAL_CAP if self.keys.get(api_key) == "trial" else ENTERPRISE_CAP

    def handle(
        self, operation: str, api_key: str, body: dict[str, Any], query: dict[str, Any]
    ) -> tuple[int, Any]:
        with self.lock:
            self._expire()
            if operation == "streaming.create_token":
                token = base64.b64encode(
                    json.dumps(
                        {
                            "token": secrets.token_hex(16),
                            "token_type": "sa_from_trial",
                            "created_at": int(self.clock()),
                        }
                    ).encode()
                ).decode()
                self.tokens[token] = api_key
                return 200, {"error": None, "data": {"token": token}}
            if operation == "streaming.new":
                return self._new(api_key, body)
            if operation == "streaming.list":
                sessions = [
                    {
                        "session_id": s.session_id,
                        "status": s.status,
                        "created_at": int(s.created_at),
                    }
                    for s in self.sessions.values()
                    if s.api_key == api_key and s.status != "closed"
                ]
                return 200, self._ok({"sessions": sessions})
            session = self.sessions.get(str(body.get("session_id")))
            if session is None or session.api_key != api_key:
                return 400, {"code": 10006, "message": "session not found"}
            return self._on_session(operation, session, body)

    @staticmethod
    def _ok(data: Any) -> dict[str, Any]:
        return {"code": 100, "message": "success", "data": data}

    def _new(self, api_key: str, body: dict[str, Any]) -> tuple[int, Any]:
        avatar = body.get("avatar_id") or body.get("avatar_name")
        if avatar not in self.avatars:
            return 400, {"code": 10013, "message": "avatar not found"}
        voice = body.get("voice") or {}
        emotion = voice.get("emotion")
        if emotion is not None and str(emotion).lower() not in EMOTIONS:
            return 400, {"code": 400, "message": f"invalid emotion: {emotion}"}
        rate = voice.get("rate")
        if rate is not None and not 0.5 <= float(rate) <= 1.5:
            return 400, {"code": 400, "message": "rate must be between 0.5 and 1.5"}
        idle = body.get("activity_idle_timeout")
        idle = 120 if idle is None else int(idle)
        if not 30 <= idle <= 3600:
            return 400, {"code": 400, "message": "activity_idle_timeout must be 30..3600"}
        live = [s for s in self.sessions.values() if s.api_key == api_key and s.status != "closed"]
        if len(live) >= self._cap(api_key):
            return 400, {"code": 10007, "message": "Concurrent limit reached"}
        now = self.clock()
        trial = self.keys.get(api_key) == "trial"
        session = Session(
            session_id=str(uuid.uuid1()),
            api_key=api_key,
            avatar_id=str(avatar),
            body=body,
            created_at=now,
            last_activity=now,
            idle_timeout=idle,
            duration_limit=600 if trial else 3600,
        )
        self.sessions[session.session_id] = session
        return 200, self._ok(
            {
                "session_id": session.session_id,
                "url": "wss://emulated-heygen.livekit.cloud",
                "access_token": _livekit_jwt(session.session_id),
                "livekit_agent_token": _livekit_jwt(session.session_id),
                "realtime_endpoint": f"ws://127.0.0.1/v1-alpha/realtime/{session.session_id}",
                "session_duration_limit": session.duration_limit,
                "is_paid": not trial,
                "sdp": None,
                "ice_servers": None,
                "ice_servers2": None,
            }
        )

    def _wrong_state(self, session: Session) -> tuple[int, Any]:
        codes = {
            "new": 10001,
            "connecting": 10002,
            "connected": 10003,
            "closing": 10004,
            "closed": 10005,
        }
        return 400, {
            "code": codes[session.status],
            "message": f"session state wrong: {session.status}",
        }

    def _on_session(
        self, operation: str, session: Session, body: dict[str, Any]
    ) -> tuple[int, Any]:
        now = self.clock()
        if operation == "streaming.stop":
            if session.status == "closed":
                return self._wrong_state(session)
            session.status = "closed"
            return 200, self._ok(None)
        if operation == "streaming.start":
            if session.status != "new":
                return self._wrong_state(session)
            session.status, session.last_activity = "connected", now
            return 200, self._ok(None)
        if session.status != "connected":
            return self._wrong_state(session)
        session.last_activity = now
        if operation == "streaming.task":
            return self._task(session, body)
        if operation == "streaming.interrupt":
            if session.events and session.events[-1]["type"] != "avatar_stop_talking":
                last = session.tasks[-1]
                session.events.append(
                    {"type": "avatar_stop_talking", "task_id": last["task_id"], "duration_ms": 0}
                )
            return 200, self._ok(None)
        if operation in {
            "streaming.keep_alive",
            "streaming.start_listening",
            "streaming.stop_listening",
        }:
            return 200, self._ok(None)
        return 404, {"code": 404, "message": f"unknown operation {operation}"}

    def _task(self, session: Session, body: dict[str, Any]) -> tuple[int, Any]:
        text = str(body.get("text") or "")
        task_type = body.get("task_type") or "repeat"
        if task_type not in {"repeat", "talk", "chat"} or not text:
            return 400, {"code": 400, "message": "invalid task"}
        task_id = str(uuid.uuid4())
        spoken = text if task_type == "repeat" else f"You said: {text}"
        words = spoken.split()
        duration_ms = round(len(words) / WORDS_PER_SECOND * 1000, 1)
        session.tasks.append({"task_id": task_id, "text": text, "task_type": task_type})
        session.events.append({"type": "avatar_start_talking", "task_id": task_id})
        for i, word in enumerate(words):
            chunk = word if i == 0 else f" {word}"
            session.events.append(
                {"type": "avatar_talking_message", "task_id": task_id, "message": chunk}
            )
        session.events.append({"type": "avatar_end_message", "task_id": task_id})
        session.events.append(
            {"type": "avatar_stop_talking", "task_id": task_id, "duration_ms": duration_ms}
        )
        return 200, self._ok({"task_id": task_id, "duration_ms": duration_ms})

    # --- HTTP ---------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(EmulatorHandler):
            def operation(self, path: str) -> str:
                return path.removeprefix("/v1/").removeprefix("/v2/")

            def bad_body(self, body: Any) -> Reply | None:
                if body is ValueError:
                    return 400, {"code": 400, "message": "invalid JSON"}, None
                return None

            def caller(self) -> str | None:
                key = self.headers.get("X-Api-Key")
                if key and key in emulator.keys:
                    return key
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Bearer "):
                    return emulator.tokens.get(auth[7:])
                return None

            def refusal(self, kind: str, fault: Fault | None = None) -> Reply:
                if kind == "unauthorized":
                    return 401, {"code": 400112, "message": "Unauthorized"}, None
                if kind == "rate_limited":
                    retry_after = str(fault.retry_after if fault else 1.0)
                    return (
                        429,
                        {"code": 400123, "message": "Exceed rate limit"},
                        {"Retry-After": retry_after},
                    )
                assert fault is not None
                body = fault.body
                if body is None:
                    body = {"code": fault.status, "message": "Internal error"}
                return fault.status, body, None

        Handler.emulator = emulator
        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="HeyGen Interactive Avatar emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--key", action="append", default=[], help="API key[:trial|enterprise]")
    args = parser.parse_args()
    keys = parse_keys(args.key, "demo-heygen-key")
    emulator = HeyGenEmulator(keys=keys, host=args.host, port=args.port)
    print(f"HeyGen emulator on {emulator.base_url}, keys: {', '.join(keys)}")  # noqa: T201
    emulator.server.serve_forever()


if __name__ == "__main__":
    main()
