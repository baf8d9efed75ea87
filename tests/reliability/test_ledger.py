"""T1 (reliability.md §4.2): duplicate usage emission.

Every way a session ends fires 1-5 times at once from threads on PostgreSQL: the user's stop
through the API (``POST /sessions/<id>/stop``) and through the service (``session_stop``), a
reaper tick (claim, then ``sessions.finish_stop`` in the same thread), a redelivered
``sessions.finish_stop`` and ``sessions.retry_stop``. There is no provider-side end path in the
code (nothing sets ``close_reason=provider``: HeyGen sends us no end event), so none is fired.

Pass criterion, per session: exactly one ``session`` usage row; the sum of billed seconds and
minutes equals the ground truth computed from the sessions' own start and end (the clock is
frozen, so the end is known before the race; minutes are billed up to the session's length,
``expires_at``); no exception escapes any path (an
``IntegrityError`` included) and the API never answers 5xx; the provider session is stopped
exactly once in a way that changes its state (repeats are the provider's no-ops).

Scale: Hypothesis draws 20 sessions per example. ``RELIABILITY_T1_EXAMPLES`` by default (5:
100 sessions, for the default suite's time budget on a loaded 2-core machine; 10 gives 200);
``RELIABILITY_T1_SLOW_EXAMPLES`` in the slow variant (30: 600 sessions, for the slow step's
budget of about 2 minutes here; 100 gives the T-list's 2,000).
"""

from __future__ import annotations

import math
import os
import queue
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions import lifecycle, reaper, tasks
from sessions.models import AvatarSession, UsageRecord
from systimz.orgs.models import Plan
from systimz.orgs.services import api_key_create
from tests.conftest import bearer_client
from tests.reliability.conftest import active_session, heygen_avatar, needs_postgres

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True)]

SESSIONS_PER_EXAMPLE = 20
EXAMPLES = int(os.environ.get("RELIABILITY_T1_EXAMPLES", "5"))
SLOW_EXAMPLES = int(os.environ.get("RELIABILITY_T1_SLOW_EXAMPLES", "30"))
THREADS = 8  # the database is shared with other suites: a bounded number of connections
CLOSERS = ("api", "service", "reaper")  # paths that end an active session by themselves
REPEATERS = ("api", "service", "reaper", "finish", "retry")

# (length in ms, a closing path, {path: how many times}) per session.
plan_strategy = st.tuples(
    st.integers(min_value=0, max_value=3 * 3600 * 1000),
    st.sampled_from(CLOSERS),
    st.dictionaries(st.sampled_from(REPEATERS), st.integers(1, 5), max_size=4),
)
Plan_ = tuple[int, str, dict[str, int]]
batch_strategy = st.lists(
    plan_strategy, min_size=SESSIONS_PER_EXAMPLE, max_size=SESSIONS_PER_EXAMPLE
)


def _invocation(path: str, session_id: str, secret: str) -> Callable[[], Any]:
    """One firing of ``path`` on ``session_id``; returns what it answered (for the API: the
    status code)."""

    def api() -> int:
        return bearer_client(secret).post(f"/api/v1/sessions/{session_id}/stop").status_code

    def service() -> str:
        session = AvatarSession.objects.select_related("organisation", "credential").get(
            pk=session_id
        )
        return lifecycle.session_stop(session=session).status

    def reap() -> int:
        claimed = reaper.sessions_claim_due()
        for claimed_id in claimed.ids:  # the tick hands each claim to finish_stop
            tasks.finish_stop(claimed_id)
        return len(claimed.ids)

    return {
        "api": api,
        "service": service,
        "reaper": reap,
        "finish": lambda: tasks.finish_stop(session_id),
        "retry": lambda: tasks.retry_stop(session_id),
    }[path]


