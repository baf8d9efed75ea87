"""Load: 100 concurrent sessions on one daphne and one Celery worker, as browsers use them.

    python -m bench.load [--sessions 100] [--minutes 3] [--provider local|heygen]
                         [--concurrency 20] [--speak-every auto] [--json]

It creates its own throwaway test database (``bench._common.bench_database``: on PostgreSQL
``test_<name>_bench_<pid>``, migrated, dropped at the end) and starts, as subprocesses, the
whole deployment against it (``bench._common.Service``): one daphne serving
``bench.relay_app:application`` (Systimz's ASGI app plus the bench-only echo consumer used as
the WebSocket baseline), one Celery worker with embedded beat (the reaper every 5 s, prefork,
concurrency 1, as ``make run``), Redis (``--redis-url``) as channel layer, cache and broker,
and for ``--provider heygen`` the HeyGen emulator (``tests/emulators/heygen.py``, an enterprise
key: its cap is 100 sessions) with ``HEYGEN_API_BASE`` pointing at it. ``DEBUG`` is off and
``CONN_MAX_AGE`` 0, as in production (``SECURE_SSL_REDIRECT`` off: no TLS proxy in front).

Phases (every client is an asyncio task in this process; HTTP through ``httpx``, WebSockets
through autobahn, which daphne installs):

1. **Start burst**: ``--sessions`` ``POST /api/v1/sessions/`` with ``--concurrency`` in flight,
   an enterprise organisation whose concurrency limit admits them all. Baseline, just before,
   on the same server: as many ``GET /api/v1/organisation/`` (authenticated, one small query
   set) at the same concurrency. Reports sessions/s, p50/p99, errors by status, daphne's CPU
   per request, and the ratios start / GET.
2. **Steady state** (``--minutes``, local avatar only): a browser-like client per session
   opens ``/ws/sessions/<id>/?token=...`` with the site's Origin (retrying a failed open as the
   talk page does), sends ``resume``, a
   ``keep_alive`` every 30 s (the talk page's period) and a ``speak`` every ``S`` seconds
   (jittered ±20 %, the first at a random point of the first period; none in the last 10 s),
   fetches each task's audio chunks as the player does (``/media/local/.../<n>.wav`` with
   ``X-Player-Token``, the next once the previous has arrived, until ``X-Chunk-Last``), and
   records every frame with its receive time. ``S`` (``--speak-every auto``) is sized from the
   synthesis CPU measured here before the servers start, so that synthesis needs about
   ``--synthesis-cores`` (0.75) of the 2 cores. Measured: event latency (receive time - the
   event's ``at``, one host, one clock; catch-up frames excluded), speak frame -> its
   ``avatar_start_talking``, audio chunk fetches, ``seq`` gaps, duplicates, events missing
   against the log, error frames and early closes, RSS and CPU of daphne and the worker.
   Baselines: ``--echo-sockets`` sockets on the same daphne's echo consumer, each sending a
   frame every second and timing the reply (a WebSocket round trip through Channels) and a
   WebSocket ping (answered by daphne without the application); the
   bare synthesis of the same sentences to their first chunk (for speak -> start talking);
   daphne's idle RSS right after start (for memory).
3. **Stop**: ``POST /api/v1/sessions/<id>/stop`` for every session (same concurrency); then,
   from the database: every session closed (reason ``user``), exactly one ``session`` usage
   row each, 0 errors; each client waits for its ``session_state closed`` first.
4. ``--provider heygen``: phases 1 and 3 with a HeyGen avatar against the emulator, and the
   emulator's active sessions afterwards (none may be left).

The Redis database of ``--redis-url`` is the benchmark's: it is flushed before and after
(database 0 is refused). Progress goes to stderr; a Markdown summary (or ``--json``) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import (
    Service,
    bench_database,
    free_port,
    load_average,
    log,
    quiet,
    tree_cpu_seconds,
    tree_rss_bytes,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SLUG = "bench-local"
HEYGEN_SLUG = "bench-heygen"
HEYGEN_KEY = "hg-bench-load-key-5a4b3c2d1e"
HEYGEN_AVATAR = "Anna_public_3_20240108"
KEEP_ALIVE_SECONDS = 30.0  # the talk page's KEEP_ALIVE_MS
QUIET_TAIL_SECONDS = 10.0  # no new speak this close to the end of the steady state
ECHO_EVERY_SECONDS = 1.0
SAMPLE_EVERY_SECONDS = 10.0
CONNECT_CONCURRENCY = 20
CLOSED_WAIT_SECONDS = 60.0  # a bound for the clients' last frame, not a measurement
CONNECT_DEADLINE_SECONDS = 180.0  # a bound for opening a socket, retries included
HTTP_TIMEOUT_SECONDS = 60.0
MIB = 1024 * 1024


# --- small helpers ---------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, Any]:
    """n, p50/p95/p99, mean and max of millisecond values (``bench.relay``'s summary)."""
    from bench.relay import _summary

    return _summary(values)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def parse_at(value: str) -> float:
    """The event's ``at`` (ISO 8601 UTC, milliseconds) as a Unix time."""
    return datetime.fromisoformat(value).timestamp()


class Machine:
    """CPU of the whole machine and of the processes that matter, between two marks."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def mark(self) -> dict[str, Any]:
        from bench.relay import machine_cpu

        return {
            "t": time.perf_counter(),
            "machine": machine_cpu(),
            "cpu": {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()},
            "self": time.process_time(),
            "rss": {name: tree_rss_bytes(pid) for name, pid in self.pids.items()},
            "loadavg": load_average(),
        }

    @staticmethod
    def between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        seconds = b["t"] - a["t"]
        busy = b["machine"][0] - a["machine"][0]
        total = b["machine"][1] - a["machine"][1]
        cpu = {name: round(b["cpu"][name] - a["cpu"][name], 2) for name in a["cpu"]}
        cpu["clients (this process)"] = round(b["self"] - a["self"], 2)
        return {
            "seconds": round(seconds, 2),
            "cpu_seconds": cpu,
            "cores": {k: round(v / seconds, 3) for k, v in cpu.items()} if seconds else {},
            "machine_busy": round(busy / total, 3) if total else None,
            "loadavg": [a["loadavg"], b["loadavg"]],
        }


# --- HTTP bursts -----------------------------------------------------------------------------


@dataclass
class Call:
    status: int | str
    ms: float
    body: Any = None


async def burst(
    client: Any,
    requests: list[tuple[str, str, dict[str, Any] | None]],
    concurrency: int,
) -> tuple[list[Call], float]:
    """Send ``(method, path, json)`` requests with at most ``concurrency`` in flight; the calls
    in request order and the wall time of the whole burst."""
    gate = asyncio.Semaphore(concurrency)
    calls: list[Call | None] = [None] * len(requests)

    async def one(i: int, method: str, path: str, body: dict[str, Any] | None) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
                status: int | str = response.status_code
                data = response.json() if response.content else None
            except Exception as exc:  # noqa: BLE001 - counted as an error of its kind
                status, data = type(exc).__name__, None
            calls[i] = Call(status, (time.perf_counter() - started) * 1000, data)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))
    return [c for c in calls if c is not None], time.perf_counter() - started


def burst_report(calls: list[Call], wall: float, ok: int, cpu: dict[str, Any]) -> dict[str, Any]:
    statuses = collections.Counter(str(c.status) for c in calls)
    good = [c.ms for c in calls if c.status == ok]
    daphne_cpu = cpu["cpu_seconds"].get("daphne", 0.0)
    return {
        "requests": len(calls),
        "ok": len(good),
        "errors_by_status": {k: v for k, v in statuses.items() if k != str(ok)},
        "wall_s": round(wall, 3),
        "per_second": round(len(calls) / wall, 1) if wall else None,
        "latency_ms": summary(good),
        "daphne_cpu_ms_per_request": round(daphne_cpu * 1000 / len(calls), 1) if calls else None,
        "resources": cpu,
    }


# --- WebSocket clients ------------------------------------------------------------------------


@dataclass
class Started:
    """A session the burst started, as the browser receives it."""

    id: str
    token: str
    ws_path: str
    audio_url: str


@dataclass
class Frame:
    received: float
    type: str
    seq: int | None
    at: float | None
    live: bool


@dataclass
class Link:
    """One session's player: its socket and what it saw."""

    session: Started
    opened_at: float = 0.0
    protocol: Any = None
    connect_attempts: int = 0
    closed_event: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    frames: list[Frame] = field(default_factory=list)
    last_seq: int = 0
    gaps: int = 0
    duplicates: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    close_code: int | None = None
    close_before_end: bool = False
    pending_speaks: collections.deque[float] = field(default_factory=collections.deque)
    speaks: int = 0
    keep_alives: int = 0
    speak_to_start_ms: list[float] = field(default_factory=list)
    speak_sent: list[float] = field(default_factory=list)
    start_received: dict[str, float] = field(default_factory=dict)
    audio_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def send(self, frame: dict[str, Any]) -> bool:
        """Send a frame; False if the socket has closed meanwhile (counted by the caller)."""
        try:
            self.protocol.sendMessage(json.dumps(frame).encode())
        except Exception:  # noqa: BLE001 - autobahn's Disconnected: the close is recorded
            return False
        return True

    def on_frame(self, data: dict[str, Any], received: float, runner: SteadyState) -> None:
        kind = str(data.get("type"))
        seq = data.get("seq") if isinstance(data.get("seq"), int) else None
        at = parse_at(data["at"]) if isinstance(data.get("at"), str) else None
        # Catch-up frames (recorded before this socket opened) are not a relay latency.
        live = at is not None and at >= self.opened_at
        self.frames.append(Frame(received, kind, seq, at, live))
        if seq is not None:
            if seq <= self.last_seq:
                self.duplicates += 1
            elif seq > self.last_seq + 1:
                self.gaps += 1
            self.last_seq = max(self.last_seq, seq)
        if kind == "error":
            self.errors[str(data.get("code"))] += 1
        elif kind == "avatar_start_talking":
            if self.pending_speaks:
                sent = self.pending_speaks.popleft()
                self.speak_to_start_ms.append((received - sent) * 1000)
            task_id = str(data.get("task_id"))
            self.start_received[task_id] = received
            self.audio_tasks.append(asyncio.ensure_future(runner.fetch_audio(self, task_id)))
        elif kind == "session_state" and data.get("status") == "closed":
            self.finished.set()


class EchoSink:
    """One baseline socket's replies: each frame answers the oldest frame sent, each pong the
    oldest ping."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opened: asyncio.Future[None] = loop.create_future()
        self.waiting: list[asyncio.Future[float]] = []
        self.pongs: list[asyncio.Future[float]] = []

    def on_open(self, protocol: Any) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def frame(self, data: dict[str, Any], received: float) -> None:
        if self.waiting and not self.waiting[0].done():
            self.waiting.pop(0).set_result(time.perf_counter())

    def pong(self, received: float) -> None:
        if self.pongs and not self.pongs[0].done():
            self.pongs.pop(0).set_result(received)

    def closed(self, code: int | None) -> None:
        for future in [self.opened, *self.waiting, *self.pongs]:
            if not future.done():
                future.set_exception(ConnectionError(f"closed ({code})"))


class SteadyState:
    """The browsers of every session, the echo baseline and the resource samples."""

    def __init__(
        self,
        port: int,
        http: Any,
        sessions: list[Started],
        *,
        speak_every: float,
        sentences: list[str],
        echo_sockets: int,
        rng: random.Random,
    ) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.http = http
        self.links = [Link(s) for s in sessions]
        self.speak_every = speak_every
        self.sentences = sentences
        self.echo_sockets = echo_sockets
        self.rng = rng
        self.audio: list[dict[str, Any]] = []
        self.echo_rtt_ms: list[float] = []
        self.ping_rtt_ms: list[float] = []
        self.echo_failures = 0
        self.connect_ms: list[float] = []
        self.connect_failures: list[str] = []
        self.ending = False

    async def _connect(self, path: str, on_open: Callable[[Any], None], sink: Any) -> Any:
        """Open a socket; ``sink(data, received)`` gets every frame, ``sink.closed(code)``."""
        import txaio
        from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

        txaio.set_global_log_level("critical")

        class Socket(WebSocketClientProtocol):
            def onOpen(self) -> None:
                on_open(self)

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                sink.frame(json.loads(payload), time.time())

            def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                sink.closed(code)

            def onPong(self, payload: bytes) -> None:
                if hasattr(sink, "pong"):
                    sink.pong(time.perf_counter())

        loop = asyncio.get_running_loop()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.port}{path}", origin=self.origin)
        factory.protocol = Socket
        _, protocol = await loop.create_connection(factory, "127.0.0.1", self.port)
        return protocol

    async def connect_all(self) -> None:
        """Open every session's socket, ``CONNECT_CONCURRENCY`` at a time; a socket that fails
        to open is retried as the talk page's relay does (backoff from 0.5 s, doubling, at most
        10 s; here for up to ``CONNECT_DEADLINE_SECONDS``). Each open ends at the catch-up's
        first frame."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        runner = self

        async def attempt(link: Link) -> Any:
            loop = asyncio.get_running_loop()
            first: asyncio.Future[None] = loop.create_future()

            class Sink:
                def frame(self, data: dict[str, Any], received: float) -> None:
                    if not first.done():
                        first.set_result(None)
                    link.on_frame(data, received, runner)

                def closed(self, code: int | None) -> None:
                    if not first.done():  # a failed attempt: retried
                        first.set_exception(ConnectionError(f"closed ({code})"))
                        return
                    link.close_code = code
                    link.close_before_end = not runner.ending
                    link.closed_event.set()
                    link.finished.set()

            def opened(protocol: Any) -> None:
                link.opened_at = time.time()
                protocol.sendMessage(b'{"type": "resume", "after": 0}')

            protocol = await self._connect(
                f"{link.session.ws_path}?token={link.session.token}", opened, Sink()
            )
            try:
                await asyncio.wait_for(first, 60)  # the catch-up's first frame
            except BaseException:
                with contextlib.suppress(Exception):
                    protocol.sendClose(code=1000)
                raise
            return protocol

        async def one(link: Link) -> None:
            deadline = time.monotonic() + CONNECT_DEADLINE_SECONDS
            backoff = 0.5
            started = time.perf_counter()
            while True:
                link.connect_attempts += 1
                try:
                    async with gate:
                        link.protocol = await attempt(link)
                    break
                except Exception as exc:  # noqa: BLE001 - counted; retried until the deadline
                    self.connect_failures.append(f"{type(exc).__name__}: {exc}")
                    if time.monotonic() + backoff > deadline:
                        link.protocol = None
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            self.connect_ms.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one(link) for link in self.links))

    async def browse(self, link: Link, until: float) -> None:
        """keep_alive every 30 s, a speak every ``speak_every`` s (jittered), until ``until``."""
        if link.protocol is None:
            return
        now = time.time()
        next_keep = now + self.rng.uniform(0, KEEP_ALIVE_SECONDS)
        next_speak = now + self.rng.uniform(0.05, 1.0) * self.speak_every
        while not link.closed_event.is_set():
            now = time.time()
            if now >= until:
                return
            await asyncio.sleep(max(0.0, min(next_keep, next_speak, until) - now))
            now = time.time()
            if link.closed_event.is_set() or now >= until:
                return
            if now >= next_keep:
                link.keep_alives += link.send({"type": "keep_alive"})
                next_keep += KEEP_ALIVE_SECONDS
            if now >= next_speak:
                if now < until - QUIET_TAIL_SECONDS:
                    text = self.sentences[self.rng.randrange(len(self.sentences))]
                    sent = time.time()
                    if link.send({"type": "speak", "text": text, "mode": "repeat"}):
                        link.pending_speaks.append(sent)
                        link.speak_sent.append(sent)
                        link.speaks += 1
                next_speak = now + self.speak_every * self.rng.uniform(0.8, 1.2)

    async def fetch_audio(self, link: Link, task_id: str) -> None:
        """The player's fetch loop for one task's chunks."""
        started = time.perf_counter()
        record: dict[str, Any] = {"chunks": 0, "bytes": 0, "chunk_ms": [], "status": None}
        headers = {"X-Player-Token": link.session.token}
        for index in range(1000):
            url = f"{link.session.audio_url}{task_id}/{index}.wav"
            t0 = time.perf_counter()
            try:
                response = await self.http.get(url, headers=headers)
            except Exception as exc:  # noqa: BLE001 - counted
                record["status"] = type(exc).__name__
                break
            record["chunk_ms"].append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                # 404 after a chunk: the task ended before the last chunk was marked, which
                # the player takes as the end too; on the first chunk it is a failure.
                ended = response.status_code == 404 and index > 0
                record["status"] = (
                    "complete (404 after the last)" if ended else response.status_code
                )
                break
            if index == 0:
                record["first_ms"] = (time.perf_counter() - started) * 1000
            record["chunks"] += 1
            record["bytes"] += len(response.content)
            if response.headers.get("X-Chunk-Last") == "1":
                record["status"] = "complete"
                break
        self.audio.append(record)

    async def echo(self, until: float) -> None:
        """One baseline socket: a frame a second, the reply timed (a round trip through a
        Channels consumer), and a WebSocket ping with it (answered by daphne's protocol, no
        application). A socket that fails or closes is counted and reopened (same backoff as
        the sessions' sockets)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0, ECHO_EVERY_SECONDS))
        backoff = 0.5
        while time.time() < until:
            sink = EchoSink(loop)
            protocol = None
            try:
                protocol = await self._connect(f"/bench/echo/{uuid.uuid4()}/", sink.on_open, sink)
                await asyncio.wait_for(sink.opened, 60)
                while time.time() < until:
                    reply: asyncio.Future[float] = loop.create_future()
                    pong: asyncio.Future[float] = loop.create_future()
                    sink.waiting.append(reply)
                    sink.pongs.append(pong)
                    sent = time.perf_counter()
                    protocol.sendMessage(b'{"type": "ping"}')
                    protocol.sendPing()
                    got = await asyncio.wait_for(reply, 30)
                    self.echo_rtt_ms.append((got - sent) * 1000)
                    self.ping_rtt_ms.append((await asyncio.wait_for(pong, 30) - sent) * 1000)
                    backoff = 0.5
                    await asyncio.sleep(max(0.0, ECHO_EVERY_SECONDS - (time.perf_counter() - sent)))
            except Exception:  # noqa: BLE001 - counted, then reopened
                self.echo_failures += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if protocol is not None:
                    with contextlib.suppress(Exception):  # already closed by the server
                        protocol.sendClose(code=1000)

    async def run(
        self, seconds: float, sample: Callable[[], Awaitable[None]]
    ) -> tuple[float, float]:
        start = time.time()
        until = start + seconds
        tasks = [asyncio.ensure_future(self.browse(link, until)) for link in self.links]
        tasks += [asyncio.ensure_future(self.echo(until)) for _ in range(self.echo_sockets)]
        while time.time() < until:
            await asyncio.sleep(min(SAMPLE_EVERY_SECONDS, max(0.0, until - time.time())))
            await sample()
        await asyncio.gather(*tasks)
        return start, time.time()

    async def wait_closed(self) -> int:
        """Wait for every client's ``session_state closed`` (or its socket's close); then close
        the sockets. Returns how many never saw the close."""
        self.ending = True
        live = [link for link in self.links if link.protocol is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(link.finished.wait() for link in live)), CLOSED_WAIT_SECONDS
            )
        missing = sum(1 for link in live if not link.finished.is_set())
        await asyncio.gather(*(t for link in live for t in link.audio_tasks))
        for link in live:
            if not link.closed_event.is_set():
                with contextlib.suppress(Exception):
                    link.protocol.sendClose(code=1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(link.closed_event.wait() for link in live)), 20)
        return missing

    def audio_report(self) -> dict[str, Any]:
        return {
            "tasks": len(self.audio),
            "by_outcome": dict(collections.Counter(str(a["status"]) for a in self.audio)),
            "chunks": sum(a["chunks"] for a in self.audio),
            "mib": round(sum(a["bytes"] for a in self.audio) / MIB, 1),
            "first_chunk_ms": summary([a["first_ms"] for a in self.audio if "first_ms" in a]),
            "chunk_fetch_ms": summary([x for a in self.audio for x in a["chunk_ms"]]),
        }

    def report(self, window: tuple[float, float]) -> dict[str, Any]:
        links = [link for link in self.links if link.protocol is not None]
        by_type: dict[str, list[float]] = collections.defaultdict(list)
        for link in links:
            for f in link.frames:
                if f.live and f.at is not None and window[0] <= f.received:
                    by_type[f.type].append((f.received - f.at) * 1000)
        all_live = [x for values in by_type.values() for x in values]
        errors: collections.Counter[str] = collections.Counter()
        for link in links:
            errors.update(link.errors)
        return {
            "sockets": len(self.links),
            "connected": len(links),
            "connect_attempts": sum(link.connect_attempts for link in self.links),
            "connect_failures": collections.Counter(self.connect_failures).most_common(5),
            "connect_ms": summary(self.connect_ms),
            "speaks_sent": sum(link.speaks for link in links),
            "keep_alives_sent": sum(link.keep_alives for link in links),
            "speaks_started": sum(len(link.speak_to_start_ms) for link in links),
            "speaks_without_start": sum(len(link.pending_speaks) for link in links),
            "frames": sum(len(link.frames) for link in links),
            "event_latency_ms": summary(all_live),
            "event_latency_ms_by_type": {k: summary(v) for k, v in sorted(by_type.items())},
            "speak_to_start_talking_ms": summary(
                [x for link in links for x in link.speak_to_start_ms]
            ),
            "seq_gaps_seen": sum(link.gaps for link in links),
            "duplicates_or_out_of_order": sum(link.duplicates for link in links),
            "error_frames": dict(errors),
            "closed_early": [
                link.close_code for link in self.links if link.close_before_end and link.protocol
            ],
            "audio": self.audio_report(),
            "echo": {
                "sockets": self.echo_sockets,
                "round_trips": len(self.echo_rtt_ms),
                "failures": self.echo_failures,
                "rtt_ms": summary(self.echo_rtt_ms),
                "protocol_ping_rtt_ms": summary(self.ping_rtt_ms),
            },
        }


# --- the run ------------------------------------------------------------------------------------


def synthesis_baseline(sentences: list[str]) -> dict[str, Any]:
    """Each sentence synthesised here, alone, before the servers start (the second of two runs):
    wall time to the first chunk, CPU for the whole utterance, seconds of audio."""
    from avatars.providers import local_tts

    info = local_tts.load_voice()
    first, cpu, audio = [], [], []
    for text in sentences:
        for attempt in range(2):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            seconds, first_s = 0.0, None
            for chunk in local_tts.synthesize_stream(text):
                if first_s is None:
                    first_s = time.perf_counter() - wall0
                seconds = (chunk.start_ms + chunk.duration_ms) / 1000
            if attempt == 1:
                first.append((first_s or 0.0) * 1000)
                cpu.append(time.process_time() - cpu0)
                audio.append(seconds)
    return {
        "voice_load_s": round(getattr(info, "load_seconds", 0.0), 2),
        "sentences": len(sentences),
        "first_chunk_ms": summary(first),
        "cpu_s_per_sentence": round(sum(cpu) / len(cpu), 3),
        "audio_s_per_sentence": round(sum(audio) / len(audio), 2),
        "realtime_factor_per_cpu_second": round(sum(audio) / sum(cpu), 1),
    }


class World:
    """The organisation, its keys and avatars, in the benchmark's database."""

    def __init__(self, sessions: int, provider: str) -> None:
        from systimz.orgs.models import Organisation, Plan, Scope
        from systimz.orgs.services import api_key_create, organisation_create
        from tests import factories

        org = organisation_create(slug="bench-load", name="Bench load", plan=Plan.ENTERPRISE)
        # Enterprise defaults to 100 concurrent sessions; room for the warm-up as well.
        Organisation.objects.filter(pk=org.pk).update(concurrent_sessions_limit=sessions + 5)
        self.org = Organisation.objects.get(pk=org.pk)
        self.keys = {
            phase: api_key_create(org=self.org, name=f"bench-{phase}", scopes=Scope.values).secret
            for phase in ("warmup", "baseline", "start", "stop")
        }
        factories.AvatarFactory(organisation=self.org, slug=LOCAL_SLUG, provider="local")
        if provider == "heygen":
            factories.ProviderCredentialFactory(
                organisation=self.org, provider="heygen", api_key=HEYGEN_KEY, plan=Plan.ENTERPRISE
            )
            voice = factories.VoicePresetFactory(organisation=self.org, voice_id="v-9", rate=1.0)
            factories.AvatarFactory(
                organisation=self.org,
                slug=HEYGEN_SLUG,
                provider="heygen",
                provider_avatar_id=HEYGEN_AVATAR,
                voice_preset=voice,
                quality="low",
            )


