"""T9 (reliability §4.2): heartbeat loss, the tab that vanishes without a close frame.

A trial organisation runs its limit of 3 HeyGen sessions through a real daphne. A player of one
of them is a WebSocket client in its own process (``live.KillableClient``) that resumes, sends
keep-alives and then is killed with SIGKILL: the kernel drops the connection, no close frame is
sent. The reaper's beat is then played tick by tick on a clock moved with time-machine from the
moment the server saw the player go (the tick run here, its claims finished by a real Celery
worker). Pass criterion: the session becomes disconnected (no listener, ``disconnected_at``
set); it is not stopped within the disconnect grace and is stopped, with reason
``disconnected``, by the first tick after it (≤ grace + reap interval); keep-alives to the
provider stop at the loss (none after the kill, and one asked for after the close is refused
without reaching the provider); the provider session is stopped once; the slot frees: a 4th
start refused while the session held it succeeds after.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from sessions.models import AvatarSession
from tests.e2e.servers import AppServer
from tests.emulators.heygen import HeyGenEmulator
from tests.reliability.live import (
    KillableClient,
    assert_error_envelope,
    calls_for,
    live_app,
    live_tenant,
    reap_at,
    reaper_ticks,
    record,
)
from tests.workers import running_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tab_heygen() -> Iterator[HeyGenEmulator]:
    emulator = HeyGenEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def tab_app(
    django_db_setup: None, tab_heygen: HeyGenEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    with live_app(tab_heygen, tmp_path_factory.mktemp("tabs")) as server:
        yield server


@pytest.fixture
def worker(tmp_path: Path, tab_heygen: HeyGenEmulator, settings) -> Iterator[Celery]:
    settings.HEYGEN_API_BASE = tab_heygen.base_url  # the reaper's stops run in this process
    with running_worker(tmp_path) as app:
        yield app


def _gone(session_id: str) -> AvatarSession | None:
    session = AvatarSession.objects.get(pk=session_id)
    return session if session.listeners == 0 and session.disconnected_at else None


def test_a_killed_player_is_reaped_after_the_grace_and_its_slot_freed(
    tab_app: AppServer, tab_heygen: HeyGenEmulator, worker: Celery, record_property
):
    heygen = tab_heygen
    tenant = live_tenant(heygen, slug="tabs")
    with tenant.client(tab_app) as client:
        started = [tenant.start(client) for _ in range(3)]
        assert [r.status_code for r in started] == [201] * 3, [r.text for r in started]
        player = started[0].json()
        session_id = player["id"]
        provider_id = AvatarSession.objects.get(pk=session_id).provider_session_id

        tab = KillableClient(
            tab_app.port, f"{player['player']['websocket_url']}?token={player['player']['token']}"
        )
        tab.wait_ready()
        wait_for(
            lambda: calls_for(heygen, "streaming.keep_alive", provider_id) == 2,
            what="the player's keep-alives at the provider",
        )
        assert AvatarSession.objects.get(pk=session_id).listeners == 1
        assert tenant.start(client).status_code == 429  # the slot is held

        tab.kill()
        session = wait_for(lambda: _gone(session_id), what="the server noticing the player left")
        keep_alives = calls_for(heygen, "streaming.keep_alive", provider_id)
        assert keep_alives == 2
        assert session.status == "active"

        gone = session.disconnected_at
        grace = timedelta(seconds=settings.DISCONNECT_GRACE_SECONDS)
        interval = settings.REAPER_INTERVAL_SECONDS
        closing_tick, ticks = None, 0
        for tick in reaper_ticks(gone, gone + grace + timedelta(seconds=interval)):
            counts = reap_at(tick)
            ticks += 1
            if counts["disconnected"]:
                assert counts["disconnected"] == 1, counts
                closing_tick = tick
                break
            assert tick - gone < grace, "past the grace and not claimed"
        assert closing_tick is not None, "not stopped within the grace + the reap interval"
        assert closing_tick - gone >= grace

        session = AvatarSession.objects.get(pk=session_id)
        assert (session.status, session.close_reason) == ("closed", "disconnected")
        assert calls_for(heygen, "streaming.stop", provider_id) == 1
        assert provider_id not in {s.session_id for s in heygen.active(tenant.heygen_key)}

        refused = client.post(f"/api/v1/sessions/{session_id}/keep-alive")
        assert assert_error_envelope(refused, {409}, tenant.key) == "conflict"
        assert calls_for(heygen, "streaming.keep_alive", provider_id) == keep_alives

        again = tenant.start(client)  # the slot is free again
        assert again.status_code == 201, again.text
        for response in [*started[1:], again]:
            assert client.post(f"/api/v1/sessions/{response.json()['id']}/stop").status_code == 200
    assert heygen.active(tenant.heygen_key) == []
    record(
        record_property,
        reaper_ticks=ticks,
        stopped_after_disconnect_seconds=(closing_tick - gone).total_seconds(),
    )
