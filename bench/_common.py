"""What the benchmarks share: a private throwaway test database, quiet loggers, progress on
stderr, the machine's load, and servers run as subprocesses (:class:`Service`) with their CPU
and memory.

The database is made as Django's test runner makes one (``setup_databases`` /
``teardown_databases``), under a private name so neither the development database nor a
concurrent pytest run's ``test_<name>`` is touched: a file in a temporary directory on SQLite, a
database ``test_<name>_bench_<pid>`` on PostgreSQL. Call :func:`bench_database` after
``django.setup()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)


def quiet(*names: str) -> None:
    """Per-call INFO lines would drown the output; warnings still show."""
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def bench_database() -> Iterator[str]:
    """Create the private test database, yield its name, drop it afterwards. On PostgreSQL,
    other connections to it (a worker thread's, say) are ended first so the drop succeeds."""
    from django.db import connections
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    settings_dict = connections["default"].settings_dict
    tmpdir = None
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        tmpdir = tempfile.mkdtemp(prefix="systimz-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmpdir, "bench.sqlite3")
    else:
        settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_bench_{os.getpid()}"

    setup_test_environment(debug=False)
    started = time.perf_counter()
    old_config = setup_databases(
        verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set()
    )
    name = connections["default"].settings_dict["NAME"]
    log(f"test database {name} ready in {time.perf_counter() - started:.1f} s")
    try:
        yield name
    finally:
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


# --- Processes the benchmark starts, and what they use ---------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A loopback port nobody listens on now (a server may still race us for it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (read from /proc): a Celery worker is a parent, its
    pool's children and the embedded beat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if Path(f"/proc/{current}").exists():
            tree.append(current)
            todo.extend(children.get(current, []))
    return tree


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its children it has waited for, in seconds (0 if gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2 :].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def process_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 if gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(process_cpu_seconds(p) for p in process_tree(pid))


def tree_rss_bytes(pid: int) -> int:
    """RSS of ``pid`` and its live descendants, summed (shared pages count once per process)."""
    return sum(process_rss_bytes(p) for p in process_tree(pid))


class Service:
    """A server the benchmark runs as a subprocess (daphne, a Celery worker, an emulator):
    output to a log file, ready once its port accepts connections or ``ready_text`` appears in
    its log, stopped with SIGTERM (then SIGKILL). CPU and RSS are summed over its process
    tree, so a prefork worker counts with its children (RSS then counts shared pages once per
    process)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_dir: Path,
        port: int | None = None,
        ready_text: str | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.port = port
        self.ready_text = ready_text
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.command, cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready in {self.timeout:g} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.ready_text is not None:
            try:
                return self.ready_text in self.log_path.read_text(errors="replace")
            except OSError:
                return False
        assert self.port is not None
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return tree_rss_bytes(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(self.process.pid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
