"""T4 (reliability.md §4.2): two beats and two worker pools (a misconfiguration drill).

Two reaper loops fire ``sessions.reap`` at the same simulated instant every tick, each in its
own thread whose Celery calls run inline (its own "worker pool": the tick's ``finish_stop`` and
``retry_stop`` tasks run there). Meanwhile sessions are started through the API against the
HeyGen emulator, kept alive through the API, left idle, run to their length, or stopped by
their user. The clock is frozen at each tick and moved by time-machine (30 s ticks).

Pass criterion: no session has more than one usage row (0 duplicate billable records); at most
one provider stop per session changed its state (extra calls are the provider's no-ops); every
session ends when the rules say (idle at start + 120 s, timeout at start + 300 s — the
organisation's own length — or the user's stop), each due session is claimed by exactly one
of the two reapers, and the ledger equals that ground truth to the second and the minute.
Scale: ``RELIABILITY_T4_HOURS`` simulated hours of starts (default 0.1), then 5 minutes to
run out; ``RELIABILITY_T4_SLOW_HOURS`` (default 1) in the slow variant (the T-list says 5).
"""

from __future__ import annotations

import math
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connections

from sessions.models import AvatarSession, UsageRecord
from sessions.tasks import reap_sessions
from systimz.celery import app as celery_app
from systimz.orgs.models import Plan
from tests.reliability.conftest import heygen_avatar, needs_postgres

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]
TICK = timedelta(seconds=30)
IDLE = timedelta(seconds=120)  # the enterprise plan's idle timeout
LENGTH = timedelta(seconds=300)  # the organisation's own session length, to keep runs short
HOURS = float(os.environ.get("RELIABILITY_T4_HOURS", "0.1"))
SLOW_HOURS = float(os.environ.get("RELIABILITY_T4_SLOW_HOURS", "1"))
T0 = datetime(2026, 7, 6, 8, tzinfo=UTC)
FATES = ("idle", "timeout", "user")


@dataclass
class Planned:
    """One session and how its story ends: ``idle``, ``timeout`` or ``user`` (at ``stop_at``)."""

    pk: str
    started: datetime
    fate: str
    stop_at: datetime | None = None

    def expected_end(self) -> datetime:
        if self.fate == "idle":
            return self.started + IDLE
        if self.fate == "timeout":
            return self.started + LENGTH
        assert self.stop_at is not None
        return self.stop_at


@pytest.fixture
def eager() -> Any:
    """Each reaper thread is its own worker pool: the tasks a tick sends run in that thread."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


class TwoBeats:
    """Two reaper loops on threads of their own (each keeps its database connection, as a
    beat and its worker would); :meth:`tick` fires both at the same instant and waits."""

    def __init__(self) -> None:
        self.start, self.done = threading.Barrier(3), threading.Barrier(3)
        self.claims: list[dict[str, int]] = []
        self.errors: list[BaseException] = []
        self.running = True
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(2)]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        try:
            while True:
                self.start.wait()
                if not self.running:
                    return
                try:
                    self.claims.append(reap_sessions.apply(throw=True).result)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(exc)
                self.done.wait()
        finally:
            connections.close_all()

    def tick(self) -> None:
        self.start.wait()
        self.done.wait()
        assert self.errors == []

    def stop(self) -> None:
        self.running = False
        self.start.wait()
        for thread in self.threads:
            thread.join()


def _drill(tenant: Any, heygen: Any, beats: TwoBeats, hours: float) -> dict[str, int]:
    rng = random.Random(4)
    planned: list[Planned] = []
    ticks = int(hours * 3600 / TICK.total_seconds())
    for n in range(ticks + int((LENGTH + TICK) / TICK)):  # then let the last ones run out
        now = T0 + n * TICK
        with time_machine.travel(now, tick=False):
            if n < ticks and rng.random() < 0.5:
                response = tenant.client.post("/api/v1/sessions/", {"avatar": "anna"})
                assert response.status_code == 201, response.content
                fate = rng.choice(FATES)
                stop_at = now + TICK * rng.randint(1, 9) if fate == "user" else None
                planned.append(Planned(response.json()["id"], now, fate, stop_at))
            for session in planned:
                live = session.expected_end() > now
                if session.fate == "user" and session.stop_at == now:
                    path = f"/api/v1/sessions/{session.pk}/stop"
                    assert tenant.client.post(path).status_code == 200
                elif (
                    live
                    and session.fate != "idle"
                    and (now - session.started) % (2 * TICK) == (TICK)
                ):
                    path = f"/api/v1/sessions/{session.pk}/keep-alive"
                    assert tenant.client.post(path).status_code == 200
            beats.tick()

    ledger: dict[str, list[UsageRecord]] = {}
    for row in UsageRecord.objects.all():
        ledger.setdefault(str(row.session_id), []).append(row)
    stops = heygen.state_changing_stops
    for session in planned:
        row = AvatarSession.objects.get(pk=session.pk)
        [record] = ledger[session.pk]  # exactly one billable record
        assert (row.status, row.close_reason) == ("closed", session.fate)
        expected = (session.expected_end() - session.started).total_seconds()
        assert (record.session_seconds, record.billable_minutes) == (
            int(expected),
            math.ceil(expected / 60),
        )
        assert stops[row.provider_session_id] <= 1
    truth = sum(int((s.expected_end() - s.started).total_seconds()) for s in planned)
    assert sum(r.session_seconds for rows in ledger.values() for r in rows) == truth
    # Each due session was claimed by one of the two reapers, never by both.
    claimed = sum(tick[reason] for tick in beats.claims for reason in FATES[:2])
    assert claimed == sum(1 for s in planned if s.fate != "user")
    calls = sum(heygen.stop_calls.values())
    return {"sessions": len(planned), "provider_stop_calls": calls, "ticks": ticks}


@pytest.fixture
def world(make_tenant, heygen, eager) -> Iterator[tuple[Any, TwoBeats]]:
    tenant = make_tenant("two-beats", plan=Plan.ENTERPRISE)
    tenant.org.session_seconds_limit = int(LENGTH.total_seconds())
    tenant.org.save()
    heygen_avatar(tenant.org)
    beats = TwoBeats()
    yield tenant, beats
    beats.stop()


def test_two_beats_and_two_pools_bill_each_session_once(world, heygen, record_property):
    tenant, beats = world
    for name, value in _drill(tenant, heygen, beats, HOURS).items():
        record_property(name, value)


@pytest.mark.slow
def test_two_beats_and_two_pools_over_simulated_hours(world, heygen, record_property):
    tenant, beats = world
    for name, value in _drill(tenant, heygen, beats, SLOW_HOURS).items():
        record_property(name, value)
