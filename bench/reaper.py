"""The reaper closing 10,000 expired HeyGen sessions: the bulk claim, then finishing every claim
(the provider stop, then the close with its usage row), serially in-process and through a real
Celery worker on Redis.

    python -m bench.reaper [--sessions 10000] [--celery-sessions 2000] [--no-celery]
                           [--concurrency 2] [--db-reuse-max N]
                           [--redis-url redis://127.0.0.1:6379/13]
                           [--tasks 2] [--profile N] [--json]

It creates its own throwaway test database (as Django's test runner does: a temporary SQLite
file, or ``test_<name>_bench_<pid>`` on PostgreSQL) and drops it at the end; the development
database is never opened. ``REDIS_URL`` is set to ``--redis-url`` (default: ``REDIS_URL`` or a
spare database, 13) before Django starts, so the channel layer, the cache and the worker's
broker are Redis, as in a deployment with a worker.

Setup: an enterprise organisation (concurrency override 100,000, idle timeout 3600 s so the
only reason that applies is ``timeout``), a HeyGen credential holding the
emulator's key (``tests/emulators/heygen.py`` over HTTP on loopback in this process,
``HEYGEN_API_BASE`` pointed at it), three avatars. Each phase seeds its own sessions: the
emulator gets ``connected`` sessions directly in its table (its HTTP ``streaming.new`` caps an
enterprise key at 100 and scans every session per request), then the ``AvatarSession`` rows go
in with ``bulk_create``: ``active``, their ``provider_session_id``, started 3,600-3,900 s ago,
``expires_at`` 0-300 s in the past, recent ``last_activity_at``, and a small event log each
(two ``session_state``, ``--tasks`` ``task`` + ``avatar_stop_talking`` events), so the close's
usage queries read real rows. The bench's emulator subclass skips the stock ``_expire`` scan of
every session on every request (its cost at this size is reported) and times each request
server-side, as ``bench.sessions`` does.

1. **Claim** (in-process): ``sessions.reaper.sessions_claim_due()`` once per tick until a tick
   claims nothing; time, sessions claimed and SQL statements per tick. A tick claims at most
   ``reaper.BATCH`` per reason.
2. **Finish, serially** (the baseline): ``sessions.tasks.finish_stop(id)`` (the task's body:
   load the row, ``lifecycle.session_finish_stop``) for every claim, one after another; per
   close the wall time, this process's CPU time, the provider round trip and client
   construction (``ProviderHttp`` wrapped), the emulator's own time; SQL statements per close
   with ``CaptureQueriesContext`` on a sample. In-run baselines every ``BASELINE_EVERY``
   closes: a primary-key lookup and one provider call on a reused client (another key, no
   sessions). ``--profile N``: cProfile (thread CPU time) of N more serial closes, to stderr.
3. **Through Celery** (``--celery-sessions``, 2,000 by default to keep a default run near six
   minutes on 2 cores; 10,000 took about nine minutes more on busy cores): a real worker
   (``tests/workers.py``: threads pool, ``--concurrency`` 2, a queue of its own on Redis) and a
   beat thread that sends ``sessions.reap`` every ``REAPER_INTERVAL_SECONDS`` with beat's
   ``expires``, as production's schedule does; the ticks claim and enqueue one
   ``sessions.finish_stop`` per claim. Reports the time from the first tick to the last close,
   closes per second, this process's CPU per close, ticks run and expired, stale re-claims,
   tasks run, SQL statements per close (every statement of the worker's connections), the
   database connections the worker opened (``--db-reuse-max`` sets ``CELERY_DB_REUSE_MAX`` to
   compare) and how long after the first tick each session was closed (billing runs until the
   close).

Checks, per phase: every session claimed and closed once, one usage row each, exactly one
``streaming.stop`` per provider session at the emulator, none left running there.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import bench_database, load_average, log, quiet
from bench.knowledge_ask import _bounded, engine_info, machine_info, summarise

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

HEYGEN_KEY = "hg-reaper-bench-key-0123456789"
IDLE_KEY = "hg-reaper-bench-idle-key-987654"  # no sessions: the reused-client baseline's key
AVATARS = (  # slug, the emulator's avatar id, quality
    ("anna", "Anna_public_3_20240108", "low"),
    ("wayne", "Wayne_20240711", "medium"),
    ("santa", "Santa_Fireplace_Front_public", "high"),
)
SESSION_SECONDS = 3600
IDLE_SECONDS = 3600  # the organisation's idle timeout: long, so only ``timeout`` applies
BULK = 2000
QUERY_SAMPLES = 50  # closes run under CaptureQueriesContext in the serial phase
BASELINE_EVERY = 50
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
# The Celery phase's default size: at ~20-25 closes/s on 2 cores, 10,000 more would take the
# default run well past 6 minutes (run it with --celery-sessions 10000).
CELERY_DEFAULT_SESSIONS = 2000
CELERY_TIMEOUT = 900.0  # a bound for the worker phase, not a measurement
STOP_PATH = "/v1/streaming.stop"


# --- The emulator -----------------------------------------------------------------------------


def _emulator_class() -> type:
    """The timed HeyGen emulator of ``bench.sessions``, with a ``seed`` of live sessions and
    without the stock ``_expire`` scan (see ``expire_scan_ms``)."""
    from bench.sessions import _emulator_class as timed_class
    from tests.emulators.heygen import Session, _livekit_jwt

    class SeededHeyGen(timed_class()):  # type: ignore[misc]
        def _expire(self) -> None:
            # The stock method walks every session on every request, under the lock: with
            # 10,000 sessions that is the emulator's cost, not Systimz's. Seeded sessions
            # have limits far beyond the run, so nothing would expire anyway.
            return

        def expire_scan_ms(self) -> float:
            """What the stock ``_expire`` costs per request at the current table size."""
            from tests.emulators.heygen import HeyGenEmulator

            with self.lock:
                started = time.perf_counter()
                HeyGenEmulator._expire(self)
                return (time.perf_counter() - started) * 1000

        def seed(self, api_key: str, avatar_ids: list[str]) -> list[tuple[str, str]]:
            """``connected`` sessions, as ``streaming.new`` + ``streaming.start`` leave them;
            (session id, LiveKit token) for each."""
            now = self.clock()
            made: list[tuple[str, str]] = []
            with self.lock:
                for avatar_id in avatar_ids:
                    session_id = str(uuid.uuid1())
                    self.sessions[session_id] = Session(
                        session_id=session_id,
                        api_key=api_key,
                        avatar_id=avatar_id,
                        body={"avatar_id": avatar_id, "version": "v2"},
                        created_at=now,
                        last_activity=now,
                        idle_timeout=IDLE_SECONDS,
                        duration_limit=86_400,
                        status="connected",
                    )
                    made.append((session_id, _livekit_jwt(session_id)))
            return made

        def stops(self, since: int) -> Counter[str]:
            """``streaming.stop`` requests received from index ``since`` on, per session id."""
            with self.lock:
                requests = self.requests[since:]
            return Counter(
                str((r["json"] or {}).get("session_id"))
                for r in requests
                if r["operation"] == "streaming.stop"
            )

    return SeededHeyGen


# --- Seeding ----------------------------------------------------------------------------------


class World:
    """The organisation, its credential and avatars, and the emulator."""

    def __init__(self, emulator: Any, tasks: int, seed: int) -> None:
        from systimz.orgs.models import Organisation, Plan
        from systimz.orgs.services import organisation_create
        from tests import factories

        self.emulator = emulator
        self.tasks = tasks
        self.rng = random.Random(seed)
        org = organisation_create(slug="bench", name="Bench", plan=Plan.ENTERPRISE)
        # Admission is not exercised (rows are inserted), but the organisation may run them
        # all. Organisation.clean() would cap the override at 1,000; the column does not.
        Organisation.objects.filter(pk=org.pk).update(
            concurrent_sessions_limit=100_000, idle_timeout_seconds_limit=IDLE_SECONDS
        )
        org.refresh_from_db()
        self.org = org
        self.credential = factories.ProviderCredentialFactory(
            organisation=org, provider="heygen", api_key=HEYGEN_KEY, plan=Plan.ENTERPRISE
        )
        self.avatars = [
            factories.AvatarFactory(
                organisation=org,
                slug=slug,
                provider="heygen",
                provider_avatar_id=provider_id,
                quality=quality,
            )
            for slug, provider_id, quality in AVATARS
        ]

    def seed(self, n: int, tag: str) -> tuple[list[str], float]:
        """``n`` expired ``active`` sessions (rows and emulator sessions) marked ``end_user=tag``;
        their ids and the seconds it took."""
        from sessions.models import AvatarSession, SessionEvent, SessionStatus

        started = time.perf_counter()
        avatars = [self.avatars[i % len(self.avatars)] for i in range(n)]
        remote = self.emulator.seed(HEYGEN_KEY, [a.provider_avatar_id for a in avatars])
        now = datetime.now(tz=UTC)
        rows: list[AvatarSession] = []
        events: list[SessionEvent] = []
        for avatar, (provider_id, token) in zip(avatars, remote, strict=True):
            began = now - timedelta(seconds=SESSION_SECONDS + self.rng.uniform(0, 300))
            row = AvatarSession(
                organisation=self.org,
                avatar=avatar,
                avatar_slug=avatar.slug,
                provider="heygen",
                quality=avatar.quality,
                credential=self.credential,
                provider_session_id=provider_id,
                status=SessionStatus.ACTIVE,
                end_user=tag,
                media={
                    "kind": "livekit",
                    "url": "wss://emulated-heygen.livekit.cloud",
                    "access_token": token,
                },
                started_at=began,
                last_activity_at=now - timedelta(seconds=self.rng.uniform(0, 60)),
                expires_at=began + timedelta(seconds=SESSION_SECONDS),
                state_changed_at=began,
                version=3,
                idle_timeout_seconds=IDLE_SECONDS,
            )
            history = [
                ("session_state", {"status": "starting", "reason": None}),
                ("session_state", {"status": "active", "reason": None}),
            ]
            for k in range(self.tasks):
                task_id = str(uuid.uuid4())
                history.append(
                    ("task", {"task_id": task_id, "text": f"Sentence {k}.", "mode": "repeat"})
                )
                history.append(
                    (
                        "avatar_stop_talking",
                        {"task_id": task_id, "duration_ms": round(self.rng.uniform(800, 6000))},
                    )
                )
            events.extend(
                SessionEvent(
                    organisation=self.org, session=row, seq=seq, type=type_, payload=payload
                )
                for seq, (type_, payload) in enumerate(history, start=1)
            )
            row.next_seq = len(history) + 1
            rows.append(row)
        AvatarSession.objects.bulk_create(rows, batch_size=BULK)
        SessionEvent.objects.bulk_create(events, batch_size=BULK * 2)
        return [str(r.pk) for r in rows], time.perf_counter() - started


def claim_all(expected: int) -> list[dict[str, Any]]:
    """Reaper ticks (``sessions_claim_due``) until one claims nothing."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sessions.reaper import sessions_claim_due

    ticks: list[dict[str, Any]] = []
    claimed_total = 0
    while True:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            claimed = sessions_claim_due()
            seconds = time.perf_counter() - started
        ticks.append(
            {
                "seconds": round(seconds, 4),
                "claimed": len(claimed.ids),
                "by_reason": {r: len(i) for r, i in claimed.by_reason.items() if i},
                "stale": len(claimed.stale),
                "statements": len(queries),
                "ids": claimed.ids,
            }
        )
        claimed_total += len(claimed.ids)
        if not claimed.ids or len(ticks) > expected // 1000 + 5:
            return ticks


