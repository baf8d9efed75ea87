"""What every provider emulator shares: a threaded HTTP server on loopback, request
recording, injected faults and an injectable clock. Subclasses add the provider's behaviour
and their request handler (``_handler``)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


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

    def clear_faults(self) -> None:
        """The service recovers: drop every queued fault."""
        with self.lock:
            self.faults.clear()

    def take_fault(self, operation: str) -> Fault | None:
        """The fault queued for this call of ``operation``, if any (call under ``lock``)."""
        queue = self.faults.get(operation) or []
        return queue.pop(0) if queue else None

    def received(self, operation: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["operation"] == operation]


Reply = tuple[int, Any, dict[str, str] | None]


class EmulatorHandler(BaseHTTPRequestHandler):
    """The request cycle every emulator shares: read the JSON body, record the call, apply a
    queued fault, check the caller, let the emulator answer. Subclasses say how their
    provider names operations, reads bodies, finds the caller and words its refusals."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for the
    # client's delayed ACK.
    disable_nagle_algorithm = True
    emulator: Any  # the EmulatorBase subclass instance, set by its ``_handler``

    # --- what differs per provider ---------------------------------------------------------

    def operation(self, path: str) -> str:
        raise NotImplementedError

    def bad_body(self, body: Any) -> Reply | None:
        """The answer to a body the provider would refuse, or None to go on."""
        raise NotImplementedError

    def caller(self) -> Any | None:
        """Who is calling (called under the emulator's lock); None when unauthenticated."""
        raise NotImplementedError

    def refusal(self, kind: str, fault: Fault | None = None) -> Reply:
        """The provider's answer for ``unauthorized``, ``rate_limited`` or a ``status`` fault."""
        raise NotImplementedError

    # --- the shared cycle --------------------------------------------------------------

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        emulator = self.emulator
        parts = urlsplit(self.path)
        operation = self.operation(parts.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = ValueError
        if (refused := self.bad_body(body)) is not None:
            self._send(*refused)
            return
        with emulator.lock:
            emulator.requests.append(
                {
                    "operation": operation,
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[0] for k, v in query.items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": body,
                }
            )
            fault = emulator.take_fault(operation)
            caller = self.caller()
        if fault and fault.kind == "hang":
            emulator.release.wait(fault.seconds)
        if fault and fault.kind == "malformed":
            self._send_raw(200, b'{"code": 100, "data": {', "application/json")
            return
        if fault and fault.kind in {"status", "unauthorized", "rate_limited"}:
            self._send(*self.refusal(fault.kind, fault))
            return
        if caller is None:
            self._send(*self.refusal("unauthorized"))
            return
        status, payload = emulator.handle(operation, caller, body, query)
        if fault and fault.kind == "lost":
            self.close_connection = True
            self.connection.shutdown(2)  # the call took effect; the answer is lost
            return
        self._send(status, payload)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, str):  # a raw body given to a ``status`` fault
            self._send_raw(status, payload.encode(), "text/html", headers)
            return
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def parse_keys(given: list[str], default: str) -> dict[str, str]:
    """``KEY[:trial|enterprise]`` arguments of an emulator's command line → key → plan."""
    return dict([*k.split(":", 1), "trial"][:2] for k in given) or {default: "trial"}
