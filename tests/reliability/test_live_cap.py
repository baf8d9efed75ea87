"""T8 (reliability §4.2): the hard session cap, clock-driven.

A trial organisation (session length 600 s) starts a HeyGen session; a player is connected to
its WebSocket (``channels.testing.WebsocketCommunicator`` through the whole ASGI app) and sends
``keep_alive`` every 30 s, as the talk page does; the reaper's beat is played tick by tick
(every ``REAPER_INTERVAL_SECONDS``) on a clock moved with time-machine, the tick itself run
here and its claims finished by a real Celery worker. Ticks between two keep-alives far from
the cap are skipped: a tick is a function of the rows and the clock, and nothing changes there.

Pass criterion: the session stays active up to the cap (keep-alives hold off the idle timeout);
the provider ``stop`` is called exactly once, at <= cap + reap interval + 5 s after the start;
the recorded seconds are <= that bound and the billed minutes are the cap's, not the overshoot's
(the reaper's lag is not billed: 600.x s bills 10, sessions/usage.py); the
player receives ``session_state`` ``closed`` with reason ``timeout``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from celery import Celery
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from sessions.models import AvatarSession, UsageRecord
from systimz.asgi import application
from tests.conftest import bearer_client
from tests.emulators.heygen import HeyGenEmulator
from tests.reliability.live import (
    LiveTenant,
    calls_for,
    live_tenant,
    reap_at,
    reaper_ticks,
    record,
)
from tests.workers import running_worker

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.ws,
    pytest.mark.anyio,
    pytest.mark.usefixtures("fresh_channel_layer"),
]
KEEP_ALIVE_SECONDS = 30  # the talk page's interval (sessions/static/player/relay.js)
WAIT = 30.0  # a bound on waiting for a frame or a call, not a measurement


@pytest.fixture
def cap_heygen(settings) -> Iterator[HeyGenEmulator]:
    emulator = HeyGenEmulator().start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Celery]:
    with running_worker(tmp_path) as app:
        yield app


def _start(tenant: LiveTenant) -> dict[str, Any]:
    response = bearer_client(tenant.key).post(
        "/api/v1/sessions/", {"avatar": tenant.avatar_slug}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


async def _until(communicator: WebsocketCommunicator, **match: Any) -> dict[str, Any]:
    while True:
        frame = await communicator.receive_json_from(timeout=WAIT)
        if all(frame.get(k) == v for k, v in match.items()):
            return frame


async def _keep_alive(
    communicator: WebsocketCommunicator, heygen: HeyGenEmulator, session: AvatarSession
) -> None:
    """One keep-alive frame, done once the provider has seen it and the session has counted
    it as activity on the moved clock (both polled, bounded)."""
    before = calls_for(heygen, "streaming.keep_alive", session.provider_session_id)
    sent_at = timezone.now()
    await communicator.send_json_to({"type": "keep_alive"})

    def counted() -> bool:
        touched = AvatarSession.objects.values_list("last_activity_at", flat=True).get(
            pk=session.pk
        )
        seen = calls_for(heygen, "streaming.keep_alive", session.provider_session_id)
        return seen > before and touched >= sent_at

    deadline = time.monotonic() + WAIT
    while not await database_sync_to_async(counted)():
        assert time.monotonic() < deadline, "the keep-alive never reached the provider"
        await asyncio.sleep(0.02)


async def test_a_kept_alive_session_is_stopped_once_at_its_cap_and_the_player_told(
    cap_heygen: HeyGenEmulator, worker: Celery, record_property
):
    heygen = cap_heygen
    tenant = await database_sync_to_async(live_tenant)(heygen, slug="capped")
    started = await database_sync_to_async(_start)(tenant)
    session = await database_sync_to_async(AvatarSession.objects.get)(pk=started["id"])
    provider_id = session.provider_session_id
    cap = tenant.org.limits.session_seconds
    interval = settings.REAPER_INTERVAL_SECONDS
    assert (cap, session.expires_at) == (600, session.started_at + timedelta(seconds=cap))
    bound = session.started_at + timedelta(seconds=cap + interval + 5)

    path = f"{started['player']['websocket_url']}?token={started['player']['token']}"
    communicator = WebsocketCommunicator(application, path, headers=[(b"host", b"testserver")])
    assert (await communicator.connect(timeout=WAIT))[0]
    await communicator.send_json_to({"type": "resume", "after": 0})
    await _until(communicator, type="session_state", status="active")

    closing_tick, ticks, last_keep_alive = None, 0, session.started_at
    quiet_until = session.expires_at - timedelta(seconds=KEEP_ALIVE_SECONDS)
    for tick in reaper_ticks(session.started_at, bound):
        if tick - last_keep_alive >= timedelta(seconds=KEEP_ALIVE_SECONDS):
            with time_machine.travel(tick, tick=True):
                await _keep_alive(communicator, heygen, session)
            last_keep_alive = tick
        elif tick < quiet_until:
            continue  # between keep-alives, far from the cap, a tick finds nothing: skipped
        counts = await database_sync_to_async(reap_at)(tick)
        ticks += 1
        if any(counts[reason] for reason in ("timeout", "idle", "disconnected", "error")):
            assert counts["timeout"] == 1, (tick - session.started_at, counts)
            closing_tick = tick
            break
        assert tick < session.expires_at, "past its cap and not claimed"
    assert closing_tick is not None, "not stopped within cap + reap interval + 5 s"

    frame = await _until(communicator, type="session_state", status="closed")
    assert frame["reason"] == "timeout"
    await communicator.disconnect()

    session = await database_sync_to_async(AvatarSession.objects.get)(pk=session.pk)
    assert session.close_reason == "timeout"
    assert calls_for(heygen, "streaming.stop", provider_id) == 1
    assert heygen.active(tenant.heygen_key) == []
    ran = (session.ended_at - session.started_at).total_seconds()
    assert cap <= ran <= cap + interval + 5
    usage = await database_sync_to_async(UsageRecord.objects.get)(session=session, kind="session")
    assert usage.session_seconds <= cap + interval + 5
    assert usage.billable_minutes == math.ceil(cap / 60)  # billed up to the cap, rounded up
    record(
        record_property,
        reaper_ticks=ticks,
        stopped_after_seconds=round(ran, 2),
        billed_seconds=usage.session_seconds,
        billed_minutes=usage.billable_minutes,
    )