def server_env(
    redis_url: str, heygen_base: str | None, extra: list[str] | None = None
) -> dict[str, str]:
    from django.conf import settings

    from bench.relay import database_url

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "systimz.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": settings.SECRET_KEY,
        "SYSTIMZ_ENCRYPTION_KEYS": ",".join(settings.ENCRYPTION_KEYS),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    if heygen_base:
        env["HEYGEN_API_BASE"] = heygen_base
    for item in extra or []:  # --server-env: an experiment's setting, reported with the run
        key, _, value = item.partition("=")
        env[key] = value
    return env


def start_services(args: argparse.Namespace, tmp: Path, services: dict[str, Service]) -> None:
    """Start the emulator (heygen), daphne and the worker into ``services`` (so the caller
    can stop those that did start if a later one fails)."""
    heygen_base = None
    if args.provider == "heygen":
        port = free_port()
        services["heygen emulator"] = service = Service(
            "heygen",
            [
                *(sys.executable, "-m", "tests.emulators.heygen"),
                *("--port", str(port), "--key", f"{HEYGEN_KEY}:enterprise"),
            ],
            env=server_env(args.redis_url, None),
            cwd=ROOT,
            log_dir=tmp,
            port=port,
        )
        service.start()
        heygen_base = f"http://127.0.0.1:{port}"
    env = server_env(args.redis_url, heygen_base, args.server_env)
    port = free_port()
    services["daphne"] = daphne = Service(
        "daphne",
        [
            *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
            "bench.relay_app:application",
        ],
        env=env,
        cwd=ROOT,
        log_dir=tmp,
        port=port,
    )
    daphne.start()
    services["celery"] = celery = Service(
        "celery",
        [
            *(sys.executable, "-m", "celery", "-A", "systimz", "worker", "--beat"),
            *("--schedule", str(tmp / "beat-schedule"), "--concurrency", "1"),
            *("--loglevel", "INFO", "-n", f"bench-load-{os.getpid()}@%h"),
        ],
        env=env,
        cwd=ROOT,
        log_dir=tmp,
        ready_text=" ready.",
    )
    celery.start()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        raise SystemExit("--redis-url must name a database of its own (not 0): it is flushed")
    client.flushdb()
    client.close()


