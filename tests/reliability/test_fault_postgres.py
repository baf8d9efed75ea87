"""T11 (reliability §4.2): PostgreSQL restarted during a burst of session starts.

The app (daphne + a Celery worker) runs on a private PostgreSQL cluster and a private Redis,
with the HeyGen emulator (enterprise key) as the provider. Six clients start sessions for an
enterprise organisation as fast as they can (at most ``SYSTIMZ_T11_STARTS``, default 60); once
a few have started, the cluster is stopped with ``pg_ctl stop -m fast``, kept down for
``SYSTIMZ_T11_DOWN_SECONDS`` (default 3) and started again, while the clients go on.

Pass criteria, asserted:
- every error answer during the outage is the contract's JSON envelope
  (``{"error": {"code", "message"}}``), never an HTML page; no request hangs;
- the API answers 2xx again within 30 s of PostgreSQL being back (measured);
- right after the burst, every ``active`` row has its provider session, live at the emulator,
  and every 201 answer is such a row (the slot and the provider session agree);
- every start the outage interrupted ends consistent: the reaper (run once with its clock
  120 s ahead, past ``STARTING_STALE``, after the live sessions are stopped by their users)
  and the reconciler (grace 0: no start is in flight any more) leave 0 live rows and 0
  provider sessions at the emulator — no orphan, no row without its provider session.

Figures (record_property): API recovery seconds, answers by status and code, rows left
``starting`` and provider sessions without a row right after the burst.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import BASE_DIR
from tests.reliability import faults
from tests.workers import wait_for

MAX_STARTS = int(faults.env_seconds("SYSTIMZ_T11_STARTS", 60))
DOWN_SECONDS = faults.env_seconds("SYSTIMZ_T11_DOWN_SECONDS", 3)
CLIENTS = 6
ROWS_SQL = "SELECT id::text, status, provider_session_id FROM avatar_sessions_avatarsession"

# The recovery tools, run once in the app's environment: the reaper with its clock past the
# stale-start bound (every live session has been stopped by its user by then, so only the
# interrupted starts are due), then each credential reconciled with no grace.
RECOVER = """
from datetime import timedelta
from django.utils import timezone
from sessions import lifecycle, reaper
from sessions.models import AvatarSession
from sessions.providers import provider_for_credential
from sessions.reconcile import reconcile_credential
from systimz.orgs.models import ProviderCredential
claimed = reaper.sessions_claim_due(now=timezone.now() + reaper.STARTING_STALE + timedelta(1))
for pk in claimed.ids:
    session = AvatarSession.objects.select_related("organisation", "credential").get(pk=pk)
    lifecycle.session_finish_stop(session=session)
for pk in reaper.stops_due(now=timezone.now() + timedelta(hours=1)):
    lifecycle.session_retry_stop(session=AvatarSession.objects.get(pk=pk))
for credential in ProviderCredential.objects.all():
    reconcile_credential(credential, provider_for_credential(credential), grace=timedelta(0))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.AppStack]:
    workdir = Path(tmp_path_factory.mktemp("t11"))
    with faults.app_stack("fault_postgres", workdir, plan="enterprise") as stack:
        yield stack


@dataclass
class Answer:
    phase: str
    status: int
    content_type: str
    body: Any


