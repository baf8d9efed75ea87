"""``GET /healthz``: database, channel layer and broker, each checked for real, in parallel,
each bounded by a timeout so a hung dependency answers 503 instead of hanging the probe."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection

from systimz import errors
from systimz.api.exceptions import json_error_response

log = logging.getLogger("systimz.health")
CHECK_TIMEOUT_SECONDS = 3.0


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # a probe must not keep a connection of the worker thread


async def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    marker = uuid.uuid4().hex
    await layer.send(channel, {"type": "healthz.ping", "marker": marker})
    message = await layer.receive(channel)
    if message.get("marker") != marker:
        raise RuntimeError("channel layer returned another message")


def _broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=CHECK_TIMEOUT_SECONDS,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": sync_to_async(_database, thread_sensitive=False),
    "channel_layer": _channel_layer,
    "broker": sync_to_async(_broker, thread_sensitive=False),
}


async def _run(name: str, check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("healthz.fail check=%s error=timeout", name)
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is "error", logged
        log.warning("healthz.fail check=%s error=%s", name, type(exc).__name__)
        return "error"
    return "ok"


async def healthz(request: HttpRequest) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return json_error_response(
            errors.MethodNotAllowed(f'Method "{request.method}" not allowed.')
        )
    names = list(CHECKS)
    results = await asyncio.gather(*(_run(name, CHECKS[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    healthy = all(result == "ok" for result in results)
    response = JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503
    )
    response["Cache-Control"] = "no-store"
    return response
