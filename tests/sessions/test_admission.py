"""Admission control: limits decided in the database, atomically."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from sessions.models import AvatarSession, SessionEvent, SessionStatus
from sessions.services import session_admit, transition
from systimz import errors
from systimz.orgs.models import Organisation, Plan
from tests import factories


@pytest.fixture
def avatar(tenant):
    return factories.AvatarFactory(organisation=tenant.org)


def test_a_trial_organisation_admits_three_then_refuses_with_retry_after(tenant, avatar):
    sessions = [session_admit(org=tenant.org, avatar=avatar) for _ in range(3)]
    with pytest.raises(errors.ConcurrencyLimit) as info:
        session_admit(org=tenant.org, avatar=avatar)
    assert info.value.headers["Retry-After"] == "60"
    assert [s.status for s in sessions] == ["starting"] * 3
    assert AvatarSession.objects.for_org(tenant.org).count() == 3
    # The first event of every session records its state.
    assert list(SessionEvent.objects.filter(session=sessions[0]).values_list("seq", "type")) == [
        (1, "session_state")
    ]


def test_closed_sessions_free_their_slot(tenant, avatar):
    sessions = [session_admit(org=tenant.org, avatar=avatar) for _ in range(3)]
    assert transition(sessions[0], from_statuses=["starting"], to_status=SessionStatus.CLOSED)
    assert session_admit(org=tenant.org, avatar=avatar).status == "starting"


def test_a_trial_provider_key_caps_sessions_on_that_key(make_tenant):
    tenant = make_tenant("big", plan=Plan.ENTERPRISE)
    factories.ProviderCredentialFactory(organisation=tenant.org, provider="heygen", plan="trial")
    heygen = factories.AvatarFactory(
        organisation=tenant.org, provider="heygen", provider_avatar_id="Wayne"
    )
    local = factories.AvatarFactory(organisation=tenant.org)
    for _ in range(3):
        session_admit(org=tenant.org, avatar=heygen)
    with pytest.raises(errors.ConcurrencyLimit, match="trial key"):
        session_admit(org=tenant.org, avatar=heygen)
    assert session_admit(org=tenant.org, avatar=local).provider == "local"


def test_a_remote_avatar_without_a_credential_is_a_conflict(tenant):
    heygen = factories.AvatarFactory(
        organisation=tenant.org, provider="liveavatar", provider_avatar_id="x"
    )
    with pytest.raises(errors.Conflict, match="no liveavatar credential"):
        session_admit(org=tenant.org, avatar=heygen)
    assert not AvatarSession.objects.exists()


def test_transition_is_compare_and_set(tenant, avatar):
    session = session_admit(org=tenant.org, avatar=avatar)
    stale = AvatarSession.objects.get(pk=session.pk)
    assert transition(session, from_statuses=["starting"], to_status="active")
    assert not transition(stale, from_statuses=["starting", "active"], to_status="closed")
    assert AvatarSession.objects.get(pk=session.pk).status == "active"


def test_organisation_counts_live_sessions(tenant, avatar):
    session_admit(org=tenant.org, avatar=avatar)
    body = tenant.client.get("/api/v1/organisation/").json()
    assert body["current"]["active_sessions"] == 1


def _race(org: Organisation, avatar, contenders: int) -> list[str]:
    """``contenders`` threads, each with its own database connection, start at once."""
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contend() -> None:
        try:
            barrier.wait()
            session_admit(org=org, avatar=avatar)
            result = "admitted"
        except errors.ConcurrencyLimit:
            result = "refused"
        finally:
            connections.close_all()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_starts_admit_exactly_three_each_round():
    org = Organisation.objects.create(slug="race", name="Race", plan=Plan.TRIAL)
    avatar = factories.AvatarFactory(organisation=org)
    for _ in range(10):
        outcomes = _race(org, avatar, 50)
        assert outcomes.count("admitted") == 3
        assert outcomes.count("refused") == 47
        assert AvatarSession.objects.filter(organisation=org, status="starting").count() == 3
        AvatarSession.objects.filter(organisation=org).update(status="closed")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_stops_close_once_and_stop_at_the_provider_once():
    from sessions.lifecycle import session_stop

    class CountingProvider:
        stops: list[str] = []

        def stop(self, session_id: str) -> None:
            self.stops.append(session_id)

        def close(self) -> None:
            pass

    org = Organisation.objects.create(slug="stops", name="Stops", plan=Plan.ENTERPRISE)
    avatar = factories.AvatarFactory(organisation=org)
    for _ in range(5):
        session = session_admit(org=org, avatar=avatar)
        transition(
            session,
            from_statuses=["starting"],
            to_status="active",
            provider_session_id=f"p-{session.pk}",
        )
        barrier = threading.Barrier(8)

        def stop(pk=session.pk, barrier=barrier) -> None:
            try:
                barrier.wait()
                session_stop(
                    session=AvatarSession.objects.get(pk=pk), factory=lambda s: CountingProvider()
                )
            finally:
                connections.close_all()

        threads = [threading.Thread(target=stop) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        closed = AvatarSession.objects.get(pk=session.pk)
        assert (closed.status, closed.close_reason) == ("closed", "user")
        assert CountingProvider.stops.count(f"p-{session.pk}") == 1
        closing_events = SessionEvent.objects.filter(session=closed, payload__reason="user").count()
        assert closing_events == 1
