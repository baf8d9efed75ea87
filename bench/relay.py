"""The session relay's latency, loss and CPU under load: 200 WebSockets, events published at
1,000/s, against a raw Channels echo consumer in the same run, on both channel layers.

    python -m bench.relay [--seconds 60] [--rate 1000] [--sessions 200]
                          [--sockets-per-session 1] [--rows memory:echo,memory:publish,...]
                          [--threads 4] [--internal-every N] [--profile PREFIX] [--json]

It creates its own throwaway test database (as Django's test runner does: a temporary SQLite
file, or ``test_<name>_bench_<pid>`` on PostgreSQL, the one to quote: SQLite serialises the
writers) and drops it at the end. It serves ``bench.relay_app:application`` (Systimz's ASGI app
plus a bench-only echo consumer and publish endpoint) with daphne, in a subprocess on a free
loopback port, against that database, with ``DEBUG`` off; one daphne per channel layer.

A row is ``<config>:<mode>[@<events/s>]``; the default rows are every mode on both layers and
the Redis layer with a publisher of its own (``DEFAULT_ROWS``). Configurations:

- ``memory``: no ``REDIS_URL``, ``InMemoryChannelLayer``. It exists per process, so the
  publisher runs inside the daphne process (``POST /__bench__/publish``).
- ``redis``: ``REDIS_URL=--redis-url``, i.e. ``RedisPubSubChannelLayer``; the publisher still
  runs inside the daphne process, where most events are recorded in production (client frames
  and webhooks are handled there, and ``sessions.events`` hands them to the server's loop).
- ``redis-ext``: the same server, the publisher in a process of its own, as a Celery worker or a
  management command publishes (``sessions.events.publish`` then has no event loop to use).

Modes:

- ``echo`` (the baseline): sockets on ``/bench/echo/<id>/``, a raw ``AsyncJsonWebsocketConsumer``
  that joins a group and forwards; the publisher calls ``channel_layer.group_send`` from an
  asyncio loop, one task per event (open loop); no database, no ``seq`` logic.
- ``publish`` (the relay alone): sockets on ``/ws/sessions/<id>/?token=<player_token>`` (the
  real ``SessionConsumer``) with the site's ``Origin``, each sends ``{"type": "resume",
  "after": 0}``; ``--threads`` threads call ``sessions.events.publish`` with a message of the
  contract's shape and contiguous ``seq``, exactly what ``append_event`` publishes after its
  commit, without the database write. Such events are not in the log, so after a message the
  layer dropped every later one on that socket is lost too (a gap the log cannot fill).
- ``relay`` (the real path): the same sockets; the threads call
  ``sessions.services.append_event(session, "user_talking_message", {...})``: the insert under
  the session row's lock, then, after the commit, ``publish`` to ``session.<id>``. With
  ``--internal-every N`` every Nth event of a session is an internal ``task`` record (as each
  speak makes), which takes a ``seq`` but is not relayed, so listeners see a gap.

Sessions: ``--sessions`` fresh sessions per relay row, admitted with ``session_admit`` for an
enterprise organisation and set ``active`` in the database (closed afterwards), each with
``--sockets-per-session`` sockets. Event ``i`` goes to session ``i % sessions`` at the absolute
time ``start + i / rate``; one thread owns each session, so its events are published in order;
a publisher that falls behind sends back-to-back and gives up 5 s after the window ("unsent").
Every event carries ``sent_at`` (the wall clock just before the call) and ``due`` (its
scheduled time). The clients (asyncio + autobahn, which daphne installs; one process per 2,000
frames/s, or ``--client-procs``) record every frame's receive time:

- latency = receive time - ``sent_at`` (one machine, one clock); "sched" = receive time -
  ``due``, which also counts a publisher that fell behind;
- lost = events published to a socket's session - distinct events it received once the
  publisher has finished and no frame came for ``--drain`` seconds (or after 60 s);
  duplicates and out-of-order arrivals by the event's per-session counter; for the relay, a
  ``seq`` not above the previous one is a violation;
- CPU (``/proc/<pid>/stat``, in cores over the publishing window): the daphne process (with
  the publisher in it, except ``redis-ext``), the publisher's threads (``thread_time``) or
  process, redis-server, the clients, and how busy the whole machine was (``/proc/stat``).

The goal (the relay issue): the publisher reaches the rate, p99 <= 50 ms, nothing lost, each
event once and in order, and p99 <= 1.5 x the echo p99 on the same layer. Progress goes to
stderr; a table (or ``--json``) to stdout. ``--profile PREFIX`` writes a cProfile of the
server's loop thread per row (it slows the server down: not for figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("memory", "redis", "redis-ext")
MODES = ("echo", "publish", "relay")
DEFAULT_ROWS = (
    "memory:echo,memory:publish,memory:relay,redis:echo,redis:publish,redis:relay,redis-ext:publish"
)
EVENT_TYPE = "user_talking_message"
# A transcript chunk of a typical length: frames of ~280 bytes.
TEXT = (
    "Thanks, that helps. Could you tell me which of the two plans covers weekend support "
    "and how the hours are counted?"
)
CONNECT_CONCURRENCY = 20
READY_TIMEOUT = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_P99_MS = 50.0
GOAL_RATIO = 1.5


# --- Publishers (in the daphne process, or in a process of their own) -----------------------


def _give_up_after(seconds: float) -> float:
    return seconds + 5.0


def _summary(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/mean/max of millisecond values."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ms = sorted(values)
    if len(ms) == 1:
        p50 = p95 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return {
        "n": len(ms),
        "p50": round(p50, 3),
        "p95": round(p95, 3),
        "p99": round(p99, 3),
        "mean": round(statistics.fmean(ms), 3),
        "max": round(ms[-1], 3),
    }


def _iso_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def publish_threads(spec: dict[str, Any]) -> dict[str, Any]:
    """Modes ``relay`` and ``publish``: ``spec["threads"]`` threads, each owning the sessions
    ``s`` with ``s % threads == j`` (so one session's events are published in order)."""
    from django.db import connections

    from sessions.events import publish
    from sessions.models import AvatarSession
    from sessions.services import append_event

    mode, ids = spec["mode"], spec["sessions"]
    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    n, total = len(ids), round(rate * seconds)
    n_threads = max(1, min(int(spec["threads"]), n))
    internal_every = int(spec.get("internal_every") or 0)
    rows = AvatarSession.objects.filter(pk__in=ids).only("id", "organisation_id", "next_seq")
    sessions = {str(row.pk): row for row in rows}
    base_seq = {sid: row.next_seq for sid, row in sessions.items()}
    connections.close_all()
    start_at = time.time() + float(spec.get("start_delay", 0.2))
    give_up_at = start_at + _give_up_after(seconds)
    results: list[dict[str, Any]] = [{} for _ in range(n_threads)]

    def worker(j: int) -> None:
        cpu0 = time.thread_time()
        counts: dict[str, int] = {}
        lags: list[float] = []
        calls: list[float] = []
        errors, first_error, unsent, internal, last_done = 0, None, 0, 0, start_at
        for i in range(total):
            s = i % n
            if s % n_threads != j:
                continue
            sid, k = ids[s], i // n
            due = start_at + i / rate
            now = time.time()
            if now > give_up_at:
                unsent += 1
                continue
            if due > now:
                time.sleep(due - now)
            sent_at = time.time()
            payload = {"message": TEXT, "sent_at": sent_at, "due": due, "k": k}
            try:
                if internal_every and mode == "relay" and k % internal_every == internal_every - 1:
                    # An internal record (as a speak's "task"): it takes a seq, is not relayed,
                    # so the next event reaches every listener after a gap.
                    append_event(sessions[sid], "task", payload)
                    internal += 1
                    continue
                if mode == "relay":
                    append_event(sessions[sid], EVENT_TYPE, payload)
                else:
                    publish(
                        {
                            **payload,
                            "type": EVENT_TYPE,
                            "session_id": sid,
                            "seq": base_seq[sid] + k,
                            "at": _iso_now(),
                        }
                    )
                counts[sid] = counts.get(sid, 0) + 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            last_done = time.time()
            calls.append((last_done - sent_at) * 1000)
            lags.append((sent_at - due) * 1000)
        connections.close_all()
        results[j] = {
            "counts": counts,
            "lags": lags,
            "calls": calls,
            "errors": errors,
            "first_error": first_error,
            "unsent": unsent,
            "internal": internal,
            "last_done": last_done,
            "cpu_s": time.thread_time() - cpu0,
        }

    threads = [threading.Thread(target=worker, args=(j,), daemon=True) for j in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts: dict[str, int] = {}
    for r in results:
        counts.update(r["counts"])
    sent = sum(counts.values())
    end_at = max(r["last_done"] for r in results)
    return {
        "mode": mode,
        "total": total,
        "sent": sent,
        "unsent": sum(r["unsent"] for r in results),
        "internal": sum(r["internal"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "per_session": counts,
        "start_at": start_at,
        "end_at": end_at,
        "achieved_rate": round(
            (sent + sum(r["internal"] for r in results)) / max(end_at - start_at, 1e-9), 1
        ),
        "lag_ms": _summary([x for r in results for x in r["lags"]]),
        "call_ms": _summary([x for r in results for x in r["calls"]]),
        "threads": n_threads,
        "threads_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
    }


async def publish_echo(spec: dict[str, Any]) -> dict[str, Any]:
    """Mode ``echo``: ``group_send`` straight from an asyncio loop, paced the same way and open
    loop (each send is a task of its own, as ``sessions.events.publish`` makes them), so a slow
    layer shows as latency, not as a publisher that quietly slows down."""
    from channels.layers import get_channel_layer

    from bench.relay_app import echo_group

    layer = get_channel_layer()
    ids = spec["sessions"]
    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    n, total = len(ids), round(rate * seconds)
    start_at = time.time() + float(spec.get("start_delay", 0.2))
    give_up_at = start_at + _give_up_after(seconds)
    counts: dict[str, int] = {}
    lags: list[float] = []
    calls: list[float] = []
    errors: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def send(sid: str, event: dict[str, Any]) -> None:
        try:
            await layer.group_send(echo_group(sid), {"type": "bench.echo", "event": event})
            counts[sid] = counts.get(sid, 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {exc}")
        calls.append((time.time() - event["sent_at"]) * 1000)

    unsent, dispatched_at = 0, start_at
    for i in range(total):
        sid, k = ids[i % n], i // n
        due = start_at + i / rate
        now = time.time()
        if now > give_up_at:
            unsent += 1
            continue
        if due > now:
            await asyncio.sleep(due - now)
        sent_at = dispatched_at = time.time()
        event = {
            "message": TEXT,
            "sent_at": sent_at,
            "due": due,
            "k": k,
            "type": EVENT_TYPE,
            "session_id": sid,
            "seq": k + 2,
            "at": _iso_now(),
        }
        task = asyncio.ensure_future(send(sid, event))
        pending.add(task)
        task.add_done_callback(pending.discard)
        lags.append((sent_at - due) * 1000)
    await asyncio.gather(*pending)
    sent = sum(counts.values())
    return {
        "mode": "echo",
        "total": total,
        "sent": sent,
        "unsent": unsent,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "per_session": counts,
        "start_at": start_at,
        "end_at": time.time(),
        "achieved_rate": round(sent / max(dispatched_at - start_at, 1e-9), 1),
        "lag_ms": _summary(lags),
        "call_ms": _summary(calls),
        "threads": 0,
        "threads_cpu_s": None,
    }


async def run_publisher_in_server(spec: dict[str, Any]) -> dict[str, Any]:
    """Called by ``bench.relay_app`` inside daphne: echo on the server's loop, the relay modes
    in threads (as the server's own threads record events). With ``spec["profile"]``, the
    server's loop thread is profiled (cProfile) while publishing and the stats written there."""
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        if spec["mode"] == "echo":
            return await publish_echo(spec)
        return await asyncio.to_thread(publish_threads, spec)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(spec["profile"])


def publisher_main(spec_path: str) -> int:
    """``--publisher SPEC``: a process of its own; prints READY, waits for GO on stdin, then
    publishes and prints its figures as one JSON line."""
    import django

    django.setup()
    logging.getLogger("systimz").setLevel(logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 1
    cpu0 = time.process_time()
    echo = spec["mode"] == "echo"
    result = asyncio.run(publish_echo(spec)) if echo else publish_threads(spec)
    result["process_cpu_s"] = round(time.process_time() - cpu0, 3)
    print(json.dumps(result), flush=True)
    return 0


# --- Clients (a process of their own) ---------------------------------------------------------


class SocketRecord:
    """What one socket received."""

    def __init__(self, session: str, check_seq: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.check_seq = check_seq
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ks: set[int] = set()
        self.frames = self.duplicates = self.out_of_order = self.seq_violations = 0
        self.seq_gaps = 0
        self.errors = self.other = 0
        self.last_k: int | None = None
        self.last_seq: int | None = None
        self.close_code: int | None = None
        self.last_at = 0.0
        self.latencies: list[float] = []
        self.from_due: list[float] = []

    def frame(self, data: dict[str, Any], received: float) -> None:
        self.last_at = received
        if not self.ready.done():
            self.ready.set_result(None)
        seq = data.get("seq")
        if self.check_seq and isinstance(seq, int):
            if self.last_seq is not None and seq <= self.last_seq:
                self.seq_violations += 1  # sent twice, or out of seq order
            elif self.last_seq is not None and seq > self.last_seq + 1:
                self.seq_gaps += 1  # only internal events may be skipped
            self.last_seq = seq
        if data.get("type") == "error":
            self.errors += 1
        if "sent_at" not in data:
            self.other += 1
            return
        self.frames += 1
        self.latencies.append(round((received - data["sent_at"]) * 1000, 3))
        self.from_due.append(round((received - data["due"]) * 1000, 3))
        k = data["k"]
        if k in self.ks:
            self.duplicates += 1
        self.ks.add(k)
        if self.last_k is not None and k < self.last_k:
            self.out_of_order += 1
        self.last_k = k

    def closed(self, code: int | None) -> None:
        self.close_code = code
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready ({code})"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "frames": self.frames,
            "unique": len(self.ks),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "seq_violations": self.seq_violations,
            "seq_gaps": self.seq_gaps,
            "errors": self.errors,
            "other": self.other,
            "close_code": self.close_code,
        }


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    import txaio
    from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

    txaio.set_global_log_level("critical")  # failed handshakes are counted, not printed

    class Socket(WebSocketClientProtocol):
        record: SocketRecord

        def onOpen(self) -> None:
            self.sendMessage(b'{"type": "resume", "after": 0}')

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            received = time.time()
            self.factory.record.frame(json.loads(payload), received)

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
            self.factory.record.closed(code)

    loop = asyncio.get_running_loop()
    host, port, origin = "127.0.0.1", spec["port"], spec["origin"]
    records: list[SocketRecord] = []
    protocols: list[Any] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(item: dict[str, str]) -> None:
        record = SocketRecord(item["session"], spec["kind"] != "echo", loop)
        factory = WebSocketClientFactory(f"ws://{host}:{port}{item['path']}", origin=origin)
        factory.protocol = Socket
        factory.record = record
        async with gate:
            try:
                _, protocol = await loop.create_connection(factory, host, port)
                await asyncio.wait_for(record.ready, READY_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - reported as a failed socket
                failures.append(f"{item['session']}: {type(exc).__name__}: {exc}")
                return
        records.append(record)
        protocols.append(protocol)

    await asyncio.gather(*(connect(item) for item in spec["sockets"]))
    print(f"READY {len(records)} {len(failures)}", flush=True)
    cpu0 = time.process_time()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    cpu = time.process_time() - cpu0
    # STOP <events published per session>: wait until every socket has them all, or no frame
    # came for spec["drain"] seconds (what is still missing then counts as lost), at most 60 s.
    expected = json.loads(line.partition(" ")[2] or "{}")
    stop_at = time.time()
    while True:
        now = time.time()
        last = max([stop_at, *(r.last_at for r in records)])
        complete = all(len(r.ks) >= expected.get(r.session, 0) for r in records)
        if complete or now - last >= spec["drain"] or now - stop_at >= 60:
            break
        await asyncio.sleep(0.05)
    result = {
        "command": line.split(" ", 1)[0].strip(),
        "drained_s": round(time.time() - stop_at, 2),
        "cpu_s": round(cpu, 3),
        "failures": failures[:10],
        "failed": len(failures),
        "sockets": [r.as_dict() for r in records],
        "latency_ms": [x for r in records for x in r.latencies],
        "from_due_ms": [x for r in records for x in r.from_due],
    }
    for protocol in protocols:
        protocol.sendClose(code=1000)
    await asyncio.sleep(0.5)
    return result


def client_main(spec_path: str) -> int:
    """``--client SPEC``: open the sockets, print READY, record until STOP on stdin, then print
    what was received as one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    result = asyncio.run(_client(spec))
    print(json.dumps(result), flush=True)
    return 0


# --- Orchestration ----------------------------------------------------------------------------


class LineReader:
    """A subprocess's stdout, line by line, with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def get(self, timeout: float) -> str:
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError(f"process {self.proc.pid} ended (exit {self.proc.wait()})")
        return line.strip()


def proc_cpu(pid: int | None) -> float | None:
    """utime + stime of ``pid`` in seconds."""
    if pid is None:
        return None
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    total = sum(values) / CLK_TCK
    idle = (values[3] + values[4]) / CLK_TCK
    return total - idle, total


def redis_server_pid(redis_url: str) -> int | None:
    """The redis-server serving ``redis_url`` (read from /proc; only looked at)."""
    from urllib.parse import urlsplit

    port = str(urlsplit(redis_url).port or 6379)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            cmdline = (entry / "cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        if f":{port}" in cmdline or (port == "6379" and ":" not in cmdline):
            return int(entry.name)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    from django.db import connections

    s = connections["default"].settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    from urllib.parse import quote

    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Runner:
    def __init__(self, args: argparse.Namespace, log: Callable[[str], None], tmp: str) -> None:
        self.args = args
        self.log = log
        self.tmp = tmp
        self.db_url = database_url()
        self.org: Any = None
        self.avatar: Any = None
        self.daphne: subprocess.Popen[bytes] | None = None
        self.port = 0

    # processes

    def env(self, config: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "systimz.settings",
                "DATABASE_URL": self.db_url,
                "DEBUG": "0",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        if self.args.tail_seconds is not None:
            env["BENCH_RELAY_TAIL_SECONDS"] = str(self.args.tail_seconds)
        if config == "memory":
            env.pop("REDIS_URL", None)
        else:
            env["REDIS_URL"] = self.args.redis_url
        return env

    def start_daphne(self, config: str) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        with open(Path(self.tmp) / f"daphne-{config}.log", "wb") as logfile:
            self.daphne = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                [*command, "bench.relay_app:application"],
                cwd=ROOT,
                env=self.env(config),
                stdout=logfile,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.daphne.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.daphne_log(config)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not listen within 60 s")

    def daphne_log(self, config: str) -> str:
        path = Path(self.tmp) / f"daphne-{config}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop_daphne(self) -> None:
        if self.daphne is None:
            return
        self.daphne.send_signal(signal.SIGTERM)
        try:
            self.daphne.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.daphne.kill()
            self.daphne.wait()
        self.daphne = None
        if self.args.logs:
            Path(self.args.logs).mkdir(parents=True, exist_ok=True)
            for log in Path(self.tmp).glob("daphne-*.log"):
                shutil.copy(log, Path(self.args.logs) / log.name)

    def spawn(self, role: str, spec: dict[str, Any], config: str) -> subprocess.Popen[str]:
        path = Path(self.tmp) / f"{role}-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(spec))
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "bench.relay", f"--{role}", str(path)],
            cwd=ROOT,
            env=self.env(config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    # sessions

    def make_sessions(self, n: int) -> list[tuple[str, str]]:
        from datetime import timedelta

        from django.utils import timezone

        from sessions.models import AvatarSession
        from sessions.player import player_token
        from sessions.services import session_admit

        admitted = [session_admit(org=self.org, avatar=self.avatar) for _ in range(n)]
        now = timezone.now()
        AvatarSession.objects.filter(pk__in=[s.pk for s in admitted]).update(
            status="active", started_at=now, expires_at=now + timedelta(hours=2)
        )
        return [(str(s.pk), player_token(s)) for s in admitted]

    def close_sessions(self, ids: list[str]) -> None:
        from django.utils import timezone

        from sessions.models import AvatarSession

        AvatarSession.objects.filter(pk__in=ids).update(status="closed", ended_at=timezone.now())

    # one measurement

    def measure(self, config: str, mode: str, rate: float) -> dict[str, Any]:
        args = self.args
        external = config == "redis-ext"
        tokens: dict[str, str] = {}
        if mode == "echo":
            ids = [str(uuid.uuid4()) for _ in range(args.sessions)]
        else:
            made = self.make_sessions(args.sessions)
            ids = [sid for sid, _ in made]
            tokens = dict(made)
        sockets = []
        for sid in ids:
            for _ in range(args.sockets_per_session):
                path = (
                    f"/bench/echo/{sid}/"
                    if mode == "echo"
                    else f"/ws/sessions/{sid}/?token={tokens[sid]}"
                )
                sockets.append({"session": sid, "path": path})
        frames_per_s = rate * args.sockets_per_session
        n_procs = args.client_procs or min(4, max(1, math.ceil(frames_per_s / 2000)))
        clients = []
        for p in range(n_procs):
            spec = {
                "port": self.port,
                "origin": f"http://127.0.0.1:{self.port}",
                "kind": mode,
                "drain": args.drain,
                "sockets": sockets[p::n_procs],
            }
            proc = self.spawn("client", spec, config)
            clients.append((proc, LineReader(proc)))
        failed_sockets = 0
        for proc, reader in clients:
            ready = reader.get(READY_TIMEOUT + 60).split()
            if ready[0] != "READY":
                raise RuntimeError(f"client {proc.pid}: {ready}")
            failed_sockets += int(ready[2])
        self.log(
            f"  {len(sockets) - failed_sockets}/{len(sockets)} sockets ready "
            f"({n_procs} client process(es)); publishing for {args.seconds:g} s"
        )

        spec = {
            "mode": mode,
            "sessions": ids,
            "rate": rate,
            "seconds": args.seconds,
            "threads": args.threads,
            "internal_every": args.internal_every,
            "start_delay": 0.2,
            "profile": (
                f"{os.path.abspath(args.profile)}-{config}-{mode}.pstats"
                if args.profile and not external
                else None
            ),
        }
        publisher = None
        if external:
            publisher = self.spawn("publisher", spec, config)
            pub_reader = LineReader(publisher)
            if pub_reader.get(60) != "READY":
                raise RuntimeError("the publisher did not start")
        redis_pid = None if config == "memory" else redis_server_pid(args.redis_url)
        load_before = os.getloadavg()
        cpu_before = {
            "daphne": proc_cpu(self.daphne.pid),
            "redis": proc_cpu(redis_pid),
            "machine": machine_cpu(),
        }
        t0 = time.time()
        if publisher is not None:
            assert publisher.stdin is not None
            publisher.stdin.write("GO\n")
            publisher.stdin.flush()
            result = json.loads(pub_reader.get(args.seconds * 3 + 120))
            publisher.wait(timeout=30)
        else:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/__bench__/publish",
                data=json.dumps(spec).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            timeout = args.seconds * 3 + 120
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                result = json.loads(response.read())
        t1 = time.time()
        cpu_after = {
            "daphne": proc_cpu(self.daphne.pid),
            "redis": proc_cpu(redis_pid),
            "machine": machine_cpu(),
        }
        if "error" in result:
            raise RuntimeError(f"publisher: {result['error']}")
        stop = "STOP " + json.dumps(result["per_session"]) + "\n"
        for proc, _ in clients:
            assert proc.stdin is not None
            proc.stdin.write(stop)
            proc.stdin.flush()
        outputs = []
        for proc, reader in clients:
            outputs.append(json.loads(reader.get(180)))
            proc.wait(timeout=30)
        if mode != "echo":
            self.close_sessions(ids)
        window = t1 - t0

        def cores(name: str) -> float | None:
            a, b = cpu_before[name], cpu_after[name]
            return None if a is None or b is None else round((b - a) / window, 3)

        busy = cpu_after["machine"][0] - cpu_before["machine"][0]
        total = cpu_after["machine"][1] - cpu_before["machine"][1]
        per_session = result["per_session"]
        socket_rows = [s for out in outputs for s in out["sockets"]]
        expected = sum(per_session.get(s["session"], 0) for s in socket_rows)
        lost = sum(max(per_session.get(s["session"], 0) - s["unique"], 0) for s in socket_rows)
        latencies = [x for out in outputs for x in out["latency_ms"]]
        from_due = [x for out in outputs for x in out["from_due_ms"]]
        publisher_cpu = result.get("process_cpu_s", result.get("threads_cpu_s"))
        return {
            "config": config,
            "mode": mode,
            "rate": rate,
            "sockets": len(sockets),
            "sockets_failed": failed_sockets,
            "socket_failures": [f for out in outputs for f in out["failures"]][:5],
            "sockets_closed_early": sum(1 for s in socket_rows if s["close_code"] is not None),
            "published": result["sent"],
            "scheduled": result["total"],
            "unsent": result["unsent"],
            "publish_errors": result["errors"],
            "publish_first_error": result["first_error"],
            "achieved_rate": result["achieved_rate"],
            "publisher_lag_ms": result["lag_ms"],
            "publisher_call_ms": result["call_ms"],
            "publisher_threads": result["threads"],
            "frames_expected": expected,
            "frames_received": sum(s["frames"] for s in socket_rows),
            "lost": lost,
            "duplicates": sum(s["duplicates"] for s in socket_rows),
            "out_of_order": sum(s["out_of_order"] for s in socket_rows),
            "seq_violations": sum(s["seq_violations"] for s in socket_rows),
            "seq_gaps": sum(s["seq_gaps"] for s in socket_rows),
            "internal_events": result.get("internal", 0),
            "error_frames": sum(s["errors"] for s in socket_rows),
            "latency_ms": _summary(latencies),
            "from_schedule_ms": _summary(from_due),
            "window_s": round(window, 2),
            "drained_s": max(out["drained_s"] for out in outputs),
            "cpu_cores": {
                "daphne": cores("daphne"),
                "publisher": round(publisher_cpu / window, 3) if publisher_cpu else None,
                "publisher_in_daphne": not external,
                "redis_server": cores("redis"),
                "clients": round(sum(out["cpu_s"] for out in outputs) / window, 3),
                "machine_busy": round(busy / total, 3) if total else None,
            },
            "loadavg_before": [round(x, 2) for x in load_before],
        }

    def run(self) -> list[dict[str, Any]]:
        from systimz.orgs.models import Plan
        from tests.factories import AvatarFactory, OrganisationFactory

        self.org = OrganisationFactory(
            slug="bench-relay",
            name="Bench relay",
            plan=Plan.ENTERPRISE,
            concurrent_sessions_limit=max(self.args.sessions, 100),
        )
        self.avatar = AvatarFactory(organisation=self.org, slug="bench-relay")
        rows = []
        servers = list(dict.fromkeys(layer_of(config) for config, _, _ in self.args.rows))
        for server in servers:  # one daphne per layer; redis and redis-ext share one
            self.log(f"{server}: starting daphne")
            self.start_daphne(server)
            try:
                for config, mode, rate in self.args.rows:
                    if layer_of(config) != server:
                        continue
                    rate = rate or self.args.rate
                    self.log(f"{config} / {mode} at {rate:g} events/s")
                    row = self.measure(config, mode, rate)
                    lat = row["latency_ms"]
                    self.log(
                        f"  published {row['published']} at {row['achieved_rate']:.0f}/s, "
                        f"received {row['frames_received']}, lost {row['lost']}, "
                        f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms"
                    )
                    rows.append(row)
            except Exception:
                self.log(f"daphne log ({server}):\n{self.daphne_log(server)}")
                raise
            finally:
                self.stop_daphne()
        return rows


def evaluate(rows: list[dict[str, Any]]) -> None:
    """Add the ratio to the echo p99 on the same layer, and the goals, to each relay row."""
    base = {layer_of(r["config"]): r["latency_ms"]["p99"] for r in rows if r["mode"] == "echo"}
    for row in rows:
        p99 = row["latency_ms"]["p99"]
        ref = base.get(layer_of(row["config"]))
        row["p99_ratio_to_echo"] = round(p99 / ref, 2) if p99 is not None and ref else None
        if row["mode"] == "echo":
            continue
        row["goals"] = {
            "rate_reached": row["unsent"] == 0 and row["achieved_rate"] >= 0.98 * row["rate"],
            "p99_le_50ms": p99 is not None and p99 <= GOAL_P99_MS,
            "no_loss": row["lost"] == 0
            and row["sockets_failed"] == 0
            and row["publish_errors"] == 0,
            "once_in_order": row["duplicates"] == 0
            and row["out_of_order"] == 0
            and row["seq_violations"] == 0,
            # None: no echo row on this layer in the run, so the ratio is unknown
            "ratio_le_1_5": None
            if row["p99_ratio_to_echo"] is None
            else row["p99_ratio_to_echo"] <= GOAL_RATIO,
        }


def render(report: dict[str, Any]) -> str:
    a, m, db = report["arguments"], report["machine"], report["database"]
    lines = [
        f"relay benchmark: {a['sessions'] * a['sockets_per_session']} sockets "
        f"({a['sessions']} sessions x {a['sockets_per_session']}), {a['seconds']:g} s per row, "
        f"{a['threads']} publisher threads; {db['engine']} {db['version']}, daphne "
        f"{report['versions']['daphne']}, channels {report['versions']['channels']}, "
        f"channels_redis {report['versions']['channels_redis']}",
        f"machine: {m['cpus']} CPUs, {m['mem_gib']} GiB RAM, Python {m['python']}, "
        f"Django {m['django']}; load average before the run {report['loadavg_start']}",
        "",
        f"{'config':<10}{'mode':<8}{'target':>7}{'sent/s':>8}{'unsent':>7}{'lost':>7}"
        f"{'p50':>10}{'p95':>10}{'p99':>10}"
        f"{'max':>10}{'p99/echo':>10}{'sched p99':>11}"
        f"{'daphne':>8}{'pub':>7}{'redis':>7}{'machine':>8}  goals",
    ]

    def num(value: float | None, fmt: str = ".1f") -> str:
        return "-" if value is None else format(value, fmt)

    for r in report["rows"]:
        lat, cpu = r["latency_ms"], r["cpu_cores"]
        goals = r.get("goals")
        verdict = ""
        if goals is not None:
            missed = [name for name, ok in goals.items() if ok is False]
            unknown = [name for name, ok in goals.items() if ok is None]
            verdict = "met" if not missed else "NOT met: " + ", ".join(missed)
            if unknown:
                verdict += " (no echo row for " + ", ".join(unknown) + ")"
        lines.append(
            f"{r['config']:<10}{r['mode']:<8}{r['rate']:>7g}{r['achieved_rate']:>8.0f}{r['unsent']:>7}"
            f"{r['lost']:>7}"
            f"{num(lat['p50'], '.2f'):>10}{num(lat['p95'], '.2f'):>10}"
            f"{num(lat['p99'], '.2f'):>10}{num(lat['max']):>10}"
            f"{num(r['p99_ratio_to_echo'], '.2f'):>10}"
            f"{num(r['from_schedule_ms']['p99'], '.2f'):>11}"
            f"{num(cpu['daphne'], '.2f'):>8}{num(cpu['publisher'], '.2f'):>7}"
            f"{num(cpu['redis_server'], '.2f'):>7}{num(cpu['machine_busy'], '.0%'):>8}  {verdict}"
        )
    lines += [
        "",
        "latencies in ms (receive - sent_at; 'sched p99' from the scheduled time); CPU in cores "
        "over the publishing window (daphne includes the publisher except for redis-ext; 'pub' "
        "is the publisher's threads or process); unsent = scheduled but never published (the "
        "publisher gave up); lost = published but not received.",
    ]
    for r in report["rows"]:
        extra = []
        extra.append(f"published {r['published']}/{r['scheduled']}")
        if r["publish_errors"]:
            extra.append(f"{r['publish_errors']} publish errors ({r['publish_first_error']})")
        if r["internal_events"]:
            extra.append(f"{r['internal_events']} internal events (not relayed)")
        for key in ("duplicates", "out_of_order", "seq_violations", "seq_gaps", "error_frames"):
            if r[key]:
                extra.append(f"{key} {r[key]}")
        if r["sockets_failed"] or r["sockets_closed_early"]:
            extra.append(
                f"sockets failed {r['sockets_failed']}, closed early {r['sockets_closed_early']}"
            )
        call = r["publisher_call_ms"]
        extra.append(f"publish call p50/p99 {call['p50']}/{call['p99']} ms")
        lines.append(f"{r['config']} {r['mode']} @{r['rate']:g}: " + "; ".join(extra))
    return "\n".join(lines)


def _bounded(low: float, high: float, kind: type = int) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return number

    return parse


def layer_of(config: str) -> str:
    """The channel layer (and daphne server) a configuration runs on."""
    return "memory" if config == "memory" else "redis"


def parse_rows(value: str) -> list[tuple[str, str, float | None]]:
    """``config:mode[@rate]``, comma-separated; without ``@rate``, ``--rate``."""
    rows = []
    for item in (v.strip() for v in value.split(",")):
        config, _, rest = item.partition(":")
        mode, _, rate = rest.partition("@")
        try:
            per_row = float(rate) if rate else None
        except ValueError:
            per_row = -1.0
        if config not in CONFIGS or mode not in MODES or (per_row is not None and per_row <= 0):
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected <config>:<mode>[@<events/s>], config one of {CONFIGS}, "
                f"mode one of {MODES}"
            )
        rows.append((config, mode, per_row))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--seconds", type=_bounded(1, 3600, float), default=60.0)
    parser.add_argument("--rate", type=_bounded(1, 20_000, float), default=1000.0)
    parser.add_argument("--sessions", type=_bounded(1, 1000), default=200)
    parser.add_argument("--sockets-per-session", type=_bounded(1, 100), default=1)
    parser.add_argument(
        "--rows", type=parse_rows, default=parse_rows(DEFAULT_ROWS), help=f"default {DEFAULT_ROWS}"
    )
    parser.add_argument("--threads", type=_bounded(1, 64), default=4, help="publisher threads")
    parser.add_argument(
        "--internal-every",
        type=_bounded(0, 1000),
        default=0,
        help="relay mode: every Nth event of a session is an internal 'task' record (0: none)",
    )
    parser.add_argument("--client-procs", type=_bounded(0, 8), default=0, help="0: automatic")
    parser.add_argument(
        "--drain",
        type=_bounded(0.5, 60, float),
        default=5.0,
        help="after publishing, seconds without a frame before the missing events count as lost",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="cProfile the server's loop thread while publishing (in-server publishers only) "
        "into PREFIX-<config>-<mode>.pstats; the profiler slows the server, so not for figures",
    )
    parser.add_argument(
        "--tail-seconds",
        type=_bounded(0.1, 1e9, float),
        help="override sessions.consumers.TAIL_SECONDS in the server (in-memory layer's "
        "per-socket log tail), to measure its cost; 1e9 turns it off",
    )
    parser.add_argument("--logs", metavar="DIR", help="keep daphne's output in DIR")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args.client)
    if args.publisher:
        return publisher_main(args.publisher)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import channels
    import channels_redis
    import daphne
    import django

    django.setup()
    from django.db import connections
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    from bench.knowledge_ask import engine_info, machine_info

    logging.getLogger("systimz").setLevel(logging.WARNING)
    settings_dict = connections["default"].settings_dict
    tmp = tempfile.mkdtemp(prefix="systimz-bench-relay-")
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        settings_dict["TEST"]["NAME"] = os.path.join(tmp, "bench.sqlite3")
    else:
        settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_bench_{os.getpid()}"
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    setup_test_environment(debug=False)
    old_config = setup_databases(
        verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set()
    )
    log(f"test database {connections['default'].settings_dict['NAME']} ready")
    runner = Runner(args, log, tmp)
    try:
        rows = runner.run()
        database = engine_info()
    finally:
        runner.stop_daphne()
        connections.close_all()
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()
        shutil.rmtree(tmp, ignore_errors=True)
    evaluate(rows)
    report = {
        "benchmark": "relay",
        "arguments": {
            "seconds": args.seconds,
            "rate": args.rate,
            "sessions": args.sessions,
            "sockets_per_session": args.sockets_per_session,
            "threads": args.threads,
            "internal_every": args.internal_every,
            "tail_seconds": args.tail_seconds,
            "rows": [f"{c}:{m}" + (f"@{r:g}" if r else "") for c, m, r in args.rows],
        },
        "database": database,
        "machine": machine_info(),
        "versions": {
            "daphne": daphne.__version__,
            "channels": channels.__version__,
            "channels_redis": channels_redis.__version__,
        },
        "loadavg_start": loadavg_start,
        "goals": {"p99_ms": GOAL_P99_MS, "lost": 0, "p99_ratio_to_echo": GOAL_RATIO},
        "rows": rows,
    }
    print(json.dumps(report) if args.json else render(report))
    return 0 if all(r["sockets_failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
