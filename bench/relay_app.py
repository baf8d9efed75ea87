"""The ASGI app that ``bench.relay`` serves with daphne: Systimz's own app plus two bench-only
routes. Never mounted outside the benchmark.

- ``/bench/echo/<sid>/`` (WebSocket): the baseline, a raw Channels consumer that joins the
  group ``bench.echo.<sid>`` and forwards every group message's ``event`` as JSON; no token, no
  database, no ``seq`` logic. It answers the client's first frame with ``{"type": "ready"}``.
- ``POST /__bench__/publish`` (HTTP): runs a publisher inside this process (the in-memory
  channel layer exists per process, so its events must be published here) and answers with the
  publisher's figures when it has finished. The body is the publisher's spec (see
  ``bench.relay.run_publisher``).

Everything else goes to ``systimz.asgi.application`` unchanged, so ``/ws/sessions/<id>/`` is
the real ``sessions.consumers.SessionConsumer``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from systimz import asgi

systimz_application = asgi.application  # importing systimz.asgi has set Django up

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from sessions import consumers  # noqa: E402
from sessions.routing import websocket_urlpatterns  # noqa: E402

CONTROL_PATH = "/__bench__/publish"

# ``--tail-seconds``: an A/B switch for the in-memory layer's per-socket log tail (the
# consumer's ``TAIL_SECONDS``), so its cost can be measured; unset, the code runs as written.
if os.environ.get("BENCH_RELAY_TAIL_SECONDS") and hasattr(consumers, "TAIL_SECONDS"):
    consumers.TAIL_SECONDS = float(os.environ["BENCH_RELAY_TAIL_SECONDS"])


def echo_group(session_id: object) -> str:
    return f"bench.echo.{session_id}"


class EchoConsumer(AsyncJsonWebsocketConsumer):
    """Raw Channels fan-out: join a group, forward what it carries."""

    group: str

    async def connect(self) -> None:
        self.group = echo_group(self.scope["url_route"]["kwargs"]["sid"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "ready"})

    async def bench_echo(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])


websocket_app = URLRouter(
    [path("bench/echo/<str:sid>/", EchoConsumer.as_asgi()), *websocket_urlpatterns]
)


async def _control(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from bench.relay import run_publisher_in_server

    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        result = await run_publisher_in_server(json.loads(body))
        status = 200
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which stops
        result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(result).encode()})


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await websocket_app(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] == CONTROL_PATH and scope["method"] == "POST":
        await _control(scope, receive, send)
    else:
        await systimz_application(scope, receive, send)
