"""The relay's work on the database: listeners, client frames, the log read back.

Called by ``sessions.consumers`` (through ``database_sync_to_async``); everything a frame asks
for goes through ``sessions.lifecycle`` like the REST API, so the rules are the same.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone
from redis.exceptions import RedisError

from sessions import lifecycle
from sessions.events import PUBLIC_TYPES, event_message
from sessions.leases import lease_claim, lease_release
from sessions.models import AvatarSession, CloseReason
from sessions.services import append_event
from systimz import errors

log = logging.getLogger("systimz.sessions.relay")

# What the shared cache (Redis) raises when it is down. The relay's leases are best effort, so an
# outage must neither crash a socket nor skip a listener's bookkeeping in the database.
CACHE_ERRORS = (RedisError, OSError)

MAX_CATCH_UP = 5000
MAX_TEXT = 2000
MAX_CLIENT_EVENT_BYTES = 4096
MAX_CLIENT_MESSAGE = 1000

# Media-room events a player may forward, by the provider's name, and the contract's name for
# each (HeyGen Interactive Avatar: `type`; LiveAvatar: dotted `event_type`). Others are ignored.
CLIENT_EVENT_NAMES = {
    "avatar_start_talking": "avatar_start_talking",
    "avatar_talking_message": "avatar_talking_message",
    "avatar_end_message": "avatar_end_message",
    "avatar_stop_talking": "avatar_stop_talking",
    "user_talking_message": "user_talking_message",
    "user_end_message": "user_end_message",
    "avatar.speak_started": "avatar_start_talking",
    "avatar.transcription.chunk": "avatar_talking_message",
    "avatar.transcription": "avatar_end_message",
    "avatar.speak_ended": "avatar_stop_talking",
    "user.transcription.chunk": "user_talking_message",
    "user.transcription": "user_end_message",
}


def listener_joined(session_id: str) -> int:
    """Count a player in; returns the last seq recorded so far."""
    AvatarSession.objects.filter(pk=session_id).update(
        listeners=F("listeners") + 1, disconnected_at=None
    )
    return AvatarSession.objects.values_list("next_seq", flat=True).get(pk=session_id) - 1


def listener_left(session_id: str, channel_name: str = "") -> None:
    """Count a player out; the last one leaving starts the disconnect grace period. The count
    comes first: it is what the reaper relies on, whatever happens to the cache after."""
    AvatarSession.objects.filter(pk=session_id).update(listeners=Greatest(F("listeners") - 1, 0))
    AvatarSession.objects.filter(pk=session_id, listeners=0, disconnected_at__isnull=True).update(
        disconnected_at=timezone.now()
    )
    if channel_name:
        forwarder_left(session_id, channel_name)


def events_after(session_id: str, after: int) -> tuple[list[dict[str, Any]], int]:
    """The public events after ``after`` in order, and the last seq read (public or not)."""
    rows = list(
        AvatarSession.objects.get(pk=session_id)
        .events.filter(seq__gt=after)
        .order_by("seq")[:MAX_CATCH_UP]
    )
    last = rows[-1].seq if rows else after
    return [event_message(e) for e in rows if e.type in PUBLIC_TYPES], last


def record_error(session_id: str, code: str, message: str) -> None:
    session = AvatarSession.objects.get(pk=session_id)
    append_event(session, "error", {"code": code, "message": message})


def _text(content: dict[str, Any]) -> str:
    text = content.get("text")
    if not isinstance(text, str) or not text.strip():
        raise errors.InvalidInput("speak needs text.", fields={"text": ["Required."]})
    if len(text) > MAX_TEXT:
        raise errors.InvalidInput(
            f"text is at most {MAX_TEXT} characters.", fields={"text": ["Too long."]}
        )
    return text


FORWARDER_TTL_SECONDS = 120


def is_forwarder(session_id: str, channel_name: str) -> bool:
    """Whether this connection is the one whose forwarded media-room events are recorded.
    Every player in the room receives the same events; the first to forward holds the role
    (renewed as it forwards) until it goes quiet, so two tabs never record everything twice.
    With the cache down the lease cannot be read, and every connection records: a forwarded
    event twice in the record beats a socket crashed or the event lost."""
    try:
        return lease_claim(f"relay:forwarder:{session_id}", channel_name, FORWARDER_TTL_SECONDS)
    except CACHE_ERRORS as exc:
        log.warning(
            "relay.forwarder_lease_unavailable session=%s error=%s", session_id, type(exc).__name__
        )
        return True


def forwarder_left(session_id: str, channel_name: str) -> None:
    try:
        lease_release(f"relay:forwarder:{session_id}", channel_name)
    except CACHE_ERRORS as exc:  # the lease lapses by its TTL instead
        log.warning(
            "relay.forwarder_lease_unavailable session=%s error=%s", session_id, type(exc).__name__
        )


def client_frame(
    session_id: str, kind: str, content: dict[str, Any], channel_name: str = ""
) -> None:
    """Carry out one client frame (other than ``resume``)."""
    session = AvatarSession.objects.select_related("organisation", "avatar").get(pk=session_id)
    if kind == "speak":
        mode = content.get("mode", "repeat")
        if mode not in ("repeat", "chat"):
            raise errors.InvalidInput("mode is repeat or chat.", fields={"mode": ["Invalid."]})
        lifecycle.session_speak(session=session, text=_text(content), mode=mode)
    elif kind in ("interrupt", "keep_alive"):
        lifecycle.session_control(session=session, action=kind)
    elif kind == "stop":
        lifecycle.session_stop(session=session, reason=CloseReason.USER)
    elif kind == "client_event":
        if channel_name and not is_forwarder(session_id, channel_name):
            return  # another player of this session records the room's events
        client_event(session, content.get("event"))


def client_event(session: AvatarSession, event: Any) -> None:
    """Record an event the player received from the provider's media room, in the contract's
    words. Validated and size-limited; it is the record of what was said, never a basis for
    billing or state (those come from the server's own clock and the provider's API)."""
    if session.provider == "local":
        raise errors.InvalidInput("The local avatar's events come from the server.")
    if not isinstance(event, dict):
        raise errors.InvalidInput("client_event needs an event object.")
    if len(json.dumps(event)) > MAX_CLIENT_EVENT_BYTES:
        raise errors.InvalidInput(f"A forwarded event is at most {MAX_CLIENT_EVENT_BYTES} bytes.")
    name = event.get("type") or event.get("event_type")
    kind = CLIENT_EVENT_NAMES.get(name) if isinstance(name, str) else None
    if kind is None:
        return  # not one the record keeps (stream_ready, user_start, session.updated, ...)
    if session.status != "active":
        raise errors.Conflict(f"The session is {session.status}.")
    payload: dict[str, Any] = {"source": "media_room"}
    task_id = event.get("task_id") or event.get("source_event_id") or event.get("event_id")
    if isinstance(task_id, str | int):
        payload["task_id"] = str(task_id)[:100]
    message = event.get("message", event.get("text"))
    if isinstance(message, str):
        payload["message"] = message[:MAX_CLIENT_MESSAGE]
    duration = event.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0:
        payload["duration_ms"] = min(float(duration), 86_400_000.0)
    append_event(session, kind, payload, only_if=["active"])
