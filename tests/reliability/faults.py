"""Process and network helpers for the fault tests (T10, T11, T15, T16 of reliability §4.2).

A fault test never touches the shared PostgreSQL or Redis: it starts its own servers here and
runs the app (daphne, a Celery worker) against them in subprocesses, so it can stop, restart
or cut them off.

- ``RedisServer``: a private ``redis-server`` on a free port, no persistence; ``stop`` /
  ``start`` again on the same port.
- ``PostgresCluster``: a private cluster (``initdb`` + ``pg_ctl`` in a temporary directory, run
  as the ``postgres`` user because PostgreSQL refuses root), on a free port; ``database(name)``
  copies a template migrated once per process with ``manage.py migrate``.
- ``TcpProxy``: a loopback TCP proxy that can add latency, abort every connection (our stand-in
  for packet loss: netem needs root in a network namespace and kernel modules not present
  here), or take the "link" down (bytes are held, nothing is closed) and bring it back.
- ``WsClient``: a small RFC 6455 client on a plain socket (the venv has no WebSocket client
  library), so a test can stop reading, or vanish without a close frame.
- ``App``: daphne (``tests.e2e.servers.AppServer`` with daphne options) and a Celery worker with
  beat, on the private servers, plus the organisation, key and HeyGen avatar a test uses.

Everything started here is stopped in ``finally`` blocks by the fixtures and, as a backstop, at
interpreter exit (``atexit``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet

from tests.e2e.servers import BASE_DIR, AppServer, free_port
from tests.emulators.heygen import HeyGenEmulator
from tests.workers import wait_for

REDIS_SERVER = shutil.which("redis-server")
PG_BIN = next(iter(sorted(glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
RUNUSER = shutil.which("runuser")  # PostgreSQL refuses to run as root: as root, run as postgres
AS_ROOT = os.geteuid() == 0
HAVE_POSTGRES_BINARIES = PG_BIN is not None and (RUNUSER is not None or not AS_ROOT)
HEYGEN_KEY = "hg-fault-key-0123456789abcdef"
AVATAR_ID = "Anna_public_3_20240108"

_cleanups: list[Callable[[], None]] = []


def needs_servers(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test that runs the app on private servers: slow, and skipped (with the reason)
    without the binaries to start them."""
    import pytest

    for mark in (
        pytest.mark.slow,
        pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary"),
        pytest.mark.skipif(
            not HAVE_POSTGRES_BINARIES,
            reason="needs PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/*/bin) and runuser",
        ),
    ):
        test = mark(test)
    return test


def _at_exit() -> None:
    for cleanup in reversed(_cleanups):
        with contextlib.suppress(Exception):
            cleanup()


atexit.register(_at_exit)


def env_seconds(name: str, default: float) -> float:
    """A duration from the environment (the fault tests' knobs), else ``default``."""
    raw = os.environ.get(name)
    return float(raw) if raw else default


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A private, non-persistent ``redis-server`` a test may stop and start again."""

    def __init__(self) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="systimz-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        _cleanups.append(self.close)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.dir / "redis.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - the system's redis-server
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self.ping, timeout=20, what="redis-server to answer")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a shutdown; nothing is saved either way)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- PostgreSQL -------------------------------------------------------------------------------


class PostgresCluster:
    """A private PostgreSQL cluster (trust auth, loopback, no fsync) in a temporary directory."""

    TEMPLATE = "systimz_fault_template"

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.bin = Path(PG_BIN).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="systimz-pg-"))
        if AS_ROOT:
            os.chown(self.dir, _uid("postgres"), -1)
        self.data = self.dir / "data"
        self.template_ready = False
        self.lock = threading.Lock()
        _cleanups.append(self.close)

    def _pg(self, *args: str, timeout: float = 120) -> None:
        prefix = [str(RUNUSER), "-u", "postgres", "--"] if AS_ROOT else []
        subprocess.run(  # noqa: S603 - the system's PostgreSQL tools, as its user
            [*prefix, *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.dir,
        )

    def init(self) -> PostgresCluster:
        self._pg(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        return self.start()

    def start(self) -> PostgresCluster:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def connect(self, name: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(name), autocommit=True, connect_timeout=5, **kwargs)

    def database(self, name: str) -> str:
        """A new database ``name`` with the project's schema (copied from a template migrated
        once per process); returns its URL."""
        with self.lock:
            if not self.template_ready:
                with self.connect() as conn:
                    conn.execute(f'CREATE DATABASE "{self.TEMPLATE}"')
                env = {**os.environ, "DATABASE_URL": self.url(self.TEMPLATE), "DEBUG": "1"}
                env.pop("REDIS_URL", None)
                subprocess.run(
                    [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                    cwd=BASE_DIR,
                    env=env,
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
                self.template_ready = True
            with self.connect() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.TEMPLATE}"')
        return self.url(name)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def session_column(db: str, session_id: str, column: str) -> int:
    """One integer column of a session's row (``listeners``, ``next_seq``) in the private
    database ``db``, read directly: the app's view, without the app."""
    assert column in ("listeners", "next_seq")
    with private_postgres().connect(db) as conn:
        row = conn.execute(
            f"SELECT {column} FROM avatar_sessions_avatarsession WHERE id = %s",  # noqa: S608
            (session_id,),
        ).fetchone()
    return int(row[0])


