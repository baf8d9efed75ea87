"""T7 (reliability §4.2): the provider fails after our reservation, through the live server.

A real daphne (read timeout to the provider ``PROVIDER_READ_TIMEOUT_SECONDS`` = 2 s) starts a
trial organisation's session while the HeyGen emulator's ``streaming.new`` answers 500, hangs
longer than the read timeout (5 s), answers malformed JSON, or creates the session and then
drops the connection ("created but the response was dropped"); and, as a fifth case,
``streaming.start`` keeps failing after the create succeeded. Pass criterion, each case: the
user gets 502/503 in the contract's envelope (no key, no stack trace); the slot is released at
once (the organisation's full limit of 3 is admitted right after, and a 4th still refused); no
live row names no provider session; and a provider session that exists without a live row
(dropped; hung, created once the hang ends) is stopped at the emulator by the reconcile task
(``sessions.reconcile_one``) within 2 runs a reconcile interval apart, and recorded as a
``ProviderOrphan``; a session created before a failed start is stopped by the start itself.
The hang and start cases spend seconds waiting by design and are marked slow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings

from sessions.models import AvatarSession, ProviderOrphan
from tests.e2e.servers import AppServer
from tests.emulators.heygen import HeyGenEmulator
from tests.reliability.live import (
    LiveTenant,
    assert_error_envelope,
    calls_for,
    live_app,
    live_tenant,
    live_without_provider_id,
    provider_ids,
    reconcile_at,
    record,
    utc,
)
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
READ_TIMEOUT = 3.0
HANG = READ_TIMEOUT + 2  # a create that answers after the client gave up
IN_FLIGHT = READ_TIMEOUT / 2  # a create that answers in time, but slowly


@dataclass(frozen=True)
class Case:
    operation: str
    kind: str
    statuses: set[int]
    options: dict[str, Any] = field(default_factory=dict)
    times: int = 1
    orphan: bool = False  # a provider session is left without a live row, for reconciliation


CASES = {
    "create_5xx": Case("streaming.new", "status", {503}, {"status": 500}),
    "create_hang": Case("streaming.new", "hang", {503}, {"seconds": HANG}, orphan=True),
    "create_malformed": Case("streaming.new", "malformed", {502}),
    "create_dropped": Case("streaming.new", "lost", {502, 503}, orphan=True),
    # start is idempotent, so retried (3 attempts) before the session is given up and stopped
    "start_5xx": Case("streaming.start", "status", {503}, {"status": 500}, times=3),
}

SLOW_CASES = {"create_hang", "start_5xx"}  # seconds of hang or retries each: the slow step


@pytest.fixture(scope="module")
def faulty_heygen() -> Iterator[HeyGenEmulator]:
    emulator = HeyGenEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def faulty_app(
    django_db_setup: None,
    faulty_heygen: HeyGenEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppServer]:
    with live_app(
        faulty_heygen,
        tmp_path_factory.mktemp("faults"),
        PROVIDER_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    ) as server:
        yield server


def _slot_is_free(server: AppServer, tenant: LiveTenant) -> None:
    """The organisation's whole limit is admitted (and nothing more), then stopped again."""
    with tenant.client(server) as client:
        started = [tenant.start(client) for _ in range(tenant.org.limits.concurrent_sessions)]
        assert [r.status_code for r in started] == [201] * 3, [r.text for r in started]
        assert tenant.start(client).status_code == 429
        for response in started:
            stopped = client.post(f"/api/v1/sessions/{response.json()['id']}/stop")
            assert stopped.status_code == 200, stopped.text


