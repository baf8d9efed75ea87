"""The local avatar wired to Systimz: its events go to the session's log (and the relay), its
audio to the cache, where the player fetches it chunk by chunk.

The shared state of local speakers (the cut epoch, the speaking floor, the audio) lives in the
default cache: Redis in production, so every daphne and Celery process sees it; in the
embedded single-process setup the in-memory cache is enough, and a session closed from another
process (the reaper in the Celery worker) still ends its speech, because an avatar event is
only appended while the session is active.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from avatars.models import Provider
from avatars.providers import local_tts
from avatars.providers.local import LocalSpeechEngine
from sessions.leases import lease_claim, lease_release
from sessions.models import AvatarSession, SessionStatus
from sessions.player import session_from_token
from sessions.services import append_event

AUDIO_TTL_SECONDS = 15 * 60
# How long a fetch of a chunk that is still being synthesised waits for it.
AUDIO_WAIT_SECONDS = 10.0
AUDIO_POLL_SECONDS = 0.02


def _key(*parts: object) -> str:
    return "local:" + ":".join(str(p) for p in parts)


class SessionSpeechSink:
    """The :class:`~avatars.providers.local.SpeechSink` of a Systimz process."""

    def publish(self, session_id: str, type_: str, payload: dict[str, Any]) -> bool:
        session = (
            AvatarSession.objects.filter(provider=Provider.LOCAL, provider_session_id=session_id)
            .only("pk", "organisation_id")
            .first()
        )
        if session is None:
            return False
        event = append_event(session, type_, payload, only_if=[SessionStatus.ACTIVE])
        return event is not None

    def put_audio(self, session_id: str, task_id: str, chunk: local_tts.SpeechChunk) -> None:
        cache.set(
            _key("audio", session_id, task_id, chunk.index),
            {
                "wav": local_tts.wav_bytes(chunk),
                "start_ms": chunk.start_ms,
                "duration_ms": chunk.duration_ms,
                "text": chunk.text,
            },
            AUDIO_TTL_SECONDS,
        )

    def end_audio(self, session_id: str, task_id: str, chunks: int) -> None:
        cache.set(_key("audio-end", session_id, task_id), chunks, AUDIO_TTL_SECONDS)

    def epoch(self, session_id: str) -> int:
        return int(cache.get(_key("epoch", session_id), 0))

    def bump_epoch(self, session_id: str) -> int:
        key = _key("epoch", session_id)
        cache.add(key, 0, timeout=None)
        return int(cache.incr(key))

    def claim_floor(self, session_id: str, owner: str, ttl: float) -> bool:
        return lease_claim(_key("floor", session_id), owner, ttl)

    def release_floor(self, session_id: str, owner: str) -> None:
        lease_release(_key("floor", session_id), owner)

    def thread_done(self) -> None:
        connections.close_all()


_engine: LocalSpeechEngine | None = None
_engine_lock = threading.Lock()


def local_engine() -> LocalSpeechEngine:
    """This process's engine (one per process, like the voice it speaks with)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = LocalSpeechEngine(SessionSpeechSink())
        return _engine


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


async def local_audio(
    request: HttpRequest, session_id: uuid.UUID, task_id: str, index: int
) -> HttpResponse:
    """``GET /media/local/<session>/<task>/<index>.wav`` with the player token in the
    ``X-Player-Token`` header (or ``?token=``) — one chunk of a task's audio.

    Waits (up to ``AUDIO_WAIT_SECONDS``) for a chunk still being synthesised; 404 once the task
    has ended with fewer chunks. Headers say where the chunk sits in the utterance and whether
    it is the last, so the player can schedule it and know when to stop asking."""
    token = request.headers.get("X-Player-Token") or request.GET.get("token", "")
    session = await sync_to_async(session_from_token)(token, str(session_id))
    if session is None or session.provider != Provider.LOCAL:
        return _error(404, "not_found", "No such audio.")
    psid = session.provider_session_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + AUDIO_WAIT_SECONDS
    while True:
        chunk = await cache.aget(_key("audio", psid, task_id, index))
        ended = await cache.aget(_key("audio-end", psid, task_id))
        if chunk is not None:
            last = ended is not None and index == ended - 1
            response = HttpResponse(chunk["wav"], content_type="audio/wav")
            response["X-Chunk-Start-Ms"] = f"{chunk['start_ms']:.1f}"
            response["X-Chunk-Duration-Ms"] = f"{chunk['duration_ms']:.1f}"
            response["X-Chunk-Last"] = "1" if last else "0"
            response["Cache-Control"] = "private, max-age=900"
            return response
        if ended is not None or loop.time() > deadline:
            return _error(404, "not_found", "No such audio chunk.")
        await asyncio.sleep(AUDIO_POLL_SECONDS)