def phase_check(world: World, ids: list[str], tag: str, stops: Counter[str]) -> dict[str, Any]:
    """Closed once, one usage row each, one provider stop each, nothing left running."""
    from sessions.models import AvatarSession, UsageRecord

    rows = AvatarSession.objects.filter(end_user=tag)
    provider_ids = set(rows.values_list("provider_session_id", flat=True))
    per_session = [stops.get(p, 0) for p in provider_ids]
    left = [s for s in world.emulator.active(HEYGEN_KEY) if s.session_id in provider_ids]
    return {
        "sessions": len(ids),
        "closed": rows.filter(status="closed").count(),
        "closed_timeout": rows.filter(status="closed", close_reason="timeout").count(),
        "stop_pending": rows.filter(stop_pending=True).count(),
        "usage_rows": UsageRecord.objects.filter(session__end_user=tag, kind="session").count(),
        "provider_stop_calls": sum(stops.values()),
        "provider_sessions_stopped_exactly_once": sum(1 for c in per_session if c == 1),
        "provider_sessions_stopped_twice_or_more": sum(1 for c in per_session if c > 1),
        "provider_sessions_never_stopped": sum(1 for c in per_session if c == 0),
        "left_running_at_emulator": len(left),
    }


def _ok(check: dict[str, Any]) -> bool:
    n = check["sessions"]
    return (
        check["closed"] == n
        and check["usage_rows"] == n
        and check["provider_stop_calls"] == n
        and check["provider_sessions_stopped_exactly_once"] == n
        and check["left_running_at_emulator"] == 0
    )


