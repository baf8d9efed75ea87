"""A local OpenAI-compatible chat-completions server for tests, over real HTTP on loopback.

Tell it what to do next with :meth:`FakeLLM.reply`; it records every request it received.
Modes: ``stream`` (SSE deltas), ``json`` (one body, as servers that ignore ``stream`` do),
``status`` (an HTTP error), ``hang`` (answer after ``delay`` seconds), ``malformed``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    mode: str = "stream"
    content: str = "NO_ANSWER"
    status: int = 200
    delay: float = 0.0


@dataclass
class FakeLLM:
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reply(
        self, content: str = "", *, mode: str = "stream", status: int = 200, delay: float = 0.0
    ) -> None:
        self.behaviour = Behaviour(mode=mode, content=content, status=status, delay=delay)

    def start(self) -> FakeLLM:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": json.loads(body or b"{}"),
                    }
                )
                b = fake.behaviour
                if b.mode == "hang":
                    fake.released.wait(b.delay)
                if b.mode == "status":
                    self._send(b.status, "application/json", b'{"error": {"message": "boom"}}')
                elif b.mode == "malformed":
                    self._send(200, "application/json", b'{"choices": [')
                elif b.mode == "json":
                    payload = {
                        "choices": [{"message": {"role": "assistant", "content": b.content}}]
                    }
                    self._send(200, "application/json", json.dumps(payload).encode())
                else:
                    self._stream(b.content)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, content: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = content.split(" ")
                for i, word in enumerate(words):
                    delta = word if i == 0 else " " + word
                    event = {"choices": [{"index": 0, "delta": {"content": delta}}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
