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

The channel layer is only a doorbell, and it can fail (Redis down or restarted: a publish
lost, a subscription that hangs). So nothing the consumer must do waits on it for long: the
listener count in the database is kept first, the layer's calls are bounded by
``LAYER_TIMEOUT_SECONDS`` and their failures logged, and a socket that has heard nothing from
the layer for ``QUIET_TAIL_SECONDS`` reads the log itself (the in-memory layer, which never
carries other processes' events, every ``TAIL_SECONDS``). A socket never stays deaf.
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
QUIET_TAIL_SECONDS = 5.0  # any other layer: the log is read after this long without a message
LAYER_TIMEOUT_SECONDS = 3.0
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


async def _bounded(call: Any, what: str, session_id: str) -> bool:
    """Await a channel-layer call for at most ``LAYER_TIMEOUT_SECONDS``; False (logged) when it
    fails or hangs. The relay works without the doorbell, only later."""
    try:
        await asyncio.wait_for(call, timeout=LAYER_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any layer failure: logged, the log covers it
        log.warning("relay.layer_failed op=%s session=%s error=%s", what, session_id, repr(exc))
        return False
    return True


class SessionConsumer(AsyncJsonWebsocketConsumer):
    session_id: str
    grant: PlayerGrant | None = None
    live: bool = False
    last_sent: int = 0
    bad_frames: int = 0
    heard_at: float = 0.0  # loop time of the last message from the layer (or log read)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The consumer's whole life. However it ends (the ``disconnect`` handler, a crash
        such as the channel layer's receive failing while Redis is down, or daphne cancelling
        an instance that took too long to close), a player counted in is counted out: the
        reaper's disconnect rule depends on it."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop_tasks()
            if getattr(self, "joined", False) and not getattr(self, "left", False):
                self.left = True
                await database_sync_to_async(relay.listener_left)(
                    self.session_id, self.channel_name
                )

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
        loop = asyncio.get_running_loop()
        bind_relay_loop(loop)
        self._send_lock = asyncio.Lock()
        await _bounded(
            self.channel_layer.group_add(group_name(self.session_id), self.channel_name),
            "group_add",
            self.session_id,
        )
        self.last_sent = await database_sync_to_async(relay.listener_joined)(self.session_id)
        self.joined = True
        await self.accept()
        self.heard_at = loop.time()
        self._go_live_timer = loop.call_later(RESUME_WINDOW_SECONDS, self._schedule_go_live)
        self._tail_task = asyncio.ensure_future(self._tail())

    async def _tail(self) -> None:
        """Read the log when the layer may not bring everything: always with the in-memory
        layer (events recorded by other processes, the reaper in the Celery worker, never reach
        it), and after a quiet spell with any other (a publish lost while Redis was down)."""
        every_second = isinstance(self.channel_layer, InMemoryChannelLayer)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TAIL_SECONDS)
            if not self.live:
                continue
            if not every_second and loop.time() - self.heard_at < QUIET_TAIL_SECONDS:
                continue
            self.heard_at = loop.time()
            try:
                await self._catch_up()
            except Exception as exc:  # noqa: BLE001 - the database may be down: next time
                log.warning("relay.tail_failed session=%s error=%s", self.session_id, repr(exc))

    def _schedule_go_live(self) -> None:
        self._go_live_task = asyncio.ensure_future(self._go_live())

    async def _go_live(self) -> None:
        if not self.live:
            await self._catch_up()

    def _stop_tasks(self) -> None:
        timer = getattr(self, "_go_live_timer", None)
        if timer is not None:
            timer.cancel()
        for name in ("_tail_task", "_go_live_task"):
            task = getattr(self, name, None)
            if task is not None:
                task.cancel()

    async def disconnect(self, code: int) -> None:
        if self.grant is None:
            return
        self._stop_tasks()
        # The count first: the reaper relies on it, whatever the layer does next.
        if getattr(self, "joined", False) and not getattr(self, "left", False):
            self.left = True
            await database_sync_to_async(relay.listener_left)(self.session_id, self.channel_name)
        await _bounded(
            self.channel_layer.group_discard(group_name(self.session_id), self.channel_name),
            "group_discard",
            self.session_id,
        )

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
            await self._catch_up()
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

    async def _catch_up(self, after: int | None = None) -> None:
        """Send every public event after ``after`` (default: the last one sent) from the log,
        in order; then go live. Under the send lock, so the tail task and the layer's messages
        never interleave or send one event twice."""
        async with self._send_lock:
            await self._catch_up_locked(self.last_sent if after is None else after)

    async def _catch_up_locked(self, after: int) -> None:
        messages, last = await database_sync_to_async(relay.events_after)(self.session_id, after)
        for message in messages:
            await self.send_json(message)
        self.last_sent = max(last, after)
        self.live = True

    async def session_event(self, message: dict[str, Any]) -> None:
        self.heard_at = asyncio.get_running_loop().time()
        if not self.live:
            return  # the catch-up from the log will include it
        async with self._send_lock:
            event = message["event"]
            seq = event["seq"]
            if seq <= self.last_sent:
                return
            if seq == self.last_sent + 1:
                await self.send_json(event)
                self.last_sent = seq
                return
            await self._catch_up_locked(self.last_sent)  # a gap: the log has what is missing
