"""T2 (reliability.md §4.2): a worker killed mid-finish.

A real prefork worker (``celery -A systimz worker --pool prefork -c 2``) runs as a subprocess
on the test database and this suite's Redis, with the production task options (``acks_late``,
``task_reject_on_worker_lost``). The test plays beat (a ``sessions.reap`` every second). Each
round sets up expired sessions on the HeyGen emulator, whose stops hang for a random 0.2-1.5 s,
and ``kill -9``s a random moment into the finishing: one worker child (the parent requeues its
task), or now and then the whole worker (restarted; its unacknowledged claims are found again
as stale, ``REAPER_STOPPING_STALE_SECONDS``=5 here instead of 60).

Pass criterion: 0 sessions double-billed; 0 sessions still live later than ``expires_at`` +
60 s after the worker is back (``ended_at`` is the close); usage rows and closed sessions match
one to one; every provider session was stopped exactly once in a way that changed its state.
Scale: ``RELIABILITY_T2_ROUNDS`` rounds (default 3; 20 in the slow variant; the T-list's 50 are
for a nightly run: ``RELIABILITY_T2_SLOW_ROUNDS=50``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from sessions.models import AvatarSession, UsageRecord
from sessions.tasks import reap_sessions
from systimz.celery import app as celery_app
from systimz.orgs.models import Plan
from tests.e2e.servers import AppServer, database_url
from tests.reliability.conftest import active_session, heygen_avatar, needs_postgres, needs_redis
from tests.workers import wait_for

pytestmark = [needs_redis, needs_postgres, pytest.mark.django_db(transaction=True)]
ROUNDS = int(os.environ.get("RELIABILITY_T2_ROUNDS", "3"))
SLOW_ROUNDS = int(os.environ.get("RELIABILITY_T2_SLOW_ROUNDS", "20"))
SESSIONS_PER_ROUND = 4
BOUND = timedelta(seconds=60)  # live past expiry, at most, once the worker is back
CELERY = Path(settings.BASE_DIR) / ".venv" / "bin" / "celery"


class Worker:
    """The prefork worker subprocess, in a process group of its own (killed by its id)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.back_at = timezone.now()
        self.restarts = -1

    def start(self) -> None:
        readies = self._readies()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own celery, fixed arguments
                [
                    str(CELERY),
                    "-A",
                    "systimz",
                    "worker",
                    "--pool",
                    "prefork",
                    "-c",
                    "2",
                    "--loglevel",
                    "INFO",
                    "--without-mingle",
                    "--without-gossip",
                ],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: self._readies() > readies, timeout=90, what="the worker ready")
        wait_for(lambda: len(self.children()) == 2, timeout=30, what="two worker children")
        self.back_at = timezone.now()
        self.restarts += 1

    def _readies(self) -> int:
        return self.log.read_bytes().count(b" ready.") if self.log.exists() else 0

    def children_killed(self) -> int:
        """Children the parent saw die of SIGKILL (the whole-worker kills are not seen)."""
        return self.log.read_bytes().count(b"exited with 'signal 9")

    def children(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in text.split()]

    def kill_child(self, rng: random.Random) -> None:
        children = self.children()
        if children:
            os.kill(rng.choice(children), signal.SIGKILL)

    def kill_all(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def worker(tmp_path, heygen) -> Iterator[Worker]:
    env = AppServer(database_url(connection.settings_dict), tmp_path / "unused.log").environment()
    env.update(
        REDIS_URL=settings.REDIS_URL,
        HEYGEN_API_BASE=heygen.base_url,
        REAPER_STOPPING_STALE_SECONDS="5",
        PROVIDER_READ_TIMEOUT_SECONDS="20",
    )
    with celery_app.connection_for_write() as conn:  # this suite's own Redis database
        conn.default_channel.queue_purge(celery_app.conf.task_default_queue)
    running = Worker(env, tmp_path / "worker.log")
    running.start()
    yield running
    running.kill_all()


class Beat:
    """The test plays beat: a ``sessions.reap`` at most every second, however often asked."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            reap_sessions.apply_async(expires=5)


def _round(world: dict[str, Any], worker: Worker, rng: random.Random) -> list[AvatarSession]:
    heygen = world["heygen"]
    now = timezone.now()
    sessions = [
        active_session(
            org=world["org"],
            avatar=world["avatar"],
            credential=world["cred"],
            provider_session_id=heygen.open_session(),
            started_at=now - timedelta(seconds=rng.randint(10, 900)),
            expires_at=now - timedelta(seconds=1),
        )
        for _ in range(SESSIONS_PER_ROUND)
    ]
    for _ in range(SESSIONS_PER_ROUND):
        heygen.fail_next("streaming.stop", "hang", seconds=rng.uniform(0.2, 1.5))
    stops_before = len(heygen.received("streaming.stop"))
    beat = Beat()
    beat()
    wait_for(
        lambda: len(heygen.received("streaming.stop")) > stops_before,
        timeout=60,
        what="the first stop of the round",
    )
    time.sleep(rng.uniform(0, 1.0))  # not a wait for anything: the crash's random moment
    if rng.random() < 0.25:
        worker.kill_all()
        worker.start()
    else:
        worker.kill_child(rng)
    heygen.clear_faults()

    def all_closed() -> bool:
        beat()
        return not AvatarSession.objects.filter(
            pk__in=[s.pk for s in sessions], status__in=["active", "stopping"]
        ).exists()

    wait_for(all_closed, timeout=120, what="every session of the round closed")
    for session in sessions:
        session.refresh_from_db()
        assert session.ended_at <= max(session.expires_at, worker.back_at) + BOUND
    return sessions


@pytest.fixture
def world(make_tenant, heygen) -> dict[str, Any]:
    org = make_tenant("crash", plan=Plan.ENTERPRISE).org
    avatar, credential = heygen_avatar(org)
    return {"org": org, "avatar": avatar, "cred": credential, "heygen": heygen}


def _crash_loop(world: dict[str, Any], worker: Worker, rounds: int) -> dict[str, int]:
    rng = random.Random(2)
    sessions = [s for _ in range(rounds) for s in _round(world, worker, rng)]
    ids = {s.pk for s in sessions}
    billed = list(UsageRecord.objects.filter(kind="session").values_list("session_id", flat=True))
    assert sorted(billed) == sorted(ids)  # one row per session: none twice, none missing
    closed = set(AvatarSession.objects.filter(status="closed").values_list("pk", flat=True))
    assert closed == ids  # ledger rows and terminal sessions, one to one
    heygen = world["heygen"]
    for session in sessions:
        assert heygen.state_changing_stops[session.provider_session_id] == 1
    late = max((s.ended_at - s.expires_at).total_seconds() for s in sessions)
    return {
        "sessions": len(sessions),
        "worst_seconds_past_expiry": int(late),
        "children_killed": worker.children_killed(),
        "whole_worker_kills": worker.restarts,
    }


def test_killed_workers_never_double_bill_or_leak(world, worker, record_property):
    for name, value in _crash_loop(world, worker, ROUNDS).items():
        record_property(name, value)


@pytest.mark.slow
def test_killed_workers_never_double_bill_or_leak_many_rounds(world, worker, record_property):
    for name, value in _crash_loop(world, worker, SLOW_ROUNDS).items():
        record_property(name, value)