def _fire(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except BaseException as exc:  # noqa: BLE001 - every escape is a failure to report
        return None, exc


def _fire_all(calls: list[Callable[[], Any]]) -> list[tuple[Any, BaseException | None]]:
    """Run ``calls`` on ``THREADS`` threads, in order of submission (so a session's firings
    overlap); each thread keeps one database connection and closes it when done."""
    jobs: queue.SimpleQueue[tuple[int, Callable[[], Any]]] = queue.SimpleQueue()
    for job in enumerate(calls):
        jobs.put(job)
    results: list[tuple[Any, BaseException | None]] = [(None, None)] * len(calls)

    def work() -> None:
        try:
            while True:
                try:
                    index, call = jobs.get_nowait()
                except queue.Empty:
                    return
                results[index] = _fire(call)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _run(world: dict[str, Any], plans: list[Plan_]) -> None:
    """Set up ``plans`` as active sessions, fire every path at them concurrently, check T1."""
    org, avatar, credential, heygen = (world[k] for k in ("org", "avatar", "cred", "heygen"))
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    secret = api_key_create(org=org, name="t1", scopes=["sessions"]).secret  # fresh throttle
    sessions: list[tuple[AvatarSession, int, int]] = []  # session, ran ms, billable ms
    calls: list[tuple[str, Callable[[], Any]]] = []
    for length_ms, closer, repeats in plans:
        counts = {**repeats, closer: max(repeats.get(closer, 0), 1)}
        due = "reaper" in counts
        session = active_session(
            org=org,
            avatar=avatar,
            credential=credential,
            provider_session_id=heygen.open_session(),
            started_at=end - timedelta(milliseconds=length_ms),
            expires_at=end - timedelta(seconds=1) if due else end + timedelta(hours=1),
        )
        # Billing stops at the session's length (expires_at); a due session ran 1 s past it.
        sessions.append((session, length_ms, length_ms - 1000 if due else length_ms))
        burst = [(p, _invocation(p, str(session.pk), secret)) for p, n in counts.items()]
        burst = [item for item in burst for _ in range(counts[item[0]])]
        random.shuffle(burst)
        calls.extend(burst)
    with time_machine.travel(end, tick=False):
        outcomes = list(zip(calls, _fire_all([c for _, c in calls]), strict=True))

    escaped = [(path, repr(exc)) for (path, _), (_, exc) in outcomes if exc is not None]
    assert escaped == []
    api_codes = [result for (path, _), (result, _) in outcomes if path == "api"]
    assert all(code == 200 for code in api_codes), sorted(set(api_codes))

    ids = [s.pk for s, _, _ in sessions]
    rows = UsageRecord.objects.filter(session_id__in=ids)
    assert rows.exclude(kind="session").count() == 0
    per_session = dict.fromkeys(ids, 0)
    for session_id in rows.values_list("session_id", flat=True):
        per_session[session_id] += 1
    assert set(per_session.values()) == {1}, "exactly one usage row per session"
    truth_seconds = sum(ms // 1000 for _, ms, _ in sessions)
    truth_minutes = sum(math.ceil(max(billable, 0) / 60000) for _, _, billable in sessions)
    assert sum(r.session_seconds for r in rows) == truth_seconds
    assert sum(r.billable_minutes for r in rows) == truth_minutes
    closed = AvatarSession.objects.filter(pk__in=ids)
    assert {s.status for s in closed} == {"closed"}
    own = sum(int((s.ended_at - s.started_at).total_seconds()) for s in closed)
    assert own == truth_seconds  # the sessions' own start and end agree with the ledger
    for session in closed:
        assert session.events.filter(type="session_state", payload__status="closed").count() == 1
        assert heygen.state_changing_stops[session.provider_session_id] == 1
    world["fired"] += len(calls)
    world["sessions"] += len(sessions)


@pytest.fixture
def world(make_tenant, heygen) -> dict[str, Any]:
    org = make_tenant("ledger", plan=Plan.ENTERPRISE).org
    avatar, credential = heygen_avatar(org)
    return {
        "org": org,
        "avatar": avatar,
        "cred": credential,
        "heygen": heygen,
        "fired": 0,
        "sessions": 0,
    }


def _property(examples: int) -> Callable[..., None]:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(plans=batch_strategy)
    def check(world: dict[str, Any], plans: list[Plan_]) -> None:
        _run(world, plans)

    return check


def test_every_end_path_racing_bills_each_session_once(world, record_property):
    _property(EXAMPLES)(world)
    record_property("sessions", world["sessions"])
    record_property("path_firings", world["fired"])


@pytest.mark.slow
def test_every_end_path_racing_bills_each_session_once_at_scale(world, record_property):
    _property(SLOW_EXAMPLES)(world)
    record_property("sessions", world["sessions"])
    record_property("path_firings", world["fired"])
