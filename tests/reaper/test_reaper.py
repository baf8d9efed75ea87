"""The reaper with a real worker on a real broker, the clock moved with time-machine."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from sessions import reaper, relay
from sessions.lifecycle import session_finish_stop
from sessions.models import AvatarSession, ProviderOrphan, UsageRecord
from sessions.tasks import finish_stop, reap_sessions, reconcile_providers
from tests import factories
from tests.emulators.heygen import HeyGenEmulator
from tests.workers import running_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
KEY = "hg-reaper-key-0123456789"


@pytest.fixture
def heygen(settings):
    emulator = HeyGenEmulator(keys={KEY: "enterprise"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


@pytest.fixture
def anna(tenant, heygen):
    factories.ProviderCredentialFactory(
        organisation=tenant.org, provider="heygen", api_key=KEY, plan="enterprise"
    )
    return factories.AvatarFactory(
        organisation=tenant.org,
        slug="anna",
        provider="heygen",
        provider_avatar_id="Anna_public_3_20240108",
    )


@pytest.fixture
def worker(tmp_path):
    with running_worker(tmp_path) as app:
        yield app


def _start(tenant) -> AvatarSession:
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "anna"}, format="json")
    assert response.status_code == 201, response.content
    return AvatarSession.objects.get(pk=response.json()["id"])


def _closed(session: AvatarSession) -> AvatarSession | None:
    session.refresh_from_db()
    return session if session.status == "closed" else None


def test_a_session_past_its_length_is_stopped_and_billed_once(tenant, anna, heygen, worker):
    session = _start(tenant)
    with time_machine.travel(session.expires_at + timedelta(seconds=1), tick=True):
        reap_sessions.delay()
        wait_for(lambda: _closed(session), what="the expired session closed")
    assert session.close_reason == "timeout"
    assert heygen.active() == []
    record = UsageRecord.objects.get(session=session)
    assert record.session_seconds >= tenant.org.limits.session_seconds  # 600 s on trial
    # 600 s and a bit ran; the bit is the reaper's lag, billed up to the plan's length only.
    assert record.billable_minutes == 10


def test_an_idle_session_is_stopped_and_keep_alive_extends_it(tenant, anna, heygen, worker):
    session = _start(tenant)
    idle = tenant.org.limits.idle_timeout_seconds
    start = session.last_activity_at
    with time_machine.travel(start + timedelta(seconds=idle - 10), tick=True):
        assert tenant.client.post(f"/api/v1/sessions/{session.pk}/keep-alive").status_code == 200
    with time_machine.travel(start + timedelta(seconds=idle + 5), tick=True):
        reap_sessions.apply()  # this tick runs here: nothing is due, the keep-alive counted
        session.refresh_from_db()
        assert session.status == "active"
    with time_machine.travel(start + timedelta(seconds=2 * idle), tick=True):
        reap_sessions.delay()
        wait_for(lambda: _closed(session), what="the idle session closed")
    assert session.close_reason == "idle"
    assert len(heygen.received("streaming.stop")) == 1


def test_a_session_whose_page_went_away_is_stopped_after_the_grace(
    tenant, anna, heygen, worker, settings
):
    session = _start(tenant)
    relay.listener_joined(str(session.pk))
    relay.listener_left(str(session.pk))
    session.refresh_from_db()
    gone = session.disconnected_at
    with time_machine.travel(gone + timedelta(seconds=settings.DISCONNECT_GRACE_SECONDS - 5)):
        assert reaper.sessions_claim_due().ids == []  # still within the grace
    with time_machine.travel(
        gone + timedelta(seconds=settings.DISCONNECT_GRACE_SECONDS + 1), tick=True
    ):
        reap_sessions.delay()
        wait_for(lambda: _closed(session), what="the disconnected session closed")
    assert session.close_reason == "disconnected"


def test_two_reapers_and_a_user_racing_close_each_session_once(tenant, anna, heygen, worker):
    sessions = [_start(tenant) for _ in range(3)]  # the trial's concurrency
    later = max(s.expires_at for s in sessions) + timedelta(seconds=1)
    with time_machine.travel(later, tick=True):
        barrier = threading.Barrier(3)

        def reap() -> None:
            barrier.wait()
            reap_sessions.delay()

        def user_stop() -> None:
            barrier.wait()
            tenant.client.post(f"/api/v1/sessions/{sessions[0].pk}/stop")

        threads = [threading.Thread(target=f) for f in (reap, reap, user_stop)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for session in sessions:
            wait_for(lambda s=session: _closed(s), what="every session closed")
    assert UsageRecord.objects.filter(session__in=sessions).count() == 3
    for session in sessions:
        assert session.events.filter(type="session_state", payload__status="closed").count() == 1
    assert len(heygen.received("streaming.stop")) >= 3
    assert heygen.active() == []


def test_a_claim_whose_worker_died_is_finished_by_a_later_tick(tenant, anna, heygen, worker):
    session = _start(tenant)
    at = session.expires_at + timedelta(seconds=1)
    with time_machine.travel(at):
        claimed = reaper.sessions_claim_due()  # the tick claimed it; its task never ran
    assert claimed.by_reason["timeout"] == [str(session.pk)]
    session.refresh_from_db()
    assert session.status == "stopping"
    with time_machine.travel(at + reaper.STOPPING_STALE - timedelta(seconds=5)):
        assert reaper.sessions_claim_due().stale == []  # not stale yet: maybe still running
    with time_machine.travel(at + reaper.STOPPING_STALE + timedelta(seconds=1), tick=True):
        reap_sessions.delay()
        wait_for(lambda: _closed(session), what="the stale claim finished")
    assert session.close_reason == "timeout"
    assert UsageRecord.objects.filter(session=session).count() == 1
    assert heygen.active() == []


def test_duplicate_delivery_of_a_finish_closes_once(tenant, anna, heygen, worker):
    session = _start(tenant)
    with time_machine.travel(session.expires_at + timedelta(seconds=1)):
        reaper.sessions_claim_due()
    results = [finish_stop.delay(str(session.pk)) for _ in range(3)]
    wait_for(lambda: _closed(session), what="closed")
    for result in results:
        result.get(timeout=30)
    session_finish_stop(session=session)  # and once more, after the fact
    assert UsageRecord.objects.filter(session=session).count() == 1
    assert session.events.filter(type="session_state", payload__status="closed").count() == 1


def test_a_stop_that_fails_is_retried_with_backoff_until_it_lands(tenant, anna, heygen, worker):
    session = _start(tenant)
    heygen.fail_next("streaming.stop", "status", status=503, times=12)
    with time_machine.travel(session.expires_at + timedelta(seconds=1), tick=True):
        reap_sessions.delay()
        wait_for(lambda: _closed(session), what="closed with the stop pending")
    assert session.stop_pending is True
    assert len(heygen.active()) == 1
    assert "pending" in session.failure

    first_retry = session.next_stop_attempt_at
    with time_machine.travel(first_retry + timedelta(seconds=1), tick=True):
        reap_sessions.delay()  # the provider still fails: the next attempt moves out
        wait_for(
            lambda: AvatarSession.objects.get(pk=session.pk).next_stop_attempt_at > first_retry,
            what="a failed retry, rescheduled",
        )
    session.refresh_from_db()
    assert session.stop_pending is True
    assert session.next_stop_attempt_at > first_retry

    heygen.clear_faults()
    with time_machine.travel(session.next_stop_attempt_at + timedelta(seconds=1), tick=True):
        reap_sessions.delay()
        wait_for(lambda: not AvatarSession.objects.get(pk=session.pk).stop_pending, what="landed")
    assert heygen.active() == []
    assert UsageRecord.objects.filter(session=session).count() == 1


def test_reconciliation_stops_an_orphan_at_the_provider(tenant, anna, heygen, worker):
    from avatars.providers.base import SessionRequest
    from avatars.providers.heygen import HeyGenInteractive

    known = _start(tenant)
    client = HeyGenInteractive(api_key=KEY, base_url=heygen.base_url)
    orphan = client.create(SessionRequest(avatar_id="Anna_public_3_20240108"))  # never recorded
    client.close()
    # Past reconciliation's grace for starts in flight, within the provider's idle timeout.
    with time_machine.travel(timezone.now() + timedelta(seconds=90), tick=True):
        reconcile_providers.delay()
        wait_for(
            lambda: ProviderOrphan.objects.filter(stopped=True).exists(), what="orphan stopped"
        )
    row = ProviderOrphan.objects.get()
    assert (row.provider_session_id, row.organisation_id) == (orphan.session_id, tenant.org.pk)
    assert [s.session_id for s in heygen.active()] == [known.provider_session_id]
