"""The built-in ``local`` avatar: no account, no network, real speech.

It behaves like a remote provider seen from Systimz: ``create`` returns a session id and the
media the browser needs, ``speak`` returns a task id at once and the avatar then says the text,
emitting HeyGen's event sequence timed from the real audio::

    avatar_start_talking {task_id}                  when the first audio chunk exists
    avatar_talking_message {task_id, message, ...}  one per word, when that word is heard
    avatar_end_message {task_id}                    when the last word has been said
    avatar_stop_talking {task_id, duration_ms}      when the audio ends (or is cut)

Speech comes from :mod:`avatars.providers.local_tts` (Piper, loaded once per process). Audio is
produced sentence by sentence ahead of the timeline (synthesis runs at about 14x real time) and
handed to the sink as WAV chunks the player fetches and plays back to back; word times are the
model's own phoneme durations, so words, mouth and sound agree.

Where things run: a session's speech is spoken by a *speaker*, a thread of the process that
received the ``speak``, which holds the session's *floor* (a lease in the shared store) while
it speaks, so two processes never talk over each other; tasks queue in arrival order within a
process. ``interrupt`` and ``stop`` cut the current speech at once in this process and, through
the shared *epoch* (incremented on every cut), within a tick in any other process; queued tasks
from before the cut are dropped. The provider itself keeps no session state and never touches
the database: the sink (wired in ``sessions.local_media``) records and relays events, stores
audio and keeps the shared epoch and floor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from avatars.providers import errors as perrors
from avatars.providers import local_tts
from avatars.providers.base import (
    ActiveSession,
    ProviderSession,
    SessionRequest,
    SpeakMode,
    TaskResult,
    Voice,
)

log = logging.getLogger("systimz.providers.local")

# How often a speaker waiting for its next event checks for a cut made by another process.
TICK_SECONDS = 0.05
# A speaker that holds the floor renews it this often; the lease lasts FLOOR_TTL_SECONDS, so a
# speaker that died frees the session within that.
FLOOR_TTL_SECONDS = 15
MAX_TEXT_CHARS = 2000


class SpeechSink(Protocol):
    """Where the local avatar's speech goes, and the state its speakers share across processes."""

    def publish(self, session_id: str, type_: str, payload: dict[str, Any]) -> bool:
        """Record and relay an avatar event. False when the session no longer takes events
        (stopped or gone): the speaker stops speaking."""
        ...

    def put_audio(self, session_id: str, task_id: str, chunk: local_tts.SpeechChunk) -> None:
        """Store one chunk of a task's audio for the player."""
        ...

    def end_audio(self, session_id: str, task_id: str, chunks: int) -> None:
        """No more chunks will come for this task (it ended or was cut after ``chunks``)."""
        ...

    def epoch(self, session_id: str) -> int:
        """How many cuts (interrupts and stops) the session has had."""
        ...

    def bump_epoch(self, session_id: str) -> int:
        """Record a cut; returns the new epoch."""
        ...

    def claim_floor(self, session_id: str, owner: str, ttl: float) -> bool:
        """Take or renew the session's speaking lease for ``owner``."""
        ...

    def release_floor(self, session_id: str, owner: str) -> None: ...

    def thread_done(self) -> None:
        """Release what a speaker thread holds (database connections)."""
        ...


Synthesizer = Callable[..., Iterator[local_tts.SpeechChunk]]


@dataclass
class _Task:
    session_id: str
    task_id: str
    text: str
    rate: float
    emotion: str | None
    epoch: int


@dataclass
class _Speaker:
    session_id: str
    owner: str
    tasks: deque[_Task] = field(default_factory=deque)
    cancel: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)


class _Cut(Exception):
    """The current task was interrupted or its session stopped."""


