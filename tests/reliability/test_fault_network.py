"""T16 (reliability §4.2): network impairment between a player and daphne.

netem is not available here (``tc qdisc ... netem`` answers "Specified qdisc kind is unknown":
no sch_netem module; network namespaces can be made, but without netem they add nothing), so
the nearest right thing is a loopback TCP proxy (``faults.TcpProxy``) between the player's
WebSocket and daphne: 200 ms added to every chunk each way, connections aborted (a reset on
both sides) instead of packet loss, then the "link" down for ``SYSTIMZ_T16_LINK_DOWN_SECONDS``
(default 10; the table's 30) — bytes held, nothing closed, new connections refused — and up
again. Daphne runs with ``--ping-interval 2 --ping-timeout 3``; a second player, connected
directly, forwards a media-room word every 0.1 s throughout, so events keep being recorded.

Pass criteria, asserted:
- after the aborts and the link's return, the player reconnects and resumes, and its event
  log is identical (by seq, and every field) to the server's: no gap, no duplicate;
- daphne notices the dead peer (the half-open connection: it sends pings, none are answered)
  and lets the player go (its listener count in the database goes down) within ping interval
  + ping timeout + daphne's 2 s timeout-check tick + 2 s of slack for this loaded machine
  (measured).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import faults
from tests.workers import wait_for

PING_INTERVAL, PING_TIMEOUT = 2, 3
CHECK_TICK = 2  # daphne's Server.timeout_checker runs every 2 s
DELAY = 0.2
LINK_DOWN_SECONDS = faults.env_seconds("SYSTIMZ_T16_LINK_DOWN_SECONDS", 10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.AppStack]:
    workdir = Path(tmp_path_factory.mktemp("t16"))
    with faults.app_stack(
        "fault_network",
        workdir,
        plan="enterprise",
        daphne_args=["--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)],
    ) as stack:
        yield stack


def _listeners(db: str, session_id: str) -> int:
    return faults.session_column(db, session_id, "listeners")


@faults.needs_servers
def test_delay_drops_and_a_dead_link_leave_the_event_log_identical(
    stack: faults.AppStack, record_property: Any
) -> None:
    app, db = stack.app, stack.db
    assert app.server is not None
    session = app.post("/api/v1/sessions/", {"avatar": "anna"})
    path = app.ws_path(session)
    proxy = faults.TcpProxy(app.server.port, delay=DELAY).start()
    driver = faults.EventDriver(app.server.port, path, interval=0.1).start()
    player = faults.ResumingListener(proxy.port, path).start()
    with faults.running(proxy, driver, player):
        # 200 ms each way: events flow, late.
        wait_for(lambda: len(player.events) >= 20, timeout=60, what="delayed events")
        # Dropped connections: the player reconnects and resumes each time.
        for _ in range(2):
            connects = player.connects
            assert proxy.abort_all() == 1
            wait_for(
                lambda connects=connects: player.connects > connects,
                timeout=30,
                what="the player to reconnect",
            )
            seq = player.last_seq
            wait_for(lambda seq=seq: player.last_seq > seq, timeout=30, what="events after it")
        wait_for(lambda: _listeners(db, session["id"]) == 2, timeout=30, what="2 in")

        # The link goes down: daphne must notice the silent peer by its pings.
        proxy.link_down()
        down_at = time.monotonic()
        wait_for(
            lambda: _listeners(db, session["id"]) == 1,
            timeout=PING_INTERVAL + PING_TIMEOUT + CHECK_TICK + 30,
            what="daphne to let the dead peer go",
            interval=0.1,
        )
        detected = time.monotonic() - down_at
        remaining = LINK_DOWN_SECONDS - (time.monotonic() - down_at)
        if remaining > 0:
            time.sleep(remaining)  # the rest of the outage, events still being recorded
        proxy.link_up()
        connects = player.connects
        wait_for(lambda: player.connects > connects, timeout=60, what="the player to come back")
        sent = driver.sent
        wait_for(lambda: driver.sent >= sent + 10, timeout=30, what="more events")
        driver.stop()
        faults.wait_for_quiet_log(db, session["id"])
        server = app.request("GET", f"/api/v1/sessions/{session['id']}/events/?after=0").json()
        wait_for(
            lambda: player.last_seq >= server[-1]["seq"], timeout=60, what="the player to resync"
        )
        # Not synchronisation: a window for anything still in the proxy's pipe to show up as
        # a duplicate.
        time.sleep(DELAY * 3)
        assert [e["seq"] for e in player.events] == [e["seq"] for e in server]
        assert player.events == server

    assert detected <= PING_INTERVAL + PING_TIMEOUT + CHECK_TICK + 2, detected
    record_property("dead_peer_detected_seconds", round(detected, 2))
    record_property("events", len(server))
    record_property("player_connects", player.connects)
