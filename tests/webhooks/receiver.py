"""A webhook receiver on loopback: records every request, answers with scripted statuses."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def signature(self) -> str:
        return self.headers["Systimz-Signature"]


class Receiver:
    """``fail(n)`` makes the next ``n`` requests answer 500 (or another status); ``hold()``
    makes requests wait, after being recorded, until ``release()``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._changed = threading.Condition()
        self._script: deque[int] = deque()
        self._held = threading.Event()
        self._held.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver._record(Received(self.path, dict(self.headers.items()), body))
                receiver._held.wait(timeout=30)
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", f"{receiver.url}/moved")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def fail(self, times: int, status: int = 500) -> None:
        with self._changed:
            self._script.extend([status] * times)

    def hold(self) -> None:
        self._held.clear()

    def release(self) -> None:
        self._held.set()

    def _record(self, request: Received) -> int:
        with self._changed:
            self.requests.append(request)
            status = self._script.popleft() if self._script else 200
            self._changed.notify_all()
        return status

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            assert arrived, f"{len(self.requests)} of {count} requests arrived"
            return list(self.requests[:count])
