"""The usage ledger, the monthly budget, and the billing report (JSON and CSV)."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions.models import AvatarSession, UsageRecord
from sessions.usage import billable_minutes, usage_correct, usage_record_close
from systimz.orgs.models import Plan
from systimz.orgs.services import api_key_create
from tests import factories
from tests.conftest import bearer_client

T0 = datetime(2026, 1, 28, tzinfo=UTC)  # runs across a month's end and many days


def _closed_session(org, avatar, started: datetime | None, ended: datetime, **extra):
    session = AvatarSession.objects.create(
        organisation=org,
        avatar=avatar,
        avatar_slug=avatar.slug,
        provider="local",
        quality=extra.pop("quality", "medium"),
        status="closed",
        close_reason="user",
        started_at=started,
        ended_at=ended,
        **extra,
    )
    return usage_record_close(session)


@pytest.mark.django_db
def test_a_session_is_billed_by_the_minute_rounded_up_once():
    org = factories.OrganisationFactory()
    avatar = factories.AvatarFactory(organisation=org)
    record = _closed_session(org, avatar, T0, T0 + timedelta(seconds=61.5))
    assert (record.session_seconds, record.billable_minutes) == (61, 2)
    assert _closed_session(org, avatar, None, T0).billable_minutes == 0  # never started
    with pytest.raises(IntegrityError), transaction.atomic():
        usage_record_close(record.session)  # a second row for the session is impossible
    correction = usage_correct(record=record, billable_minutes_delta=-1, note="goodwill")
    assert correction.kind == "correction"
    assert UsageRecord.objects.filter(session=record.session).count() == 2


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(0, 0), (0.4, 1), (59.9, 1), (60, 1), (60.01, 2), (3600, 60)]
)
def test_billable_minutes_round_up_per_session(seconds, minutes):
    assert billable_minutes(seconds) == minutes


sessions_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10 * 24 * 3600),  # start offset from T0, s
        st.floats(min_value=0, max_value=4 * 3600, allow_nan=False),  # length, s
        st.sampled_from(["alpha", "beta", "gamma"]),
        st.sampled_from(["high", "medium", "low"]),
        st.booleans(),  # ours, or the other organisation's
    ),
    max_size=25,
)


@pytest.mark.django_db
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sessions=sessions_strategy,
    window=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    group_by=st.sampled_from(["day", "avatar", "quality"]),
)
def test_the_report_counts_each_session_once_and_json_equals_csv(sessions, window, group_by):
    ours, theirs = (factories.OrganisationFactory(plan=Plan.ENTERPRISE) for _ in range(2))
    avatars = {
        (org.pk, slug): factories.AvatarFactory(organisation=org, slug=slug)
        for org in (ours, theirs)
        for slug in ("alpha", "beta", "gamma")
    }
    expected_ids = set()
    first, last = sorted(window)
    start_day = (T0 + timedelta(days=first)).date()
    end_day = (T0 + timedelta(days=last)).date()
    for offset, length, slug, quality, mine in sessions:
        org = ours if mine else theirs
        started = T0 + timedelta(seconds=offset)
        ended = started + timedelta(seconds=length)
        record = _closed_session(org, avatars[(org.pk, slug)], started, ended, quality=quality)
        if mine and start_day <= ended.date() <= end_day:
            expected_ids.add(record.session_id)

    client = bearer_client(api_key_create(org=ours, name="billing", scopes=["billing"]).secret)
    params = {"from": start_day.isoformat(), "to": end_day.isoformat(), "group_by": group_by}
    body = client.get("/api/v1/usage/", params).json()
    as_csv = client.get("/api/v1/usage/", {**params, "format": "csv"})
    assert as_csv["Content-Type"].startswith("text/csv")

    rows = body["rows"]
    fields = ("sessions", "session_seconds", "billable_minutes", "speaking_seconds", "tasks")
    assert body["totals"] == {f: sum(r[f] for r in rows) for f in fields}
    assert body["totals"]["sessions"] == len(expected_ids)
    expected = UsageRecord.objects.filter(session_id__in=expected_ids)
    assert body["totals"]["billable_minutes"] == sum(r.billable_minutes for r in expected)
    assert body["totals"]["billable_minutes"] == sum(
        math.ceil((r.ended_at - r.started_at).total_seconds() / 60) for r in expected
    )
    parsed = list(csv.reader(io.StringIO(as_csv.content.decode())))
    assert parsed[0] == [group_by, *fields]
    assert parsed[1:-1] == [[str(r[group_by]), *(str(r[f]) for f in fields)] for r in rows]
    assert parsed[-1] == ["total", *(str(body["totals"][f]) for f in fields)]


@pytest.mark.django_db
def test_usage_needs_the_billing_scope_and_checks_its_parameters(tenant):
    assert tenant.client_with("sessions").get("/api/v1/usage/").status_code == 403
    client = tenant.client_with("billing")
    assert client.get("/api/v1/usage/").status_code == 200
    for params in (
        {"from": "2026-13-01"},
        {"from": "2026-02-02", "to": "2026-02-01"},
        {"group_by": "planet"},
        {"from": "2020-01-01", "to": "2026-01-01"},
    ):
        response = client.get("/api/v1/usage/", params)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "invalid"
    csv_error = client.get("/api/v1/usage/", {"group_by": "x"}, HTTP_ACCEPT="text/csv")
    assert csv_error.status_code == 400
    assert csv_error.json()["error"]["code"] == "invalid"


@pytest.mark.django_db
def test_a_spent_budget_refuses_new_starts_with_quota_exceeded(tenant):
    avatar = factories.AvatarFactory(organisation=tenant.org, slug="guide")
    now = datetime.now(UTC)
    _closed_session(tenant.org, avatar, now - timedelta(minutes=301), now)  # 301 of 300 minutes
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "guide"}, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert int(response["Retry-After"]) > 0
    overview = tenant.client.get("/api/v1/organisation/").json()
    assert overview["current"]["minutes_this_month"] == 301


@pytest.mark.django_db(transaction=True)
def test_a_session_that_crosses_the_budget_is_stopped_with_timeout(tenant):
    from sessions import reaper
    from sessions.lifecycle import session_finish_stop

    avatar = factories.AvatarFactory(organisation=tenant.org, slug="guide")
    now = datetime.now(UTC)
    _closed_session(tenant.org, avatar, now - timedelta(minutes=290), now)  # 290 of 300 used
    live = AvatarSession.objects.create(
        organisation=tenant.org,
        avatar=avatar,
        avatar_slug="guide",
        provider="local",
        quality="medium",
        status="active",
        started_at=now,
        last_activity_at=now,
        expires_at=now + timedelta(hours=1),
        idle_timeout_seconds=3600,
    )
    assert reaper.sessions_claim_due(now + timedelta(minutes=5)).ids == []
    claimed = reaper.sessions_claim_due(now + timedelta(minutes=10, seconds=1))
    assert claimed.by_reason["timeout"] == [str(live.pk)]
    live.refresh_from_db()
    session_finish_stop(session=live, factory=lambda s: _NoopProvider())
    live.refresh_from_db()
    assert (live.status, live.close_reason) == ("closed", "timeout")


class _NoopProvider:
    def stop(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.django_db
def test_the_admin_month_report_shows_the_members_own_usage_and_its_csv(tenant, outsider):
    from django.test import Client

    from systimz.orgs import services

    now = datetime.now(UTC)
    mine = factories.AvatarFactory(organisation=tenant.org, slug="mine")
    _closed_session(tenant.org, mine, now - timedelta(seconds=90), now)
    theirs = factories.AvatarFactory(organisation=outsider.org, slug="theirs")
    _closed_session(outsider.org, theirs, now - timedelta(minutes=50), now)
    services.member_create(org=tenant.org, username="bea", password="a-long-pass-phrase-9")
    client = Client()
    assert client.login(username="bea", password="a-long-pass-phrase-9")
    page = client.get("/admin/avatar_sessions/usagerecord/report/", {"org": outsider.org.slug})
    assert page.status_code == 200
    assert page.context["report"]["totals"]["billable_minutes"] == 2  # theirs never shows
    download = client.get(
        "/admin/avatar_sessions/usagerecord/report/", {"format": "csv", "org": "outsider"}
    )
    assert download["Content-Type"].startswith("text/csv")
    assert download.content.decode().splitlines()[-1].startswith("total,1,90,2,")