async def run_async(spec: dict[str, Any]) -> dict[str, Any]:
    """Phases 1-3, in the client process (see ``client_main``)."""
    import httpx  # noqa: TID251 - the browsers' HTTP to our own server, not a provider's

    port, pids, keys = spec["port"], spec["pids"], spec["keys"]
    origin = f"http://127.0.0.1:{port}"
    machine = Machine(pids)
    report: dict[str, Any] = {
        "rss_mib": {
            "daphne idle": round(tree_rss_bytes(pids["daphne"]) / MIB, 1),
            "celery idle": round(tree_rss_bytes(pids["celery"]) / MIB, 1),
        }
    }
    slug = LOCAL_SLUG if spec["provider"] == "local" else HEYGEN_SLUG
    n, c = spec["sessions"], spec["concurrency"]
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)

    def api(phase: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=origin,
            headers={"Authorization": f"Bearer {keys[phase]}"},
            limits=limits,
            timeout=HTTP_TIMEOUT_SECONDS,
        )

    # Warm-up (untimed): the first requests import and connect; the first local session loads
    # the voice in daphne.
    async with api("warmup") as client:
        for _ in range(5):
            await client.get("/api/v1/organisation/")
        response = await client.post("/api/v1/sessions/", json={"avatar": slug})
        if response.status_code != 201:
            raise RuntimeError(f"warm-up start: {response.status_code} {response.text[:300]}")
        warm_id = response.json()["id"]
        await client.post(f"/api/v1/sessions/{warm_id}/stop")
    report["warmup_session"] = warm_id
    report["rss_mib"]["daphne after warm-up"] = round(tree_rss_bytes(pids["daphne"]) / MIB, 1)

    log(f"baseline: {n} x GET /api/v1/organisation/, {c} in flight")
    async with api("baseline") as client:
        m0 = machine.mark()
        calls, wall = await burst(client, [("GET", "/api/v1/organisation/", None)] * n, c)
        m1 = machine.mark()
    report["baseline_get"] = burst_report(calls, wall, 200, Machine.between(m0, m1))
    log(f"start burst: {n} x POST /api/v1/sessions/ ({slug}), {c} in flight")
    async with api("start") as client:
        m0 = machine.mark()
        calls, wall = await burst(client, [("POST", "/api/v1/sessions/", {"avatar": slug})] * n, c)
        m1 = machine.mark()
    report["start"] = burst_report(calls, wall, 201, Machine.between(m0, m1))
    started = [
        Started(
            id=call.body["id"],
            token=call.body["player"]["token"],
            ws_path=call.body["player"]["websocket_url"],
            audio_url=call.body["media"].get("audio_url", ""),
        )
        for call in calls
        if call.status == 201
    ]
    report["session_ids"] = [s.id for s in started]
    b, s = report["baseline_get"], report["start"]
    report["start_ratios"] = {
        "p50": ratio(s["latency_ms"]["p50"], b["latency_ms"]["p50"]),
        "p99": ratio(s["latency_ms"]["p99"], b["latency_ms"]["p99"]),
        "rate": ratio(b["per_second"], s["per_second"]),
        "daphne_cpu_per_request": ratio(
            s["daphne_cpu_ms_per_request"], b["daphne_cpu_ms_per_request"]
        ),
    }
    log(
        f"  {s['ok']}/{n} started, {s['per_second']}/s, p50 {s['latency_ms']['p50']} ms, "
        f"p99 {s['latency_ms']['p99']} ms; GET p50 {b['latency_ms']['p50']} ms"
    )

    runner: SteadyState | None = None
    steady_report: dict[str, Any] = {}
    audio_limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=origin, limits=audio_limits, timeout=HTTP_TIMEOUT_SECONDS
    ) as http:
        if spec["provider"] == "local" and spec["minutes"] > 0 and started:
            speak_every = spec["speak_every"]
            runner = SteadyState(
                port,
                http,
                started,
                speak_every=speak_every,
                sentences=spec["sentences"],
                echo_sockets=spec["echo_sockets"],
                rng=random.Random(spec["seed"]),
            )
            log(f"steady state: connecting {len(started)} sockets")
            await runner.connect_all()
            samples: list[dict[str, Any]] = []

            async def sample() -> None:
                mark = machine.mark()
                samples.append(
                    {
                        "t": round(time.time() - t_start, 1),
                        "loadavg": mark["loadavg"],
                        "rss_mib": {k: round(v / MIB, 1) for k, v in mark["rss"].items()},
                    }
                )
                log(
                    f"  t={samples[-1]['t']:>5} s load {mark['loadavg']} "
                    f"rss {samples[-1]['rss_mib']}"
                )

            log(
                f"  {len(runner.connect_ms)} connected; {spec['minutes']:g} min, a speak every "
                f"{speak_every:.0f} s per session, keep_alive every {KEEP_ALIVE_SECONDS:.0f} s"
            )
            t_start = time.time()
            m0 = machine.mark()
            window = await runner.run(spec["minutes"] * 60, sample)
            m1 = machine.mark()
            steady_report = runner.report(window)
            steady_report["resources"] = Machine.between(m0, m1)
            steady_report["samples"] = samples
            steady_report["rss_mib"] = {
                name: {
                    "start": round(m0["rss"][name] / MIB, 1),
                    "end": round(m1["rss"][name] / MIB, 1),
                    "growth_pct": round((m1["rss"][name] / m0["rss"][name] - 1) * 100, 1)
                    if m0["rss"][name]
                    else None,
                }
                for name in ("daphne", "celery")
            }
        log(f"stop: {len(started)} x POST /api/v1/sessions/<id>/stop, {c} in flight")
        async with api("stop") as client:
            m0 = machine.mark()
            calls, wall = await burst(
                client, [("POST", f"/api/v1/sessions/{x.id}/stop", None) for x in started], c
            )
            m1 = machine.mark()
        report["stop"] = burst_report(calls, wall, 200, Machine.between(m0, m1))
        if runner is not None:
            steady_report["clients_without_closed_event"] = await runner.wait_closed()
            steady_report["audio"] = runner.audio_report()  # with the fetches still running
            steady_report["speak_timeline"] = {
                link.session.id: {"sent": link.speak_sent, "start_received": link.start_received}
                for link in runner.links
                if link.protocol is not None
            }
            steady_report["received"] = {
                link.session.id: [f.seq for f in link.frames if f.seq is not None]
                for link in runner.links
                if link.protocol is not None
            }
            report["steady"] = steady_report
    report["rss_mib"]["daphne end"] = round(tree_rss_bytes(pids["daphne"]) / MIB, 1)
    report["rss_mib"]["celery end"] = round(tree_rss_bytes(pids["celery"]) / MIB, 1)
    return report


