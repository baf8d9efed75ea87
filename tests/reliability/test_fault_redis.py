"""T10 (reliability §4.2): a Redis outage under load.

The app (daphne + a Celery worker with beat, the reaper every 2 s) runs on a private PostgreSQL
cluster and a private ``redis-server`` (channel layer, cache, Celery broker and results), with
the HeyGen emulator as the provider. Under light load (scaled from the table's: a trial
organisation, limit 3; two sessions each with a player forwarding media-room words about ten
times a second and a listener that resumes after its last seq; two clients starting and stopping
sessions (racing for the one free slot); REST reads; /healthz probes), redis-server is killed for
``SYSTIMZ_T10_OUTAGE_SECONDS`` (default 15) and started again, empty.

Pass criteria, asserted:
- 0 over-limit starts: live session rows and live emulator sessions never exceed the plan's 3
  (sampled every 50 ms from PostgreSQL and the emulator; the limit lives in the database);
- no 5xx on REST reads (sessions list, a session, the organisation) at any time;
- /healthz during the outage is 503 and names ``channel_layer`` and ``broker``;
- each listener's event log after recovery is identical, by seq, to the server's (0 gaps,
  0 duplicates), however many times it reconnected;
- Celery resumes: a task sent after Redis returns runs within 60 s;
- no leaked live session: once the players leave, every session is closed and stopped at the
  emulator within the disconnect grace (5 s) + reaper interval + 30 s.

Figures (record_property): outage length, events recorded, listener reconnects, Celery
recovery, healthz answers, start statuses.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from tests.e2e.servers import free_port
from tests.reliability import faults
from tests.workers import wait_for

LIMIT = 3  # the trial plan's concurrent sessions
OUTAGE_SECONDS = faults.env_seconds("SYSTIMZ_T10_OUTAGE_SECONDS", 15)
LIVE_SQL = """
    SELECT count(*) FROM avatar_sessions_avatarsession
    WHERE status IN ('starting', 'active', 'stopping')
"""

LEAKED_SQL = """
    SELECT id, status, listeners, disconnected_at, created_at, stop_pending
    FROM avatar_sessions_avatarsession WHERE status IN ('starting', 'active', 'stopping')
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.AppStack]:
    workdir = Path(tmp_path_factory.mktemp("t10"))
    with faults.app_stack("fault_redis", workdir) as stack:
        stack.app.start_worker()
        yield stack


@dataclass
class Load:
    """The background load and what it observed, phase by phase."""

    stack: faults.AppStack
    phase: str = "before"
    stopping: threading.Event = field(default_factory=threading.Event)
    reads: list[tuple[str, str, int]] = field(default_factory=list)
    starts: list[tuple[str, int]] = field(default_factory=list)
    max_live_rows: int = 0
    max_live_provider: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, session_id: str) -> Load:
        for target, args in (
            (self._monitor, ()),
            (self._reader, (session_id,)),
            (self._starter, ()),
            (self._starter, ()),  # two starters race for the one free slot
        ):
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _monitor(self) -> None:
        cluster = faults.private_postgres()
        with cluster.connect(self.stack.db) as conn:
            while not self.stopping.is_set():
                rows = conn.execute(LIVE_SQL).fetchone()[0]
                self.max_live_rows = max(self.max_live_rows, rows)
                provider = len(self.stack.heygen.active(faults.HEYGEN_KEY))
                self.max_live_provider = max(self.max_live_provider, provider)
                self.stopping.wait(0.05)

    def _reader(self, session_id: str) -> None:
        paths = ("/api/v1/sessions/", f"/api/v1/sessions/{session_id}/", "/api/v1/organisation/")
        while not self.stopping.is_set():
            for path in paths:
                status = self.stack.app.request("GET", path).status_code
                self.reads.append((self.phase, path, status))
            self.stopping.wait(0.2)

    def _starter(self) -> None:
        """Starts and stops sessions all along: the organisation is at its limit most of the
        time, so each start is a race for the last slot."""
        app = self.stack.app
        while not self.stopping.is_set():
            response = app.request("POST", "/api/v1/sessions/", json={"avatar": "anna"})
            self.starts.append((self.phase, response.status_code))
            if response.status_code == 201:
                self.stopping.wait(0.3)
                app.request("POST", f"/api/v1/sessions/{response.json()['id']}/stop")
            else:
                self.stopping.wait(0.2)


def _server_log(app: faults.App, session_id: str) -> list[dict[str, Any]]:
    response = app.request("GET", f"/api/v1/sessions/{session_id}/events/?after=0")
    assert response.status_code == 200, response.text
    return response.json()


def _celery_recovery(redis_url: str, deadline_seconds: float) -> float:
    """Seconds until a task sent after the outage runs (sent again every 5 s: a message
    published before the worker has declared its queue again has nowhere to go)."""
    client = Celery("t10-probe", broker=redis_url, backend=redis_url)
    started = time.monotonic()
    try:
        while True:
            try:
                result = client.send_task("sessions.reap")
                # This process may have hosted an in-process worker for an earlier test, which
                # marks it as a worker for good; this probe is a client, blocking on purpose.
                result.get(timeout=5, disable_sync_subtasks=False)
                return time.monotonic() - started
            except (CeleryTimeoutError, KombuOperationalError, OSError, RedisError):
                if time.monotonic() - started > deadline_seconds:
                    raise
    finally:
        client.close()


