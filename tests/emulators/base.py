"""What every provider emulator shares: a threaded HTTP server on loopback, request
recording, injected faults and an injectable clock. Subclasses add the provider's behaviour
and their request handler (``_handler``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Fault:
    """What the next call of an operation does instead of its job: ``status`` (answer with
    that HTTP status and body), ``unauthorized``, ``rate_limited`` (429 with Retry-After),
    ``hang`` (answer only after ``seconds``), ``malformed`` (not JSON), ``lost`` (do the job,
    never answer)."""

    kind: str
    status: int = 500
    body: Any = None
    retry_after: float = 1.0
    seconds: float = 5.0


class EmulatorBase:
    def __init__(
        self,
        *,
        keys: dict[str, str],
        avatars: tuple[str, ...],
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.keys = dict(keys)  # api key -> plan
        self.avatars = set(avatars)
        self.clock = clock
        self.requests: list[dict[str, Any]] = []
        self.faults: dict[str, list[Fault]] = {}
        self.lock = threading.Lock()
        self.release = threading.Event()  # set on stop: a hanging call gives up
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        # A short poll interval, so ``stop`` (which waits for the loop to notice) is quick.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, operation: str, kind: str, *, times: int = 1, **options: Any) -> None:
        """Make the next ``times`` calls of ``operation`` fail as ``kind`` (see Fault)."""
        with self.lock:
            self.faults.setdefault(operation, []).extend(
                Fault(kind, **options) for _ in range(times)
            )

    def take_fault(self, operation: str) -> Fault | None:
        """The fault queued for this call of ``operation``, if any (call under ``lock``)."""
        queue = self.faults.get(operation) or []
        return queue.pop(0) if queue else None

    def received(self, operation: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["operation"] == operation]