def _emulator_seconds(emulator: Any, since: int) -> list[float]:
    return [end - start for path, start, end in emulator.timings[since:] if path == STOP_PATH]


# --- 1 + 2: claim, then finish serially ------------------------------------------------------


def run_serial(world: World, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from avatars.providers.heygen import HeyGenInteractive
    from bench.sessions import provider_client_timed
    from sessions.tasks import finish_stop
    from systimz.orgs.models import Organisation

    emulator = world.emulator
    ids, seed_seconds = world.seed(n, "reaper-bench-serial")
    log(f"serial: seeded {n} expired sessions in {seed_seconds:.1f} s")
    scan_ms = emulator.expire_scan_ms()

    ticks = claim_all(n)
    claimed = [i for tick in ticks for i in tick["ids"]]
    log(
        "serial: claimed "
        + ", ".join(f"{t['claimed']} in {t['seconds'] * 1000:.0f} ms" for t in ticks)
    )
    assert sorted(claimed) == sorted(ids), f"claimed {len(claimed)} of {len(ids)}"

    reused = HeyGenInteractive(api_key=IDLE_KEY, base_url=emulator.base_url)
    baselines: dict[str, Callable[[], object]] = {
        "point lookup": lambda: Organisation.objects.filter(pk=world.org.pk).exists(),
        "provider call, reused client": reused.list_active,
    }
    for fn in baselines.values():  # connections, imports; untimed
        fn()
    base_times: dict[str, list[float]] = {name: [] for name in baselines}
    base_seconds = 0.0
    per_close: list[float] = []
    statements: list[int] = []
    sample_sql: list[str] = []
    sample_every = max(2, len(claimed) // QUERY_SAMPLES)
    requests_mark, timings_mark = len(emulator.requests), len(emulator.timings)
    try:
        with provider_client_timed() as client_times:
            started, cpu_started = time.perf_counter(), time.process_time()
            for i, session_id in enumerate(claimed):
                if i % BASELINE_EVERY == 0:
                    b_started, calls_mark = time.perf_counter(), len(client_times.calls)
                    for name, fn in baselines.items():
                        t = time.perf_counter()
                        fn()
                        base_times[name].append(time.perf_counter() - t)
                    base_seconds += time.perf_counter() - b_started
                    del client_times.calls[calls_mark:]  # the baseline's, not a stop's
                if i % sample_every == 0:
                    with CaptureQueriesContext(connection) as queries:
                        finish_stop(session_id)
                    statements.append(len(queries))
                    if not sample_sql:
                        sample_sql = [q["sql"] for q in queries.captured_queries]
                else:
                    t = time.perf_counter()
                    finish_stop(session_id)
                    per_close.append(time.perf_counter() - t)
                if (i + 1) % 1000 == 0:
                    log(f"  serial: closed {i + 1}/{len(claimed)}")
            seconds = time.perf_counter() - started - base_seconds
            cpu_seconds = time.process_time() - cpu_started
    finally:
        reused.close()
    check = phase_check(world, ids, "reaper-bench-serial", emulator.stops(requests_mark))
    log(f"serial: {len(claimed)} closed in {seconds:.1f} s; check {check}")
    base_summary = {name: summarise(times) for name, times in base_times.items()}
    close_summary = summarise(per_close)
    return {
        "sessions": n,
        "seed_s": round(seed_seconds, 2),
        "emulator_expire_scan_ms": round(scan_ms, 2),
        "claim_ticks": [{k: v for k, v in t.items() if k != "ids"} for t in ticks],
        "finish": {
            "seconds": round(seconds, 2),
            "closes_per_s": round(len(claimed) / seconds, 1),
            # This process's CPU (all threads: the closes, the emulator, the baselines) per
            # close; less sensitive than wall time to what else runs on the machine.
            "process_cpu_ms_per_close": round(cpu_seconds * 1000 / len(claimed), 2),
            "per_close": close_summary,
            "provider_round_trip": summarise(client_times.calls),
            "provider_client_setup": summarise(client_times.setups),
            "emulator": summarise(_emulator_seconds(emulator, timings_mark)),
            "provider_calls_client_side": len(client_times.calls),
            "statements_per_close": {
                "n": len(statements),
                "min": min(statements),
                "max": max(statements),
                "mean": round(statistics.fmean(statements), 1),
            },
            "sample_statements": sample_sql,
        },
        "baseline": base_summary,
        "ratio_close_p50_to_baseline_p50": {
            name: round(close_summary["p50_ms"] / s["p50_ms"], 1) if s["p50_ms"] else None
            for name, s in base_summary.items()
        },
        "check": check,
        "ok": _ok(check),
    }


def run_profile(world: World, n: int, log: Callable[[str], None]) -> None:
    """cProfile (thread CPU time) of ``n`` serial finishes (seeded and claimed separately), to
    stderr."""
    from sessions.tasks import finish_stop

    ids, _ = world.seed(n, "reaper-bench-profile")
    claimed = [i for tick in claim_all(n) for i in tick["ids"]]
    assert sorted(claimed) == sorted(ids)
    # CPU time of this thread, not wall time: what the close itself computes, whatever else
    # the machine runs (waiting on PostgreSQL, the emulator or Redis costs nothing here).
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for session_id in claimed:
        finish_stop(session_id)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    log(f"cProfile (thread CPU time) of {n} serial finishes:\n{out.getvalue()}")


# --- 3: through a Celery worker ---------------------------------------------------------------


class TaskLog:
    """Celery signals of the worker's tasks: start, end, result, and expired deliveries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, tuple[str, float]] = {}
        self.done: list[tuple[str, float, float, Any]] = []  # name, start, end, result
        self.expired: list[str] = []

    @contextmanager
    def connected(self) -> Iterator[TaskLog]:
        from celery.signals import task_postrun, task_prerun, task_revoked

        def prerun(task_id: str, task: Any, **_: Any) -> None:
            with self.lock:
                self.started[task_id] = (task.name, time.time())

        def postrun(task_id: str, task: Any, retval: Any = None, **_: Any) -> None:
            now = time.time()
            with self.lock:
                name, began = self.started.pop(task_id, (task.name, now))
                self.done.append((name, began, now, retval))

        def revoked(sender: Any = None, expired: bool = False, **_: Any) -> None:
            with self.lock:
                self.expired.append(getattr(sender, "name", "?") if expired else "revoked")

        task_prerun.connect(prerun, weak=False)
        task_postrun.connect(postrun, weak=False)
        task_revoked.connect(revoked, weak=False)
        try:
            yield self
        finally:
            task_prerun.disconnect(prerun)
            task_postrun.disconnect(postrun)
            task_revoked.disconnect(revoked)


@contextmanager
def counted_worker_statements() -> Iterator[list[int]]:
    """Counts every SQL statement run on connections opened outside the main thread (the
    worker's), through an execute wrapper installed when each connects, and the connections
    opened."""
    from django.db.backends.signals import connection_created

    count = [0, 0]  # statements, connections opened
    lock = threading.Lock()
    main = threading.main_thread()

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        with lock:
            count[0] += 1
        return execute(sql, params, many, context)

    def created(sender: Any, connection: Any, **_: Any) -> None:
        if threading.current_thread() is main:
            return
        with lock:
            count[1] += 1
        if getattr(connection, "_bench_counted", False):
            return
        connection._bench_counted = True
        connection.execute_wrappers.append(wrapper)

    connection_created.connect(created, weak=False)
    try:
        yield count
    finally:
        connection_created.disconnect(created)


def redis_reachable(url: str) -> str | None:
    """None when Redis answers, else why not."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip the phase
        return f"{type(exc).__name__}: {exc}"
    return None


def run_celery(
    world: World,
    n: int,
    concurrency: int,
    redis_url: str,
    db_reuse_max: int | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    import redis
    from django.conf import settings

    from bench.sessions import provider_client_timed
    from sessions.models import AvatarSession
    from sessions.reaper import BATCH
    from sessions.tasks import reap_sessions
    from tests.workers import running_worker

    emulator = world.emulator
    tag = "reaper-bench-celery"
    ids, seed_seconds = world.seed(n, tag)
    log(f"celery: seeded {n} expired sessions in {seed_seconds:.1f} s")
    interval = float(settings.REAPER_INTERVAL_SECONDS)
    expires = max(interval - 0.5, 0.5)  # beat's option for sessions-reap (settings.py)
    requests_mark, timings_mark = len(emulator.requests), len(emulator.timings)
    sent: list[float] = []
    closed_at_poll: list[tuple[float, int]] = []
    remaining_keys: list[str] = []
    if db_reuse_max is not None:  # read by Celery's Django fixup when the worker starts
        settings.CELERY_DB_REUSE_MAX = db_reuse_max
    client = redis.Redis.from_url(redis_url)
    keys_before = set(client.scan_iter(count=1000))
    with tempfile.TemporaryDirectory(prefix="systimz-bench-reaper-") as tmp:
        with (
            TaskLog().connected() as tasks,
            counted_worker_statements() as statements,
            provider_client_timed() as client_times,
            running_worker(Path(tmp), concurrency=concurrency) as app,
        ):
            queue = app.conf.task_default_queue
            stop = threading.Event()

            def beat() -> None:
                while not stop.is_set():
                    sent.append(time.time())
                    reap_sessions.apply_async(expires=expires)
                    stop.wait(interval)

            beat_thread = threading.Thread(target=beat, name="bench-beat", daemon=True)
            rows = AvatarSession.objects.filter(end_user=tag, status="closed")
            cpu_started = time.process_time()
            beat_thread.start()
            deadline = time.monotonic() + CELERY_TIMEOUT
            last_logged = 0
            try:
                while True:
                    closed = rows.count()
                    closed_at_poll.append((time.time(), closed))
                    if closed >= n:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"celery: only {closed}/{n} closed in {CELERY_TIMEOUT} s"
                        )
                    if closed - last_logged >= 1000:
                        last_logged = closed - closed % 1000
                        log(f"  celery: closed {closed}/{n}")
                    time.sleep(0.25)
            finally:
                cpu_seconds = time.process_time() - cpu_started
                stop.set()
                beat_thread.join()
            # Let the worker finish what it holds (a tick, duplicate finishes) before it stops.
            time.sleep(2 * interval)
        # The worker's keys: its queue's, and kombu's bookkeeping that was not there before.
        for key in set(client.scan_iter(count=1000)) - keys_before:
            name = key.decode()
            if queue in name or name.startswith(("_kombu.", "unacked")):
                client.delete(key)
        remaining_keys = sorted(k.decode() for k in client.scan_iter(count=1000))[:20]

    first_tick = sent[0]
    ended = sorted(
        e.timestamp()
        for e in AvatarSession.objects.filter(end_user=tag).values_list("ended_at", flat=True)
    )
    seconds = ended[-1] - first_tick
    delay_after_first_tick = [e - first_tick for e in ended]
    done = tasks.done
    by_name = Counter(name for name, *_ in done)
    ticks = [(s, e, r) for name, s, e, r in done if name == "sessions.reap"]
    finish_runs = [(s, e, r) for name, s, e, r in done if name == "sessions.finish_stop"]
    check = phase_check(world, ids, tag, emulator.stops(requests_mark))
    log(f"celery: {n} closed in {seconds:.1f} s after the first tick; check {check}")
    tick_rows = [
        {
            "started_after_first_send_s": round(s - first_tick, 2),
            "seconds": round(e - s, 3),
            **(r if isinstance(r, dict) else {"result": repr(r)}),
        }
        for s, e, r in ticks
    ]
    return {
        "sessions": n,
        "concurrency": concurrency,
        "pool": "threads",
        "broker": redis_url,
        "reaper_batch": BATCH,
        "seed_s": round(seed_seconds, 2),
        "seconds_first_tick_to_last_close": round(seconds, 2),
        "closes_per_s": round(n / seconds, 1),
        "steady_closes_per_s": round((n - 1) / (ended[-1] - ended[0]), 1) if n > 1 else None,
        # This process's CPU (worker threads, beat, the polling, the emulator) per close.
        "process_cpu_ms_per_close": round(cpu_seconds * 1000 / n, 2),
        "ticks_sent": len(sent),
        "ticks_run": tick_rows,
        "ticks_expired_unrun": tasks.expired.count("sessions.reap"),
        "tasks_run": dict(by_name),
        "finish_stop_duplicates": len(finish_runs) - n,
        "finish_stop_task_seconds": summarise([e - s for s, e, _ in finish_runs]),
        "provider_round_trip": summarise(client_times.calls),
        "provider_client_setup": summarise(client_times.setups),
        "emulator": summarise(_emulator_seconds(emulator, timings_mark)),
        "worker_statements": statements[0],
        "worker_statements_per_close": round(statements[0] / n, 1),
        "worker_db_connections_opened": statements[1],
        "conn_max_age": settings.DATABASES["default"].get("CONN_MAX_AGE", 0),
        "celery_db_reuse_max": db_reuse_max,
        "closed_after_first_tick": summarise(delay_after_first_tick),
        "redis_keys_left": remaining_keys,
        "check": check,
        "ok": _ok(check),
    }


# --- Report -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from django.conf import settings

    load_before = load_average()
    emulator = _emulator_class()(keys={HEYGEN_KEY: "enterprise", IDLE_KEY: "enterprise"}).start()
    old_base = settings.HEYGEN_API_BASE
    settings.HEYGEN_API_BASE = emulator.base_url
    try:
        world = World(emulator, tasks=args.tasks, seed=args.seed)
        serial = run_serial(world, args.sessions, log)
        load_mid = load_average()
        celery: dict[str, Any] | None = None
        skipped = None
        if args.no_celery:
            skipped = "--no-celery"
        elif (why := redis_reachable(args.redis_url)) is not None:
            skipped = f"Redis at {args.redis_url} unreachable ({why})"
        if skipped:
            log(f"celery phase skipped: {skipped}")
        else:
            celery = run_celery(
                world,
                args.celery_sessions,
                args.concurrency,
                args.redis_url,
                args.db_reuse_max,
                log,
            )
        if args.profile:
            run_profile(world, args.profile, log)
    finally:
        settings.HEYGEN_API_BASE = old_base
        emulator.stop()
    return {
        "benchmark": "reaper",
        "database": engine_info(),
        "machine": {
            **machine_info(),
            "load_before": load_before,
            "load_between_phases": load_mid,
            "load_after": load_average(),
        },
        "tasks_per_session": args.tasks,
        "serial": serial,
        "celery": celery,
        "celery_skipped": skipped,
    }


def render(report: dict[str, Any]) -> str:
    db, machine, serial = report["database"], report["machine"], report["serial"]
    finish = serial["finish"]
    lines = [
        f"reaper benchmark: {db['engine']} {db['version']}; {machine['cpus']} CPUs, "
        f"{machine['mem_gib']} GiB, Python {machine['python']}, Django {machine['django']}; "
        f"load {machine['load_before'][0]:.2f} before, {machine['load_between_phases'][0]:.2f} "
        f"between phases, {machine['load_after'][0]:.2f} after",
        f"emulator: the stock _expire scan would cost {serial['emulator_expire_scan_ms']:.1f} ms "
        f"per request at {serial['sessions']:,} sessions (skipped in the bench)",
        "",
        f"1. claim ({serial['sessions']:,} expired active sessions, reaper BATCH per reason):",
    ]
    for i, tick in enumerate(serial["claim_ticks"], start=1):
        lines.append(
            f"   tick {i}: {tick['claimed']:>6,} claimed in {tick['seconds'] * 1000:8.1f} ms, "
            f"{tick['statements']} SQL statements"
        )
    lines += [
        "",
        f"2. finish serially in-process (finish_stop task body): {serial['sessions']:,} in "
        f"{finish['seconds']:.1f} s = {finish['closes_per_s']:.1f} closes/s; this process's CPU "
        f"{finish['process_cpu_ms_per_close']:.1f} ms per close",
        f"{'ms':<36}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'mean':>9}{'max':>9}",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        return (
            f"{label:<36}{s['n']:>7}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
            f"{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )

    lines += [
        row("per close", finish["per_close"]),
        row("  provider round trip (stop)", finish["provider_round_trip"]),
        row("  provider client setup", finish["provider_client_setup"]),
        row("  emulator's own time", finish["emulator"]),
    ]
    for name, s in serial["baseline"].items():
        lines.append(row(f"baseline: {name}", s))
    st = finish["statements_per_close"]
    lines += [
        f"SQL statements per close (CaptureQueriesContext, {st['n']} closes): "
        f"{st['min']}-{st['max']}, mean {st['mean']}",
        "close p50 / baseline p50: "
        + ", ".join(f"{k} {v}x" for k, v in serial["ratio_close_p50_to_baseline_p50"].items()),
        _check_line(serial["check"], serial["ok"]),
    ]
    celery = report["celery"]
    lines.append("")
    if celery is None:
        lines.append(f"3. celery: skipped ({report['celery_skipped']})")
        return "\n".join(lines)
    lines += [
        f"3. through Celery ({celery['pool']} pool, concurrency {celery['concurrency']}, "
        f"{celery['broker']}; beat every tick interval): {celery['sessions']:,} sessions",
        f"   first tick to last close {celery['seconds_first_tick_to_last_close']:.1f} s = "
        f"{celery['closes_per_s']:.1f} closes/s (steady, first to last close: "
        f"{celery['steady_closes_per_s']} /s); this process's CPU "
        f"{celery['process_cpu_ms_per_close']:.1f} ms per close",
        f"   ticks sent {celery['ticks_sent']}, run {len(celery['ticks_run'])}, expired unrun "
        f"{celery['ticks_expired_unrun']}; tasks run {celery['tasks_run']}",
    ]
    for tick in celery["ticks_run"]:
        lines.append(
            f"   tick at +{tick['started_after_first_send_s']:.1f} s took {tick['seconds']:.2f} s: "
            + ", ".join(
                f"{k} {v}" for k, v in tick.items() if k not in ("seconds",) and "_s" not in k
            )
        )
    lines += [
        f"   finish_stop duplicates: {celery['finish_stop_duplicates']}; worker SQL statements per "
        f"close: {celery['worker_statements_per_close']}; database connections opened by the "
        f"worker: {celery['worker_db_connections_opened']:,} (CONN_MAX_AGE "
        f"{celery['conn_max_age']}, CELERY_DB_REUSE_MAX {celery['celery_db_reuse_max']})",
        row("   finish_stop task", celery["finish_stop_task_seconds"]),
        row("   provider round trip (stop)", celery["provider_round_trip"]),
        "   closed after the first tick (s): "
        + ", ".join(
            f"{k.removesuffix('_ms')} {celery['closed_after_first_tick'][k] / 1000:.1f}"
            for k in ("p50_ms", "p95_ms", "max_ms")
        ),
        _check_line(celery["check"], celery["ok"]),
    ]
    return "\n".join(lines)


def _check_line(c: dict[str, Any], ok: bool) -> str:
    return (
        f"check: {'OK' if ok else 'FAILED'}: closed {c['closed']}/{c['sessions']} "
        f"(timeout {c['closed_timeout']}), usage rows {c['usage_rows']}, provider stop "
        f"calls {c['provider_stop_calls']} (exactly once "
        f"{c['provider_sessions_stopped_exactly_once']}, twice+ "
        f"{c['provider_sessions_stopped_twice_or_more']}, never "
        f"{c['provider_sessions_never_stopped']}), left running "
        f"{c['left_running_at_emulator']}, stop pending {c['stop_pending']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reaper", description=__doc__)
    parser.add_argument("--sessions", type=_bounded(10, 200_000), default=10_000)
    parser.add_argument(
        "--celery-sessions",
        type=_bounded(10, 200_000),
        default=CELERY_DEFAULT_SESSIONS,
        help=f"sessions for the Celery phase (default {CELERY_DEFAULT_SESSIONS:,}; 10,000 took "
        "about 9 minutes more on 2 busy cores)",
    )
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery phase")
    parser.add_argument("--concurrency", type=_bounded(1, 16), default=2)
    parser.add_argument(
        "--db-reuse-max",
        type=_bounded(1, 1_000_000),
        default=None,
        metavar="N",
        help="set CELERY_DB_REUSE_MAX for the worker (Celery's Django fixup then keeps a "
        "thread's database connection across tasks; otherwise it closes it around every task)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS,
        help=f"broker, channel layer and cache (default: REDIS_URL or {DEFAULT_REDIS})",
    )
    parser.add_argument(
        "--tasks", type=_bounded(0, 50), default=2, help="speaks in each seeded session's log"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--profile",
        type=_bounded(0, 10_000),
        default=0,
        metavar="N",
        help="cProfile N more serial finishes; the statistics go to stderr",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    args = parser.parse_args(argv)
    os.environ["REDIS_URL"] = args.redis_url  # before settings are read

    import django

    django.setup()
    quiet("systimz", "httpx", "celery")
    with bench_database():
        report = run(args, log)

    if args.json:
        print(json.dumps(report, sort_keys=False))
    else:
        print(render(report))
    ok = report["serial"]["ok"] and (report["celery"] is None or report["celery"]["ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
