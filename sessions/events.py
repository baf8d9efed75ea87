"""A session's events as the world sees them, and their relay to live listeners.

The session log (``SessionEvent``) is the source of truth. Every event becomes a message of the
contract's shape (``type``, ``session_id``, ``seq``, ``at`` and its fields) published to the
session's channel-layer group *after* the transaction that recorded it commits, so a listener
never sees an event that could still roll back, and a listener that missed one (a reconnect,
a message lost between processes) gets it from the log by ``seq`` (``resume``, or the events
endpoint). Publishing is best effort by design: the log is not.

Only the contract's server messages leave the server; internal records (``task``: what was
asked of the provider, with citations) stay in the log for transcripts and usage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from sessions.models import SessionEvent

log = logging.getLogger("systimz.sessions.relay")

PUBLIC_TYPES = frozenset(
    {
        "session_state",
        "avatar_start_talking",
        "avatar_talking_message",
        "avatar_end_message",
        "avatar_stop_talking",
        "user_talking_message",
        "user_end_message",
        "error",
    }
)


def group_name(session_id: object) -> str:
    return f"session.{session_id}"


def event_message(event: SessionEvent) -> dict[str, Any]:
    """The contract's shape of one event (the WebSocket's server message)."""
    at = event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        **event.payload,
        "type": event.type,
        "session_id": str(event.session_id),
        "seq": event.seq,
        "at": at,
    }


# The event loop that serves this process's WebSockets (set by the first consumer). Events
# recorded by threads that have no loop of their own (the local avatar's speakers, views run
# in a thread pool) are handed to it, because the in-memory channel layer may only be used from
# the loop its listeners wait on.
_relay_loop: asyncio.AbstractEventLoop | None = None
_relay_lock = threading.Lock()


def bind_relay_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _relay_loop
    with _relay_lock:
        if _relay_loop is None or _relay_loop.is_closed():
            _relay_loop = loop


def publish_after_commit(event: SessionEvent) -> None:
    """Relay ``event`` to the session's listeners once the current transaction commits."""
    if event.type not in PUBLIC_TYPES:
        return
    message = event_message(event)
    transaction.on_commit(lambda: publish(message), robust=True)


def publish(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    group = group_name(message["session_id"])
    envelope = {"type": "session.event", "event": message}
    loop = _relay_loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is not None and loop.is_running() and not loop.is_closed():
        if running is loop:
            loop.create_task(layer.group_send(group, envelope))
        else:
            asyncio.run_coroutine_threadsafe(layer.group_send(group, envelope), loop)
        return
    if running is not None:  # an async caller with no relay loop bound: no listener here
        running.create_task(layer.group_send(group, envelope))
        return
    try:
        async_to_sync(layer.group_send)(group, envelope)
    except Exception:  # noqa: BLE001 - the log has it; listeners catch up by seq
        log.warning("relay.publish_failed session=%s seq=%s", message["session_id"], message["seq"])