def client_main(spec_path: str) -> int:
    """``--client SPEC``: the browsers, in a process without Django (which makes txaio use
    Twisted for daphne's sake; these clients are asyncio): runs the phases, prints the report
    as one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    print(json.dumps(asyncio.run(run_async(spec))), flush=True)
    return 0


def run_clients(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Start the client process with ``spec`` and return its report."""
    import subprocess

    path = tmp / "client-spec.json"
    path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "bench.load", "--client", str(path)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the client process failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def verify(report: dict[str, Any], provider: str) -> dict[str, Any]:
    """From the database: every session closed by the user, one usage row each; events the
    clients missed against the log."""
    from django.db.models import Count

    from sessions.events import PUBLIC_TYPES
    from sessions.models import AvatarSession, SessionEvent, UsageRecord

    ids = report["session_ids"]
    rows = AvatarSession.objects.filter(pk__in=ids)
    statuses = collections.Counter(rows.values_list("status", flat=True))
    reasons = collections.Counter(rows.values_list("close_reason", flat=True))
    usage = dict(
        UsageRecord.objects.filter(session_id__in=ids, kind="session")
        .values_list("session_id")
        .annotate(n=Count("id"))
        .values_list("session_id", "n")
    )
    counts = collections.Counter(usage.get(uuid.UUID(i), 0) for i in ids)
    checks: dict[str, Any] = {
        "sessions": len(ids),
        "status": dict(statuses),
        "close_reason": dict(reasons),
        "usage_rows_per_session": {str(k): v for k, v in sorted(counts.items())},
        "all_closed_by_user": statuses.get("closed", 0) == len(ids)
        and reasons.get("user", 0) == len(ids),
        "one_usage_row_each": counts.get(1, 0) == len(ids),
        "stop_errors": sum(report["stop"]["errors_by_status"].values()),
        "start_errors": sum(report["start"]["errors_by_status"].values()),
    }
    steady = report.get("steady")
    if steady is not None:
        received = steady.pop("received")
        log_seqs: dict[str, dict[int, str]] = collections.defaultdict(dict)
        for sid, seq, kind in SessionEvent.objects.filter(
            session_id__in=list(received), type__in=PUBLIC_TYPES
        ).values_list("session_id", "seq", "type"):
            log_seqs[str(sid)][seq] = kind
        missing_types: collections.Counter[str] = collections.Counter()
        for sid, seqs in received.items():
            got, last = set(seqs), max(seqs, default=0)
            for seq, kind in log_seqs[sid].items():
                if seq not in got:
                    # after the last frame the client got (it had left) or a hole in its stream
                    missing_types[
                        f"{kind} ({'after its last frame' if seq > last else 'hole'})"
                    ] += 1
        missing = sum(missing_types.values())
        steady["events_missing_by_type"] = dict(missing_types)
        steady["speak_path_ms"] = speak_path(steady.pop("speak_timeline"))
        steady["events_in_log"] = sum(len(v) for v in log_seqs.values())
        steady["events_missing"] = missing
        checks["events_missing"] = missing
    if provider == "heygen":
        checks["heygen_active_after"] = report.pop("heygen_active_after", None)
    return checks