class Burst:
    """``CLIENTS`` threads starting sessions until ``MAX_STARTS`` answers or ``stop``."""

    def __init__(self, app: faults.App) -> None:
        self.app = app
        self.phase = "before"
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def start(self) -> Burst:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                if len(self.answers) >= MAX_STARTS:
                    return
            began = self.phase
            try:
                response = self.app.request("POST", "/api/v1/sessions/", json={"avatar": "anna"})
            except httpx.HTTPError as exc:  # a hang or a dropped connection: recorded, asserted
                answer = Answer(self._phase(began), 0, "", repr(exc))
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = response.text[:300]
                answer = Answer(
                    self._phase(began),
                    response.status_code,
                    response.headers.get("content-type", ""),
                    body,
                )
            with self.lock:
                self.answers.append(answer)
            self.stopping.wait(0.05)

    def _phase(self, began: str) -> str:
        """A request that began or ended during the outage, or spanned it, met the outage."""
        ended = self.phase
        return "outage" if began != ended or ended == "outage" else began

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _is_envelope(answer: Answer) -> bool:
    error = answer.body.get("error") if isinstance(answer.body, dict) else None
    return (
        answer.content_type.startswith("application/json")
        and isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


def _recover(app: faults.App) -> None:
    assert app.server is not None
    subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", "shell", "-c", RECOVER],
        cwd=BASE_DIR,
        env=app.server.environment(),
        check=True,
        capture_output=True,
        timeout=120,
    )


@faults.needs_servers
def test_postgres_restart_during_a_start_burst_leaves_every_session_consistent(
    stack: faults.AppStack, record_property: Any
) -> None:
    app, cluster, heygen = stack.app, stack.cluster, stack.heygen
    burst = Burst(app).start()
    try:
        wait_for(
            lambda: sum(a.status == 201 for a in burst.answers) >= 5,
            timeout=60,
            what="the first starts",
        )
        burst.phase = "outage"
        cluster.stop("fast")
        time.sleep(DOWN_SECONDS)  # the outage itself: how long PostgreSQL stays down
        cluster.start()
        back = time.monotonic()
        burst.phase = "after"
        wait_for(
            lambda: app.request("GET", "/api/v1/sessions/").status_code == 200,
            timeout=30,
            what="the API to answer 2xx after PostgreSQL came back",
            interval=0.1,
        )
        recovery = time.monotonic() - back
    finally:
        burst.stop()

    answers = burst.answers
    # Errors are the envelope, never an HTML page or a hung request.
    errors = [a for a in answers if a.status != 201]
    assert [a for a in errors if not _is_envelope(a)] == []
    assert [a for a in answers if a.phase != "outage" and a.status >= 500] == []
    # ... and an outage is a 503 with Retry-After (transient, retry), never a 500 (a bug).
    assert [a for a in answers if a.status == 500] == []

    # Right after the burst: the rows and the provider agree.
    with cluster.connect(stack.db) as conn:
        rows = conn.execute(ROWS_SQL).fetchall()
    live_remote = {s.session_id for s in heygen.active(faults.HEYGEN_KEY)}
    by_id = {row[0]: row for row in rows}
    for answer in answers:
        if answer.status == 201:
            assert by_id[answer.body["id"]][1] == "active", answer.body["id"]
    for _id, status, provider_session_id in rows:
        if status == "active":
            assert provider_session_id in live_remote, (_id, provider_session_id)
    live_known = {row[2] for row in rows if row[1] in ("starting", "active", "stopping")}
    orphans_after_burst = len(live_remote - live_known)
    starting_after_burst = sum(row[1] == "starting" for row in rows)

    # The users stop their sessions; the reaper and the reconciler deal with the rest.
    for _id, status, _ in rows:
        if status == "active":
            assert app.request("POST", f"/api/v1/sessions/{_id}/stop").status_code == 200
    _recover(app)
    with cluster.connect(stack.db) as conn:
        left = [row for row in conn.execute(ROWS_SQL).fetchall() if row[1] != "closed"]
    assert left == []
    assert heygen.active(faults.HEYGEN_KEY) == []

    record_property("api_recovery_seconds", round(recovery, 2))
    record_property("answers", dict(Counter(f"{a.phase}:{a.status}" for a in answers)))
    record_property(
        "error_codes",
        dict(Counter(a.body["error"]["code"] for a in errors if _is_envelope(a))),
    )
    record_property("starting_rows_after_burst", starting_after_burst)
    record_property("provider_orphans_after_burst", orphans_after_burst)