class LocalSpeechEngine:
    """Speaks local sessions' tasks in this process (one speaker thread per speaking session)."""

    def __init__(
        self,
        sink: SpeechSink,
        *,
        synthesize: Synthesizer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self._synthesize = synthesize or local_tts.synthesize_stream
        self._clock = clock
        self._lock = threading.Lock()
        self._speakers: dict[str, _Speaker] = {}

    # --- called by the provider -------------------------------------------------------------

    def submit(self, task: _Task) -> None:
        with self._lock:
            speaker = self._speakers.get(task.session_id)
            if speaker is None:
                speaker = _Speaker(task.session_id, owner=uuid.uuid4().hex)
                self._speakers[task.session_id] = speaker
                speaker.tasks.append(task)
                threading.Thread(
                    target=self._run, args=(speaker,), name=f"local-speaker-{task.session_id}"
                ).start()
            else:
                speaker.tasks.append(task)

    def cut(self, session_id: str) -> None:
        """Stop this process's speech for the session now and drop its queue."""
        with self._lock:
            speaker = self._speakers.get(session_id)
            if speaker is not None:
                speaker.tasks.clear()
                speaker.cancel.set()

    def wait_idle(self, session_id: str, timeout: float) -> bool:
        """Block until this process says nothing more for the session (tests, benchmarks)."""
        with self._lock:
            speaker = self._speakers.get(session_id)
        return True if speaker is None else speaker.idle.wait(timeout)

    # --- the speaker thread -----------------------------------------------------------------

    def _run(self, speaker: _Speaker) -> None:
        try:
            while True:
                with self._lock:
                    if not speaker.tasks:
                        # Free the floor before a new speaker can be made for the session.
                        self.sink.release_floor(speaker.session_id, speaker.owner)
                        del self._speakers[speaker.session_id]
                        speaker.idle.set()
                        return
                    task = speaker.tasks.popleft()
                    speaker.cancel = threading.Event()
                try:
                    self._speak(speaker, task)
                except Exception:  # a speaker must never die holding the floor silently
                    log.exception("local.speak_failed session=%s", task.session_id)
                    self.sink.publish(
                        task.session_id,
                        "error",
                        {"code": "speech_failed", "message": "The avatar could not speak."},
                    )
                    self.sink.publish(
                        task.session_id,
                        "avatar_stop_talking",
                        {"task_id": task.task_id, "duration_ms": 0.0, "failed": True},
                    )
        finally:
            self.sink.release_floor(speaker.session_id, speaker.owner)
            self.sink.thread_done()

    def _check(self, speaker: _Speaker, task: _Task) -> None:
        if speaker.cancel.is_set() or self.sink.epoch(task.session_id) != task.epoch:
            raise _Cut

    def _wait_until(self, speaker: _Speaker, task: _Task, deadline: float) -> None:
        """Sleep until ``deadline``, waking for a cut in this process at once and for one from
        another process within a tick."""
        while True:
            self._check(speaker, task)
            left = deadline - self._clock()
            if left <= 0:
                return
            speaker.cancel.wait(min(left, TICK_SECONDS))

    def _claim_floor(self, speaker: _Speaker, task: _Task) -> None:
        while not self.sink.claim_floor(task.session_id, speaker.owner, FLOOR_TTL_SECONDS):
            self._wait_until(speaker, task, self._clock() + TICK_SECONDS)

    def _speak(self, speaker: _Speaker, task: _Task) -> None:
        try:
            self._check(speaker, task)
            self._claim_floor(speaker, task)
        except _Cut:
            return  # dropped before it began: no events, as a provider drops its queue
        chunks: queue.Queue[local_tts.SpeechChunk | BaseException | None] = queue.Queue()
        producer = threading.Thread(
            target=self._produce, args=(task, speaker.cancel, chunks), daemon=True
        )
        producer.start()
        started = None
        heard_ms = 0.0
        try:
            first = self._next_chunk(speaker, task, chunks)
            if first is None:
                return
            if not self.sink.publish(
                task.session_id, "avatar_start_talking", {"task_id": task.task_id}
            ):
                raise _Cut
            # The timeline starts once the player can know: its audio plays from this event on.
            started = self._clock()
            chunk: local_tts.SpeechChunk | None = first
            last_renewal = started
            words = 0
            last_word_end = 0.0
            while chunk is not None:
                for word in chunk.words:
                    self._wait_until(speaker, task, started + word.start_ms / 1000)
                    words += 1
                    last_word_end = max(last_word_end, word.end_ms)
                    payload = {
                        "task_id": task.task_id,
                        "message": word.text if words == 1 else f" {word.text}",
                        "start_ms": round(word.start_ms, 1),
                        "end_ms": round(word.end_ms, 1),
                    }
                    if not self.sink.publish(task.session_id, "avatar_talking_message", payload):
                        raise _Cut
                heard_ms = chunk.start_ms + chunk.duration_ms
                if self._clock() - last_renewal > FLOOR_TTL_SECONDS / 3:
                    self.sink.claim_floor(task.session_id, speaker.owner, FLOOR_TTL_SECONDS)
                    last_renewal = self._clock()
                chunk = self._next_chunk(speaker, task, chunks)
            self._wait_until(speaker, task, started + last_word_end / 1000)
            if not self.sink.publish(
                task.session_id, "avatar_end_message", {"task_id": task.task_id}
            ):
                raise _Cut
            self._wait_until(speaker, task, started + heard_ms / 1000)
            self.sink.publish(
                task.session_id,
                "avatar_stop_talking",
                {"task_id": task.task_id, "duration_ms": round(heard_ms, 1)},
            )
        except _Cut:
            speaker.cancel.set()
            if started is not None:
                played = min((self._clock() - started) * 1000, heard_ms or float("inf"))
                self.sink.publish(
                    task.session_id,
                    "avatar_stop_talking",
                    {"task_id": task.task_id, "duration_ms": round(played, 1), "interrupted": True},
                )
        finally:
            speaker.cancel.set()  # ends the producer if it is still going
            producer.join()

    def _next_chunk(
        self,
        speaker: _Speaker,
        task: _Task,
        chunks: queue.Queue[local_tts.SpeechChunk | BaseException | None],
    ) -> local_tts.SpeechChunk | None:
        while True:
            self._check(speaker, task)
            try:
                item = chunks.get(timeout=TICK_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _produce(
        self,
        task: _Task,
        cancel: threading.Event,
        chunks: queue.Queue[local_tts.SpeechChunk | BaseException | None],
    ) -> None:
        """Synthesise ahead of the timeline, storing each chunk as soon as it exists."""
        count = 0
        try:
            for chunk in self._synthesize(
                task.text, rate=task.rate, emotion=task.emotion, cancel=cancel
            ):
                self.sink.put_audio(task.session_id, task.task_id, chunk)
                count += 1
                chunks.put(chunk)
            chunks.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the speaker, which reports it
            chunks.put(exc)
        finally:
            self.sink.end_audio(task.session_id, task.task_id, count)


class LocalAvatar:
    """The ``local`` provider: the Protocol of ``avatars.providers.base`` over the engine."""

    name = "local"

    def __init__(self, engine: LocalSpeechEngine, *, voice: Voice | None = None) -> None:
        self.engine = engine
        self.voice = voice or Voice(local_tts.VOICE_NAME)

    def create(self, request: SessionRequest) -> ProviderSession:
        if not local_tts.is_available():
            raise perrors.ProviderUnavailable(
                "The local avatar's speech engine is not installed "
                "(pip install -r requirements-tts.txt).",
                connected=False,
            )
        voice = request.voice or self.voice
        return ProviderSession(
            session_id=f"local_{uuid.uuid4().hex}",
            media={
                "kind": "local",
                "voice": local_tts.VOICE_NAME,
                "rate": voice.rate,
                "emotion": voice.emotion,
                "audio": "audio/wav",
            },
            duration_limit_seconds=request.max_duration_seconds,
        )

    def start(self, session_id: str) -> None:
        try:
            local_tts.load_voice()  # once per process; the first speak should not pay for it
        except local_tts.LocalTTSError as exc:
            raise perrors.ProviderUnavailable(
                f"The local speech engine failed to load: {exc}", connected=False
            ) from exc

    def speak(self, session_id: str, text: str, mode: SpeakMode = "repeat") -> TaskResult:
        if mode != "repeat":
            raise perrors.ProviderInvalidRequest(
                "The local avatar has no language model of its own; chat is answered by Systimz."
            )
        if not text.split():
            raise perrors.ProviderInvalidRequest("There is nothing to say.")
        if len(text) > MAX_TEXT_CHARS:
            raise perrors.ProviderInvalidRequest(f"Text over {MAX_TEXT_CHARS} characters.")
        task = _Task(
            session_id=session_id,
            task_id=uuid.uuid4().hex,
            text=text,
            rate=self.voice.rate,
            emotion=self.voice.emotion,
            epoch=self.engine.sink.epoch(session_id),
        )
        self.engine.submit(task)
        return TaskResult(task_id=task.task_id)

    def interrupt(self, session_id: str) -> None:
        self.engine.sink.bump_epoch(session_id)
        self.engine.cut(session_id)

    def keep_alive(self, session_id: str) -> None:
        """Nothing to keep: a local session lives as long as its row says it does."""

    def stop(self, session_id: str) -> None:
        self.engine.sink.bump_epoch(session_id)
        self.engine.cut(session_id)

    def list_active(self) -> list[ActiveSession]:
        """Nothing outlives a stop here (speech is cut, nothing is billed), so nothing leaks."""
        return []

    def close(self) -> None:
        """Nothing to release: the engine belongs to the process."""