def wait_for_quiet_log(db: str, session_id: str, quiet: float = 2.0) -> None:
    """Until the session's log has not grown for ``quiet`` seconds (frames a relay had queued
    are recorded by then)."""
    seen = {"seq": -1, "since": time.monotonic()}

    def still() -> bool:
        seq = session_column(db, session_id, "next_seq")
        if seq != seen["seq"]:
            seen.update(seq=seq, since=time.monotonic())
        return time.monotonic() - seen["since"] >= quiet

    wait_for(still, timeout=120, what="the session's log to stop growing", interval=0.2)


_cluster: PostgresCluster | None = None
_cluster_lock = threading.Lock()


def private_postgres() -> PostgresCluster:
    """This process's private cluster (one initdb per test run, shared by the fault modules)."""
    global _cluster
    with _cluster_lock:
        if _cluster is None:
            _cluster = PostgresCluster().init()
        return _cluster


# --- a loopback TCP proxy with faults ---------------------------------------------------------


class TcpProxy:
    """``127.0.0.1:<port>`` forwarded to ``target``, with faults a test switches on and off:
    ``delay`` (seconds added to every chunk, each direction), ``abort_all()`` (reset every open
    connection), ``link_down()`` / ``link_up()`` (hold every byte and every close, as a cut cable
    does, and refuse new connections; on ``link_up`` what was held flows on)."""

    def __init__(self, target_port: int, *, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        _cleanups.append(self.close)

    def start(self) -> TcpProxy:
        self.thread.start()
        return self

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                _reset(client)  # the far side is unreachable: the connection fails
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self.lock:
                self.pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst``: each chunk waits for the link and for ``delay`` after it
        was read (latency, not a bandwidth cap: chunks read meanwhile are not held back more)."""
        pending: list[tuple[float, bytes]] = []
        while True:
            timeout = None
            if pending:
                timeout = max(0.0, pending[0][0] - time.monotonic())
            try:
                readable, _, _ = select.select([src], [], [], timeout)
            except (OSError, ValueError):
                break
            if readable:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                pending.append((time.monotonic() + self.delay, data))
            while pending and pending[0][0] <= time.monotonic():
                self.up.wait()
                _, data = pending.pop(0)
                if not data:  # the peer closed: pass the close on
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
            if not readable and not pending:
                continue

    def abort_all(self) -> int:
        """Reset every open connection (both sides see a reset); returns how many."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        return len(pairs)

    def link_down(self) -> None:
        self.up.clear()

    def link_up(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.closed = True
        self.up.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        self.abort_all()


def _reset(sock: socket.socket) -> None:
    """Close abortively (SO_LINGER 0: a reset), as a dropped connection looks to its peer.
    ``shutdown`` first, so a pump thread blocked in ``select`` on it wakes up and lets go
    (a bare close would leave the socket alive under that select, and the peer unaware)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- a WebSocket client -----------------------------------------------------------------------


class WsClosed(Exception):
    """The connection ended: ``code`` is the close frame's code, None if it just broke."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"websocket closed ({code})")
        self.code = code


class WsClient:
    """RFC 6455 over a plain blocking socket: text frames out (masked), text frames in, pings
    answered while receiving. Reading happens only in ``recv_json``, so a test that stops
    calling it is a client that stops reading."""

    def __init__(
        self,
        port: int,
        path: str,
        *,
        origin: str | None = None,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WsClosed(None)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise WsClosed(None)
        self.close_code: int | None = None
        self.send_lock = threading.Lock()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self.send_lock:
            self.sock.sendall(header + mask + masked)

    def send_json(self, message: dict[str, Any]) -> None:
        try:
            self._send_frame(0x1, json.dumps(message).encode())
        except OSError as exc:
            raise WsClosed(None) from exc

    def _frame(self) -> tuple[int, bytes] | None:
        """One complete frame from the buffer, or None if it is not all here yet."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, offset = b1 & 0x7F, 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, offset = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, offset = struct.unpack("!Q", self.buf[2:10])[0], 10
        if len(self.buf) < offset + n:
            return None
        payload, self.buf = self.buf[offset : offset + n], self.buf[offset + n :]
        return b0 & 0x0F, payload

    def recv_json(self, timeout: float) -> dict[str, Any] | None:
        """The next text message, or None when none arrives within ``timeout``; raises
        ``WsClosed`` when the server closes or the connection breaks."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is not None:
                opcode, payload = frame
                if opcode == 0x1:
                    return json.loads(payload)
                if opcode == 0x9:
                    with contextlib.suppress(OSError):
                        self._send_frame(0xA, payload)
                elif opcode == 0x8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    raise WsClosed(self.close_code)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as exc:
                raise WsClosed(None) from exc
            if not chunk:
                raise WsClosed(None)
            self.buf += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, struct.pack("!H", 1000))
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        _reset(self.sock)


@dataclass
class ResumingListener:
    """A player that keeps a session's event log: it connects, sends ``resume`` after the last
    seq it holds, reads, and on any break reconnects (with a short backoff) and resumes again.
    Runs in its own thread until ``stop``."""

    port: int
    path: str
    events: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    breaks: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def start(self) -> ResumingListener:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                client = WsClient(self.port, self.path, timeout=5)
            except (OSError, WsClosed):
                self.stopping.wait(0.5)
                continue
            self.connects += 1
            try:
                client.send_json({"type": "resume", "after": self.last_seq})
                while not self.stopping.is_set():
                    event = client.recv_json(0.5)
                    if event is not None:
                        self.events.append(event)
            except (OSError, WsClosed):
                self.breaks += 1
            finally:
                client.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


@dataclass
class EventDriver:
    """A player that makes events: every ``interval`` it forwards a media-room word
    (``client_event``), which the relay records in the session's log, reconnecting on any
    break. ``sent`` counts the frames written to a socket."""

    port: int
    path: str
    interval: float = 0.1
    message_size: int = 0  # pad each word to this many characters (the relay keeps 1000)
    sent: int = 0
    breaks: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)  # connected, sends once set
    thread: threading.Thread | None = None

    def start(self, *, paused: bool = False) -> EventDriver:
        if not paused:
            self.go.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                client = WsClient(self.port, self.path, timeout=5)
            except (OSError, WsClosed):
                self.stopping.wait(0.5)
                continue
            try:
                client.send_json({"type": "resume", "after": 1_000_000_000})
                while not self.go.is_set() and not self.stopping.is_set():
                    client.recv_json(0.1)
                while not self.stopping.is_set():
                    word = {"type": "avatar_talking_message", "task_id": "drv"}
                    word["message"] = f" w{self.sent}".ljust(self.message_size, "x")
                    client.send_json({"type": "client_event", "event": word})
                    self.sent += 1
                    client.recv_json(self.interval)  # drains what it is sent, answers pings
            except (OSError, WsClosed):
                self.breaks += 1
            finally:
                client.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


# --- the app on private servers ---------------------------------------------------------------


class DaphneServer(AppServer):
    """``AppServer`` stopped at exit too, with its memory readable."""

    def start(self) -> DaphneServer:
        super().start()
        _cleanups.append(self.stop)
        return self

    def rss_kib(self) -> int:
        """Resident memory of the daphne process (``/proc/<pid>/status`` VmRSS)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@dataclass
class App:
    """The app on a private database (and a private Redis when ``redis_url``), with an
    organisation, an API key and a published HeyGen avatar on the emulator."""

    database: str
    redis_url: str | None
    heygen_base: str
    workdir: Path
    plan: str = "trial"
    daphne_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    server: DaphneServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    key: str = ""
    http: httpx.Client | None = None

    def env(self) -> dict[str, str]:
        env = {
            "HEYGEN_API_BASE": self.heygen_base,
            "DEBUG": "0",  # production error pages: the envelope, never Django's debug page
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_HSTS_SECONDS": "0",
            "SYSTIMZ_ENV_FILE": "",
            "SECRET_KEY": "fault-tests-" + "x" * 40,
            "SYSTIMZ_ENCRYPTION_KEYS": _FERNET_KEY,
            "REAPER_INTERVAL_SECONDS": "2",
            "DISCONNECT_GRACE_SECONDS": "5",
            "API_RATE_LIMIT": "100000/minute",
            **self.extra_env,
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def start(self) -> App:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = DaphneServer(
            self.database,
            log_path=self.workdir / "daphne.log",
            extra_env=self.env(),
            daphne_args=self.daphne_args,
        )
        environment = self.server.environment()
        if not self.redis_url:
            environment.pop("REDIS_URL", None)
        self.server.environment = lambda: environment  # type: ignore[method-assign]
        self.server.start()
        self.http = httpx.Client(base_url=self.server.origin, timeout=30)
        self._seed()
        return self

    def manage(self, *args: str) -> str:
        assert self.server is not None
        done = subprocess.run(  # noqa: S603 - our own manage.py
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.server.environment(),
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.stdout

    def _seed(self) -> None:
        slug = f"fault-{os.urandom(3).hex()}"
        self.key = self.manage("create_org", slug, "--name", "Fault", "--plan", self.plan)
        self.key = self.key.strip().splitlines()[-1]
        self.post(
            "/api/v1/provider-credentials/",
            {"provider": "heygen", "api_key": HEYGEN_KEY, "plan": "enterprise"},
        )
        self.post(
            "/api/v1/avatars/",
            {
                "slug": "anna",
                "name": "Anna",
                "provider": "heygen",
                "provider_avatar_id": AVATAR_ID,
                "published": True,
            },
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, path: str, body: dict[str, Any], *, expect: int = 201) -> dict[str, Any]:
        assert self.http is not None
        response = self.http.post(path, json=body, headers=self.headers)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response.json() if response.content else {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with the key; a fresh client per call, so threads can share the app."""
        assert self.server is not None
        with httpx.Client(base_url=self.server.origin, timeout=30) as client:
            return client.request(method, path, headers=self.headers, **kwargs)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A Celery worker with embedded beat (the reaper every 2 s), as ``make run`` has it."""
        assert self.server is not None
        log = (self.workdir / "celery.log").open("ab")
        self.worker = subprocess.Popen(  # noqa: S603 - our own interpreter and args
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "systimz",
                "worker",
                "-B",
                "--pool",
                "threads",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "-s",
                str(self.workdir / "beat-schedule"),
            ],
            cwd=BASE_DIR,
            env=self.server.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _cleanups.append(self.stop_worker)
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(timeout=10)
            self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        if self.http is not None:
            self.http.close()
        if self.server is not None:
            self.server.stop()

    def ws_path(self, session: dict[str, Any]) -> str:
        """The path of a session's player WebSocket (from its ``player.websocket_url``)."""
        url = session["player"]["websocket_url"]
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        path = "/" + path
        if "token=" not in path:
            path += ("&" if "?" in path else "?") + f"token={session['player']['token']}"
        return path


_FERNET_KEY = Fernet.generate_key().decode()


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    """Stop/close each of ``things`` (anything with ``stop`` or ``close``) on the way out."""
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                (getattr(thing, "stop", None) or thing.close)()


@dataclass
class AppStack:
    """What a fault test runs against: the app on its own database, redis-server and HeyGen
    emulator, with handles to each so the test can break one."""

    app: App
    cluster: PostgresCluster
    redis: RedisServer
    heygen: HeyGenEmulator
    db: str


@contextlib.contextmanager
def app_stack(name: str, workdir: Path, **app_options: Any) -> Iterator[AppStack]:
    """Start a private database ``name`` (on the shared private cluster), a redis-server, the
    HeyGen emulator and the app (daphne) on them; stop them all on the way out. ``app_options``
    go to :class:`App` (``plan``, ``daphne_args``, ``extra_env``)."""
    cluster = private_postgres()
    database = cluster.database(name)
    redis = RedisServer().start()
    heygen = HeyGenEmulator(keys={HEYGEN_KEY: "enterprise"}).start()
    app = App(
        database=database,
        redis_url=redis.url,
        heygen_base=heygen.base_url,
        workdir=workdir,
        **app_options,
    )
    with running(heygen, redis, app):
        app.start()
        yield AppStack(app=app, cluster=cluster, redis=redis, heygen=heygen, db=name)
