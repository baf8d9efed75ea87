"""The servers a browser test talks to: the app under a real daphne, and a second web origin.

``AppServer`` runs ``daphne systimz.asgi:application`` as a subprocess on a free loopback port,
pointed at the test database. A subprocess, not a thread: Twisted's reactor can run once per
process and wants the main thread, the app's in-process state (the in-memory channel layer,
the local avatar's speaker threads, its audio cache) then lives where it does in production,
and pytest-django's database blocker, which guards the test process, does not get in the way.
The tests' own writes reach it because they run with ``transactional_db`` (committed, on a file
SQLite or PostgreSQL database), and its writes reach the tests the same way.

``OriginServer`` is another site: a tiny HTTP server serving the pages a test gives it on
``http://localhost:<port>``, a different origin (and site) from the app's
``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
START_TIMEOUT_SECONDS = 30.0


def database_url(db: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for the database ``db`` (a connection's ``settings_dict``)."""
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if engine.endswith("postgresql"):
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = db.get("HOST") or ""
        port = f":{db['PORT']}" if host and db.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"the browser tests do not know how to share a {engine} database")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class AppServer:
    """``daphne`` serving the app on ``http://127.0.0.1:<port>`` against ``database``."""

    def __init__(
        self,
        database: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        daphne_args: list[str] | None = None,
    ) -> None:
        self.database = database
        self.log_path = log_path  # daphne's output, for when something goes wrong
        self.extra_env = extra_env or {}
        self.daphne_args = daphne_args or []  # more options: --ping-interval, ...
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "systimz.settings",
            "DATABASE_URL": self.database,
            # Development mode: whitenoise serves the player's modules straight from the apps
            # (no collectstatic), and the loopback hosts are allowed.
            "DEBUG": "1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECRET_KEY": settings.SECRET_KEY,
            # Every test starts sessions from 127.0.0.1; the per-client limit is not under test.
            "TALK_CLIENT_RATE_LIMIT": "10000/minute",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        if settings.ENCRYPTION_KEYS:  # provider credentials the tests store, the app reads
            env["SYSTIMZ_ENCRYPTION_KEYS"] = ",".join(settings.ENCRYPTION_KEYS)
        env.pop("PLAYER_EXTRA_ORIGINS", None)
        return env

    def start(self) -> AppServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may take the free port before daphne binds it
            self.port = free_port()
            with self.log_path.open("ab") as log:  # a restart appends to the same log
                self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and args
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        *self.daphne_args,
                        "systimz.asgi:application",
                    ],
                    cwd=BASE_DIR,
                    env=self.environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
        raise RuntimeError(f"daphne did not start; its log:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        """Poll until daphne answers HTTP (start-up, not a test's synchronisation)."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=2):  # noqa: S310
                    return True
            except urllib.error.HTTPError:
                return True  # it answered (a failing health check is the tests' business)
            except OSError:
                time.sleep(0.1)
        self.stop()
        return False

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class OriginServer:
    """Another site's pages: ``serve(path, html)``, then open ``url(path)``."""

    def __init__(self) -> None:
        pages: dict[str, str] = {}
        self.pages = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests say what matters."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def serve(self, path: str, html: str) -> str:
        self.pages[path] = html
        return self.url(path)

    def start(self) -> OriginServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