def _reconcile_within_two_runs(
    heygen: HeyGenEmulator, tenant: LiveTenant, orphan: str
) -> list[dict[str, int]]:
    """Reconcile runs a reconcile interval apart, the first at once (the worst phase: the
    orphan is then still within the grace for starts in flight); stop after the run that
    stopped it, failing if two were not enough."""
    created = heygen.sessions[orphan].created_at
    interval = timedelta(seconds=settings.RECONCILE_INTERVAL_SECONDS)
    runs = []
    for number in range(2):
        moment = utc(max(created, time.time())) + number * interval
        runs.append(reconcile_at(moment, tenant.credential))
        if heygen.sessions[orphan].status == "closed":
            return runs
    raise AssertionError(f"the orphan outlived 2 reconcile runs: {runs}")


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_CASES else []) for name in CASES],
)
def test_a_provider_failure_after_admission_frees_the_slot_and_leaves_no_orphan(
    faulty_app: AppServer, faulty_heygen: HeyGenEmulator, name: str, settings, record_property
):
    case = CASES[name]
    heygen = faulty_heygen
    settings.HEYGEN_API_BASE = heygen.base_url  # the reconcile task runs in this process
    tenant = live_tenant(heygen, slug="faults")
    heygen.fail_next(case.operation, case.kind, times=case.times, **case.options)
    with tenant.client(faulty_app) as client:
        started = time.monotonic()
        response = tenant.start(client)
        answered = time.monotonic() - started
    code = assert_error_envelope(response, case.statuses, tenant.heygen_key, tenant.key)
    assert code == {502: "provider_error", 503: "provider_unavailable"}[response.status_code]

    failed = AvatarSession.objects.for_org(tenant.org).get()
    assert (failed.status, failed.close_reason) == ("closed", "error")
    assert live_without_provider_id(tenant.org) == 0
    assert bool(failed.provider_session_id) is (case.operation == "streaming.start")
    _slot_is_free(faulty_app, tenant)
    assert live_without_provider_id(tenant.org) == 0

    known = set(
        AvatarSession.objects.for_org(tenant.org)
        .exclude(provider_session_id="")
        .values_list("provider_session_id", flat=True)
    )
    if case.orphan:
        # The hung create takes effect when the hang ends: wait for it, not for a clock.
        orphan = wait_for(
            lambda: next((i for i in provider_ids(heygen, tenant.heygen_key) if i not in known), 0),
            what="the provider session our failed start created",
        )
        runs = _reconcile_within_two_runs(heygen, tenant, orphan)
        assert calls_for(heygen, "streaming.stop", orphan) == 1
        row = ProviderOrphan.objects.get(provider_session_id=orphan)
        assert (row.provider, row.organisation_id, row.stopped) == ("heygen", tenant.org.pk, True)
        record(record_property, reconcile_runs=len(runs))
    else:
        assert set(provider_ids(heygen, tenant.heygen_key)) == known  # nothing else was made
        assert reconcile_at(utc(time.time()), tenant.credential)["stopped"] == 0
        assert not ProviderOrphan.objects.exists()
    if case.operation == "streaming.start":  # the start stopped what its create made
        assert calls_for(heygen, "streaming.stop", failed.provider_session_id) == 1
    assert heygen.active(tenant.heygen_key) == []
    record(record_property, status=response.status_code, answered_seconds=round(answered, 2))


def test_a_start_whose_answer_was_lost_is_resent_and_the_session_runs(
    faulty_app: AppServer, faulty_heygen: HeyGenEmulator
):
    """``streaming.start`` takes effect and its answer is lost: the resent start is refused
    as "state wrong: connected", which means it has started; the session must run (not be
    stopped as a failure, and not bill an error)."""
    heygen = faulty_heygen
    tenant = live_tenant(heygen, slug="lost-start")
    heygen.fail_next("streaming.start", "lost")
    with tenant.client(faulty_app) as client:
        response = tenant.start(client)
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "active"
        session = AvatarSession.objects.get(pk=response.json()["id"])
        assert calls_for(heygen, "streaming.start", session.provider_session_id) == 2
        assert calls_for(heygen, "streaming.stop", session.provider_session_id) == 0
        assert [s.session_id for s in heygen.active(tenant.heygen_key)] == [
            session.provider_session_id
        ]
        assert client.post(f"/api/v1/sessions/{session.pk}/stop").status_code == 200
    assert heygen.active(tenant.heygen_key) == []


def test_a_session_stopped_while_its_create_is_in_flight_leaves_nothing_running(
    faulty_app: AppServer, faulty_heygen: HeyGenEmulator
):
    """The user stops a session while the provider is still creating it (the create takes
    ``IN_FLIGHT`` s, under the read timeout): the stop closes the row at once; when the create
    answers, the provider session it made must be stopped at once and recorded on the row,
    not left running for reconciliation to find."""
    heygen = faulty_heygen
    tenant = live_tenant(heygen, slug="early-stop")
    heygen.fail_next("streaming.new", "hang", seconds=IN_FLIGHT)
    with tenant.client(faulty_app) as client, ThreadPoolExecutor(max_workers=1) as pool:
        starting = pool.submit(tenant.start, client)
        row = wait_for(
            lambda: AvatarSession.objects.for_org(tenant.org).first(), what="the admitted row"
        )
        stopped = client.post(f"/api/v1/sessions/{row.pk}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "closed"
        response = starting.result(timeout=60)
    assert assert_error_envelope(response, {409}, tenant.heygen_key, tenant.key) == "conflict"
    [created] = provider_ids(heygen, tenant.heygen_key)
    assert heygen.active(tenant.heygen_key) == []
    assert calls_for(heygen, "streaming.stop", created) == 1
    row.refresh_from_db()
    assert (row.status, row.close_reason, row.provider_session_id) == ("closed", "user", created)