def speak_path(timeline: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where a speak's time goes, from the log's timestamps: the frame sent -> its ``task``
    record (socket, consumer, the sync thread, ``session_speak``); -> ``avatar_start_talking``
    recorded (the speaker: floor, first chunk's synthesis, the write); -> received (relay).
    A session's speaks are matched to its ``task`` records in order."""
    from sessions.models import SessionEvent

    rows = SessionEvent.objects.filter(
        session_id__in=list(timeline), type__in=["task", "avatar_start_talking"]
    ).order_by("session_id", "seq")
    tasks: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
    starts: dict[str, float] = {}
    for row in rows.values_list("session_id", "type", "payload", "created_at"):
        sid, kind, payload, created = str(row[0]), row[1], row[2], row[3].timestamp()
        if kind == "task":
            tasks[sid].append((str(payload.get("task_id")), created))
        else:
            starts[str(payload.get("task_id"))] = created
    to_task, to_start, to_client = [], [], []
    for sid, seen in timeline.items():
        for sent, (task_id, task_at) in zip(seen["sent"], tasks[sid], strict=False):
            to_task.append((task_at - sent) * 1000)
            if task_id in starts:
                to_start.append((starts[task_id] - task_at) * 1000)
                if task_id in seen["start_received"]:
                    to_client.append((seen["start_received"][task_id] - starts[task_id]) * 1000)
    return {
        "frame_to_task_record": summary(to_task),
        "task_record_to_start_talking_record": summary(to_start),
        "start_talking_record_to_client": summary(to_client),
    }


def heygen_active(services: dict[str, Service]) -> int:
    """Sessions the emulator still has running for the bench's key."""
    from avatars.providers.heygen import HeyGenInteractive

    base = f"http://127.0.0.1:{services['heygen emulator'].port}"
    client = HeyGenInteractive(api_key=HEYGEN_KEY, base_url=base)
    try:
        return len(client.list_active())
    finally:
        client.close()


def auto_speak_every(sessions: int, synthesis: dict[str, Any], cores: float) -> float:
    """The speak period that makes the sessions' synthesis need about ``cores``."""
    return max(10.0, math.ceil(sessions * synthesis["cpu_s_per_sentence"] / cores))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.knowledge_ask import engine_info, machine_info
    from bench.sessions import SENTENCES

    loadavg_start = load_average()
    synthesis = None
    speak_every = args.speak_every or 0.0
    if args.provider == "local":
        log("synthesis baseline (this process, before the servers start)")
        synthesis = synthesis_baseline(SENTENCES)
        if not speak_every:
            speak_every = auto_speak_every(args.sessions, synthesis, args.synthesis_cores)
        log(
            f"  {synthesis['cpu_s_per_sentence']} CPU s and {synthesis['audio_s_per_sentence']} s "
            f"of audio per sentence; speak every {speak_every:g} s"
        )
    flush_redis(args.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="systimz-bench-load-"))
    with bench_database() as name:
        world = World(args.sessions, args.provider)
        log("starting the servers")
        services: dict[str, Service] = {}
        try:
            start_services(args, tmp, services)
            spec = {
                "port": services["daphne"].port,
                "pids": {name: service.pid for name, service in services.items()},
                "keys": world.keys,
                "provider": args.provider,
                "sessions": args.sessions,
                "concurrency": args.concurrency,
                "minutes": args.minutes,
                "speak_every": speak_every,
                "sentences": SENTENCES,
                "echo_sockets": args.echo_sockets,
                "seed": args.seed,
            }
            report = run_clients(spec, tmp)
            if args.provider == "heygen":
                report["heygen_active_after"] = heygen_active(services)
        except BaseException:
            for service in services.values():
                log(f"--- {service.name} log\n{service.log_tail()}")
            raise
        finally:
            for service in reversed(list(services.values())):
                service.stop()  # a service that never started is a no-op
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for path in tmp.glob("*.log"):
                    (Path(args.logs) / path.name).write_bytes(path.read_bytes())
        checks = verify(report, args.provider)
        database = {**engine_info(), "name": name}
        from django.db import connections

        connections.close_all()
    flush_redis(args.redis_url)
    shutil.rmtree(tmp, ignore_errors=True)
    steady = report.get("steady")
    ratios: dict[str, Any] = {"start vs GET": report.pop("start_ratios")}
    if steady is not None:
        echo_p50 = steady["echo"]["rtt_ms"]["p50"]
        echo_p99 = steady["echo"]["rtt_ms"]["p99"]
        ratios["event latency vs echo round trip"] = {
            "p50": ratio(steady["event_latency_ms"]["p50"], echo_p50),
            "p99": ratio(steady["event_latency_ms"]["p99"], echo_p99),
        }
        if synthesis is not None:
            ratios["speak->start_talking vs bare synthesis to first chunk"] = {
                "p50": ratio(
                    steady["speak_to_start_talking_ms"]["p50"], synthesis["first_chunk_ms"]["p50"]
                ),
                "p99": ratio(
                    steady["speak_to_start_talking_ms"]["p99"], synthesis["first_chunk_ms"]["p99"]
                ),
            }
            spoken = steady["speaks_started"]
            daphne_cpu = steady["resources"]["cpu_seconds"]["daphne"]
            estimate = spoken * synthesis["cpu_s_per_sentence"]
            steady["synthesis"] = {
                "tasks_spoken": spoken,
                "estimated_cpu_s": round(estimate, 1),
                "estimated_cores": round(estimate / steady["resources"]["seconds"], 3),
                "share_of_daphne_cpu": round(estimate / daphne_cpu, 3) if daphne_cpu else None,
            }
        idle = report["rss_mib"]["daphne after warm-up"]
        ratios["daphne RSS end vs after warm-up (idle, voice loaded)"] = ratio(
            steady["rss_mib"]["daphne"]["end"], idle
        )
    return {
        "benchmark": "load",
        "arguments": {
            "sessions": args.sessions,
            "minutes": args.minutes,
            "provider": args.provider,
            "concurrency": args.concurrency,
            "speak_every_s": speak_every if args.provider == "local" else None,
            "keep_alive_every_s": KEEP_ALIVE_SECONDS,
            "echo_sockets": args.echo_sockets,
            "redis_url": args.redis_url,
            "server_env": args.server_env,
            "seed": args.seed,
        },
        "machine": machine_info(),
        "database": database,
        "loadavg": {"start": loadavg_start, "end": load_average()},
        "synthesis_baseline": synthesis,
        **report,
        "ratios": ratios,
        "checks": checks,
        "ok": checks["all_closed_by_user"]
        and checks["one_usage_row_each"]
        and checks["stop_errors"] == 0
        and checks["start_errors"] == 0
        and checks.get("events_missing", 0) == 0
        and checks.get("heygen_active_after", 0) in (0, None),
    }


# --- output -------------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    """A Markdown summary of the report."""

    def lat(s: dict[str, Any]) -> str:
        return f"{s['p50']} / {s['p95']} / {s['p99']} / {s['max']}" if s["n"] else "-"

    a, m = r["arguments"], r["machine"]
    lines = [
        f"## Load: {a['sessions']} concurrent `{a['provider']}` sessions",
        "",
        f"{m.get('cpus')} CPUs, Python {m.get('python')}, Django {m.get('django')}, "
        f"{r['database'].get('engine')} {r['database'].get('version')}; load average "
        f"{r['loadavg']['start']} at the start, {r['loadavg']['end']} at the end; "
        f"concurrency {a['concurrency']}; server environment {a.get('server_env') or '-'}.",
        "",
        "| burst | requests | ok | errors | per s | p50 / p95 / p99 / max ms | daphne CPU ms/req |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for label, key in (
        ("GET organisation/ (baseline)", "baseline_get"),
        ("POST sessions/ (start)", "start"),
        ("POST sessions/<id>/stop", "stop"),
    ):
        b = r[key]
        lines.append(
            f"| {label} | {b['requests']} | {b['ok']} | {b['errors_by_status'] or 0} | "
            f"{b['per_second']} | {lat(b['latency_ms'])} | {b['daphne_cpu_ms_per_request']} |"
        )
    lines += ["", f"ratios: `{json.dumps(r['ratios'])}`", ""]
    s = r.get("steady")
    if s:
        res, ping = s["resources"], s["echo"]["protocol_ping_rtt_ms"]
        lines += [
            f"steady state: {res['seconds']:.0f} s, {s['connected']}/{s['sockets']} sockets, "
            f"a speak every {a['speak_every_s']:g} s, {s['speaks_sent']} speaks, "
            f"{s['keep_alives_sent']} keep_alives, {s['frames']} frames; machine busy "
            f"{res['machine_busy']:.0%}",
            "",
            "| figure | n | p50 / p95 / p99 / max ms |",
            "|---|---:|---:|",
            f"| event latency (receive - at), all live | {s['event_latency_ms']['n']} | "
            f"{lat(s['event_latency_ms'])} |",
        ]
        for kind, v in s["event_latency_ms_by_type"].items():
            lines.append(f"| … {kind} | {v['n']} | {lat(v)} |")
        lines += [
            f"| speak frame -> avatar_start_talking | {s['speak_to_start_talking_ms']['n']} | "
            f"{lat(s['speak_to_start_talking_ms'])} |",
            f"| audio: start_talking -> first chunk | {s['audio']['first_chunk_ms']['n']} | "
            f"{lat(s['audio']['first_chunk_ms'])} |",
            f"| audio: one chunk fetch | {s['audio']['chunk_fetch_ms']['n']} | "
            f"{lat(s['audio']['chunk_fetch_ms'])} |",
            f"| baseline: echo round trip (Channels consumer; {s['echo']['failures']} socket "
            f"failures) | {s['echo']['rtt_ms']['n']} | "
            f"{lat(s['echo']['rtt_ms'])} |",
            f"| baseline: WebSocket ping/pong (daphne, no app) | {ping['n']} | {lat(ping)} |",
        ]
        if r.get("synthesis_baseline"):
            sb = r["synthesis_baseline"]
            lines.append(
                f"| baseline: bare synthesis to first chunk | {sb['first_chunk_ms']['n']} | "
                f"{lat(sb['first_chunk_ms'])} |"
            )
        lines += [
            "",
            f"seq gaps seen {s['seq_gaps_seen']} (internal records skip a seq), duplicates or "
            f"out of order {s['duplicates_or_out_of_order']}, missing against the log "
            f"{s['events_missing']} of {s['events_in_log']} {s.get('events_missing_by_type')}, "
            f"error frames {s['error_frames']}, "
            f"closed early {s['closed_early']}, socket opens {s['connect_attempts']} for "
            f"{s['sockets']} sockets (failures {s['connect_failures']}), "
            f"audio {s['audio']['by_outcome']}",
            f"CPU seconds: {res['cpu_seconds']}; cores: {res['cores']}",
            f"RSS MiB: {s['rss_mib']}",
        ]
        for part, v in s.get("speak_path_ms", {}).items():
            lines.append(f"speak path, {part}: {v['n']} x, p50 / p95 / p99 / max {lat(v)} ms")
        if s.get("synthesis"):
            lines.append(f"synthesis: {s['synthesis']}")
        lines.append("")
    lines += [f"RSS MiB at marks: {r['rss_mib']}", f"checks: {r['checks']}", f"ok: {r['ok']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=3.0, help="steady state (local only)")
    parser.add_argument("--provider", choices=("local", "heygen"), default="local")
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight")
    parser.add_argument(
        "--speak-every",
        type=float,
        default=0.0,
        help="seconds between a session's speaks (default: sized from the synthesis CPU)",
    )
    parser.add_argument(
        "--synthesis-cores",
        type=float,
        default=0.75,
        help="the synthesis load --speak-every is sized for (default 0.75 core)",
    )
    parser.add_argument("--echo-sockets", type=int, default=10)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for daphne and the worker (an experiment, e.g. "
        "DATABASE_CONN_MAX_AGE=60); repeatable",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--logs", metavar="DIR", help="keep the servers' logs in DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args.client)
    if args.sessions < 1 or args.concurrency < 1 or args.minutes < 0:
        parser.error("--sessions and --concurrency must be positive, --minutes not negative")

    os.environ["REDIS_URL"] = args.redis_url  # this process's cache and layer, as the servers'
    import django

    django.setup()
    quiet("systimz", "httpx", "celery")
    report = run(args)
    print(json.dumps(report) if args.json else render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