@faults.needs_servers
def test_redis_outage_keeps_limits_reads_and_the_event_log(
    stack: faults.AppStack, record_property: Any
) -> None:
    app = stack.app
    assert app.server is not None
    players = [app.post("/api/v1/sessions/", {"avatar": "anna"}) for _ in range(2)]
    listeners = [faults.ResumingListener(app.server.port, app.ws_path(s)).start() for s in players]
    drivers = [faults.EventDriver(app.server.port, app.ws_path(s)).start() for s in players]
    load = Load(stack).start(players[0]["id"])
    health: list[dict[str, Any]] = []
    try:
        wait_for(
            lambda: all(len(lst.events) >= 10 for lst in listeners),
            timeout=30,
            what="events flowing to the listeners",
        )

        load.phase = "outage"
        stack.redis.stop()
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < OUTAGE_SECONDS:
            response = app.request("GET", "/healthz")
            health.append({"http": response.status_code, **response.json()})
            time.sleep(1)
        stack.redis.start()
        outage = time.monotonic() - outage_started
        load.phase = "after"

        celery_recovery = _celery_recovery(stack.redis.url, 60)
        wait_for(
            lambda: app.request("GET", "/healthz").status_code == 200,
            timeout=30,
            what="/healthz to be 200 again",
        )
        # Events recorded after recovery too, then the players stop making them.
        sent_at_recovery = [d.sent for d in drivers]
        wait_for(
            lambda: all(d.sent >= n + 10 for d, n in zip(drivers, sent_at_recovery, strict=True)),
            timeout=30,
            what="events recorded after recovery",
        )
    finally:
        for driver in drivers:
            driver.stop()
        load.stop()

    try:
        for listener, session in zip(listeners, players, strict=True):
            server = _server_log(app, session["id"])
            wait_for(
                lambda listener=listener, server=server: listener.last_seq == server[-1]["seq"],
                timeout=30,
                what="the listener to catch up with the log",
            )
            assert [e["seq"] for e in listener.events] == [e["seq"] for e in server]
            assert listener.events == server
    finally:
        for listener in listeners:
            listener.stop()

    # 0 over-limit starts, at the database and at the provider.
    assert load.max_live_rows <= LIMIT
    assert load.max_live_provider <= LIMIT
    # No 5xx on reads, before, during or after the outage.
    assert load.reads, "the reader made no requests"
    assert [r for r in load.reads if r[2] >= 500] == []
    assert any(phase == "outage" for phase, _, _ in load.reads)
    # /healthz names what is down.
    assert health
    for answer in health:
        assert answer["http"] == 503, answer
        assert answer["checks"]["channel_layer"] in ("error", "timeout"), answer
        assert answer["checks"]["broker"] in ("error", "timeout"), answer
        assert answer["checks"]["database"] == "ok", answer

    # No leaked session: the players are gone, so the reaper stops what is left.
    cluster = faults.private_postgres()
    with cluster.connect(stack.db) as conn:
        try:
            wait_for(
                lambda: conn.execute(LIVE_SQL).fetchone()[0] == 0,
                timeout=5 + 2 + 30,
                what="the reaper to close the sessions the players left",
            )
        except AssertionError as exc:
            leaked = conn.execute(LEAKED_SQL).fetchall()
            raise AssertionError(f"{exc}; still live: {leaked}") from None
    wait_for(
        lambda: not stack.heygen.active(faults.HEYGEN_KEY),
        timeout=30,
        what="every provider session stopped",
    )

    record_property("outage_seconds", round(outage, 1))
    record_property("celery_recovery_seconds", round(celery_recovery, 1))
    record_property("events_per_session", [len(lst.events) for lst in listeners])
    record_property("listener_connects", [lst.connects for lst in listeners])
    record_property("start_statuses", dict(Counter(f"{p}:{s}" for p, s in load.starts)))
    record_property("reads", len(load.reads))
    record_property("max_live_rows", load.max_live_rows)


def test_relay_bookkeeping_survives_a_cache_outage(db: None, settings: Any) -> None:
    """The fix T10 led to, without servers: with the cache (Redis) unreachable, the
    media-room forwarder lease fails open and a leaving player is still counted out, so the
    reaper can stop the session. Before, the lease raised: the socket crashed on a forwarded
    event, and a player leaving during the outage stayed counted in forever."""
    from sessions import relay
    from sessions.services import session_admit
    from tests import factories

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    org = factories.OrganisationFactory()
    session = session_admit(org=org, avatar=factories.AvatarFactory(organisation=org))
    session_id = str(session.pk)
    relay.listener_joined(session_id)
    assert relay.is_forwarder(session_id, "player-1") is True
    relay.listener_left(session_id, "player-1")
    session.refresh_from_db()
    assert session.listeners == 0
    assert session.disconnected_at is not None
