"""The player's WebSocket: ``/ws/sessions/<id>/?token=...`` (the contract's relay).

Handshake: an Origin outside the avatar's allowed origins (and the site's own), or other than
the one the token was issued to, is refused before accept. A bad, expired or other session's
token is accepted only to be closed at once with 4401, nothing sent. Then the socket joins the
session's group and speaks the contract: client frames become lifecycle calls, every server
message is an event of the session's log, sent once, in ``seq`` order.

Delivery: the first ``resume`` (or, if none comes within ``RESUME_WINDOW_SECONDS``, the moment
of connecting) fixes where the stream starts; from then on events from the group are sent when
they are next in line, and a gap (an event published out of order, or lost between processes)
is filled from the log before anything later is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer
from django.conf import settings

from avatars.origins import normalise_origin
from sessions import relay
from sessions.events import bind_relay_loop, group_name
from sessions.player import PlayerGrant, read_player_token
from systimz import errors

log = logging.getLogger("systimz.sessions.relay")

CLOSE_UNAUTHORISED = 4401
CLOSE_TOO_MANY_ERRORS = 4400
RESUME_WINDOW_SECONDS = 1.0
TAIL_SECONDS = 1.0  # the in-memory layer's catch-up from the log (one process only)
MAX_FRAME_BYTES = 16 * 1024
MAX_BAD_FRAMES = 20
CLIENT_TYPES = ("speak", "interrupt", "keep_alive", "stop", "client_event", "resume")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict[str, Any], grant: PlayerGrant) -> bool:
    """True for no Origin (not a browser), the site's own, or one of the avatar's allowed
    origins; always False for an origin other than the one the token was issued to."""
    raw = _header(scope, b"origin")
    if raw is None:
        return True
    try:
        origin = normalise_origin(raw)
    except ValueError:
        return False
    if grant.origin is not None and origin != grant.origin:
        return False
    host = _header(scope, b"host")
    if host:
        secure = scope.get("scheme") == "wss"
        try:
            if origin == normalise_origin(f"{'https' if secure else 'http'}://{host}"):
                return True
        except ValueError:
            pass
    avatar = grant.session.avatar
    allowed = set(avatar.allowed_origins or []) if avatar is not None else set()
    return origin in allowed or origin in set(settings.PLAYER_EXTRA_ORIGINS)


class SessionConsumer(AsyncJsonWebsocketConsumer):
    session_id: str
    grant: PlayerGrant | None = None
    live: bool = False
    last_sent: int = 0
    bad_frames: int = 0

    async def connect(self) -> None:
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        self.grant = await database_sync_to_async(read_player_token)(token, self.session_id)
        if self.grant is None:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHORISED)
            return
        if not origin_allowed(self.scope, self.grant):
            log.info("relay.origin_refused session=%s", self.session_id)
            await self.close()  # before accept: the handshake is refused
            return
        bind_relay_loop(asyncio.get_running_loop())
        await self.channel_layer.group_add(group_name(self.session_id), self.channel_name)
        self.last_sent = await database_sync_to_async(relay.listener_joined)(self.session_id)
        await self.accept()
        self._go_live_timer = asyncio.get_running_loop().call_later(
            RESUME_WINDOW_SECONDS, self._schedule_go_live
        )
        if isinstance(self.channel_layer, InMemoryChannelLayer):
            # One process's layer: events recorded by other processes (the reaper in the
            # Celery worker) never reach it, so the log is read every second as well.
            self._tail_task = asyncio.ensure_future(self._tail())

    async def _tail(self) -> None:
        while True:
            await asyncio.sleep(TAIL_SECONDS)
            await self.channel_layer.send(self.channel_name, {"type": "relay.tail"})

    async def relay_tail(self, message: dict[str, Any]) -> None:
        if self.live:
            await self._catch_up(self.last_sent)

    def _schedule_go_live(self) -> None:
        self._go_live_task = asyncio.ensure_future(
            self.channel_layer.send(self.channel_name, {"type": "relay.go_live"})
        )

    async def disconnect(self, code: int) -> None:
        if self.grant is None:
            return
        timer = getattr(self, "_go_live_timer", None)
        if timer is not None:
            timer.cancel()
        tail = getattr(self, "_tail_task", None)
        if tail is not None:
            tail.cancel()
        await self.channel_layer.group_discard(group_name(self.session_id), self.channel_name)
        await database_sync_to_async(relay.listener_left)(self.session_id, self.channel_name)

    # --- from the client --------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._refuse("Frames are JSON text.")
            return
        if len(text_data.encode()) > MAX_FRAME_BYTES:
            await self._refuse(f"A frame holds at most {MAX_FRAME_BYTES} bytes.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._refuse("The frame is not JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind not in CLIENT_TYPES:
            await self._refuse(f"Unknown frame type; expected one of {', '.join(CLIENT_TYPES)}.")
            return
        if kind == "resume":
            after = content.get("after", 0)
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                await self._refuse("resume needs after: a seq (a whole number, 0 or more).")
                return
            await self._catch_up(after)
            return
        if not self.live:  # acting before resuming: the stream starts now
            await self._catch_up(self.last_sent)
        try:
            await database_sync_to_async(relay.client_frame)(
                self.session_id, kind, content, self.channel_name
            )
        except errors.SystimzError as exc:
            await self._error(exc.code, exc.message)

    async def _refuse(self, message: str) -> None:
        self.bad_frames += 1
        await self._error("invalid", message)
        if self.bad_frames >= MAX_BAD_FRAMES:
            await self.close(code=CLOSE_TOO_MANY_ERRORS)

    async def _error(self, code: str, message: str) -> None:
        """An error answers the frame that caused it; it is recorded in the session's log like
        every server message, so it has its seq and every listener sees the same stream."""
        await database_sync_to_async(relay.record_error)(self.session_id, code, message)

    # --- to the client ----------------------------------------------------------------------

    async def _catch_up(self, after: int) -> None:
        """Send every public event after ``after`` from the log, in order; then go live."""
        messages, last = await database_sync_to_async(relay.events_after)(self.session_id, after)
        for message in messages:
            await self.send_json(message)
        self.last_sent = max(last, after)
        self.live = True

    async def relay_go_live(self, message: dict[str, Any]) -> None:
        if not self.live:
            await self._catch_up(self.last_sent)

    async def session_event(self, message: dict[str, Any]) -> None:
        if not self.live:
            return  # the catch-up from the log will include it
        event = message["event"]
        seq = event["seq"]
        if seq <= self.last_sent:
            return
        if seq == self.last_sent + 1:
            await self.send_json(event)
            self.last_sent = seq
            return
        await self._catch_up(self.last_sent)  # a gap: the log has what is missing
