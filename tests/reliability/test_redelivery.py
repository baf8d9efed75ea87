"""T3 (reliability.md §4.2): Redis visibility-timeout redelivery.

A real Celery worker on Redis with ``visibility_timeout=3`` (restores checked every second);
``acks_late`` as in production. Two ways a finish task outlives the timeout: the provider's
stop hangs for 9 s (the HeyGen emulator's ``hang`` fault) while the worker holds the message,
and a ``finish_stop`` sent with ``countdown=8`` sits reserved, unacknowledged, past it.

Pass criterion: the task is observed running at least twice under the same task id (the hazard
is real here), and its effects are still exactly once — the session closed once, one usage row,
one closing event, one state-changing provider stop (T1's checks).
Both are ``slow`` (about 10 s each, mostly waiting out the visibility timeout).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import signals
from django.utils import timezone

from sessions import reaper
from sessions.models import AvatarSession, UsageRecord
from sessions.tasks import finish_stop, reap_sessions
from systimz.orgs.models import Plan
from tests.reliability.conftest import active_session, heygen_avatar, needs_postgres, needs_redis
from tests.workers import running_worker, wait_for

pytestmark = [needs_redis, needs_postgres, pytest.mark.django_db(transaction=True)]
VISIBILITY = 3


class Runs:
    """``sessions.finish_stop`` runs seen by the worker, by task id, started and finished."""

    def __init__(self) -> None:
        self.started: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.lock = threading.Lock()

    def prerun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        if getattr(task, "name", "") == "sessions.finish_stop":
            with self.lock:
                self.started[task_id] += 1

    def postrun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        if getattr(task, "name", "") == "sessions.finish_stop":
            with self.lock:
                self.finished[task_id] += 1

    def redelivered(self) -> bool:
        with self.lock:
            twice = any(n >= 2 for n in self.started.values())
            return twice and self.started == self.finished


@pytest.fixture
def runs() -> Iterator[Runs]:
    seen = Runs()
    signals.task_prerun.connect(seen.prerun, weak=False)
    signals.task_postrun.connect(seen.postrun, weak=False)
    yield seen
    signals.task_prerun.disconnect(seen.prerun)
    signals.task_postrun.disconnect(seen.postrun)


@pytest.fixture
def worker(tmp_path, settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": VISIBILITY,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }
    settings.PROVIDER_READ_TIMEOUT_SECONDS = 30.0  # the hung stop must not time out
    with running_worker(tmp_path, concurrency=2) as app:
        yield app


@pytest.fixture
def expired(make_tenant, heygen) -> AvatarSession:
    org = make_tenant("redelivery", plan=Plan.ENTERPRISE).org
    avatar, credential = heygen_avatar(org)
    now = timezone.now()
    return active_session(
        org=org,
        avatar=avatar,
        credential=credential,
        provider_session_id=heygen.open_session(),
        started_at=now - timedelta(minutes=10),
        expires_at=now - timedelta(seconds=1),
    )


def _exactly_once(session: AvatarSession, heygen: Any) -> None:
    session.refresh_from_db()
    assert (session.status, session.close_reason) == ("closed", "timeout")
    assert UsageRecord.objects.filter(session=session).count() == 1
    assert session.events.filter(type="session_state", payload__status="closed").count() == 1
    assert heygen.state_changing_stops[session.provider_session_id] == 1
    record = UsageRecord.objects.get(session=session)
    assert record.session_seconds == int((session.ended_at - session.started_at).total_seconds())


@pytest.mark.slow
def test_a_finish_held_past_the_visibility_timeout_runs_twice_and_closes_once(
    expired, heygen, worker, runs, record_property
):
    heygen.fail_next("streaming.stop", "hang", seconds=3 * VISIBILITY)
    reap_sessions.delay()
    wait_for(runs.redelivered, timeout=60, what="finish_stop delivered twice, both runs done")
    _exactly_once(expired, heygen)
    record_property("finish_stop_runs", max(runs.started.values()))
    record_property("provider_stop_calls", heygen.stop_calls[expired.provider_session_id])


@pytest.mark.slow
def test_a_countdown_past_the_visibility_timeout_runs_twice_and_closes_once(
    expired, heygen, worker, runs, record_property
):
    claimed = reaper.sessions_claim_due()
    assert claimed.by_reason["timeout"] == [str(expired.pk)]
    finish_stop.apply_async((str(expired.pk),), countdown=8 / 3 * VISIBILITY)
    wait_for(runs.redelivered, timeout=60, what="the ETA task delivered twice, all runs done")
    _exactly_once(expired, heygen)
    record_property("finish_stop_runs", max(runs.started.values()))
