"""T5 and T13 (reliability.md §4.2): a closed month's report never changes, and the report API's
windows add up.

T5 in our design. There is no period-close table: the ledger is append-only, keyed by session
(``UsageRecord``, one ``session`` row per closed session, written when it closes), and a
session counts on the UTC day it *ended*. A month is closed once it is over: no row is ever
written with an ``ended_at`` in the past (a session's row is dated by its close, now), so a
"late event" is a session that ran in month M and closed in M+1 — it is billed in full in M+1.
A correction is a new signed row (``usage_correct``); for a session of a month that is over, it
counts in the current month (the adjustment of T5), with an idempotency key per correction.
Pass criterion: month M's report (JSON and CSV, every grouping) is byte-identical (SHA-256)
after a late close, a correction (sent twice: recorded once) and new sessions in M+1; the
correction appears once, in M+1; the totals of M and M+1 equal the ground truth.

T13: random sessions ending around DST changes (Europe and the US, 2026) and UTC midnights.
The API has no ``tz`` parameter: days are UTC by contract (docs/usage.md; the report groups by
``TruncDate(..., tzinfo=UTC)``), so DST cannot move a session between days; a ``tz`` would be a
contract change. Pass criterion: the rows sum to the totals; adjacent windows sum to the window
that spans them; JSON equals CSV; ``from`` is inclusive and ``to`` is the last day included
(exclusive at the next UTC midnight) to the microsecond; another organisation's usage is never
visible (the organisation comes from the key; there is no organisation parameter to 404 on).
``tests/reaper/test_usage.py`` already checks grouping, rounding and CSV shape; not repeated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions import lifecycle
from sessions.models import AvatarSession, UsageRecord
from sessions.usage import usage_correct, usage_record_close
from systimz import errors
from systimz.orgs.models import Plan
from systimz.orgs.services import api_key_create
from tests import factories
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db
FIELDS = ("sessions", "session_seconds", "billable_minutes", "speaking_seconds", "tasks")
MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)


class _Noop:
    """A provider whose stop lands (the sessions here have no provider session anyway)."""

    def stop(self, session_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def _session(org: Any, avatar: Any, start: datetime) -> AvatarSession:
    return AvatarSession.objects.create(
        organisation=org,
        avatar=avatar,
        avatar_slug=avatar.slug,
        provider="local",
        quality=random.choice(["high", "medium", "low"]),
        status="active",
        started_at=start,
        last_activity_at=start,
        expires_at=start + timedelta(days=1),
        idle_timeout_seconds=3600,
    )


def _stop_at(session: AvatarSession, moment: datetime) -> None:
    """The user's stop, through the real service, at ``moment``."""
    with time_machine.travel(moment, tick=False):
        lifecycle.session_stop(session=session, factory=lambda s: _Noop())


def _reports(client: Any, start: date, end: date) -> dict[str, bytes]:
    """Every grouping of the window as JSON and CSV bytes, as a billing export would keep."""
    out = {}
    for group_by in ("day", "avatar", "quality"):
        params = {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by}
        for fmt in ("json", "csv"):
            response = client.get("/api/v1/usage/", {**params, "format": fmt})
            assert response.status_code == 200, response.content
            out[f"{group_by}.{fmt}"] = response.content
    return out


def _totals(client: Any, start: date, end: date) -> dict[str, int]:
    params = {"from": start.isoformat(), "to": end.isoformat()}
    return client.get("/api/v1/usage/", params).json()["totals"]


def _minutes(start: datetime, end: datetime) -> int:
    return math.ceil((end - start).total_seconds() / 60)


@pytest.mark.django_db(transaction=True)
def test_a_closed_months_report_never_changes(make_tenant, record_property):
    random.seed(5)
    ours = make_tenant("ledger-t5", plan=Plan.ENTERPRISE)
    theirs = make_tenant("other-t5", plan=Plan.ENTERPRISE)
    avatars = [factories.AvatarFactory(organisation=ours.org, slug=s) for s in ("ava", "bob")]
    client = ours.client_with("billing")
    truth: list[int] = []  # billable minutes of every session of ours, whenever billed

    for _ in range(30):  # March: sessions that start and end in the month
        start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=random.randint(0, 30 * 86400))
        end = start + timedelta(
            seconds=random.randint(1, 7200), microseconds=random.randint(0, 10**6)
        )
        _stop_at(_session(ours.org, random.choice(avatars), start), end)
        truth.append(_minutes(start, end))
    theirs_avatar = factories.AvatarFactory(organisation=theirs.org, slug="ava")
    _stop_at(
        _session(theirs.org, theirs_avatar, datetime(2026, 3, 9, tzinfo=UTC)),
        datetime(2026, 3, 9, 1, tzinfo=UTC),
    )
    late_start = datetime(2026, 3, 31, 23, 40, tzinfo=UTC)
    running = _session(ours.org, avatars[0], late_start)  # still running as March ends

    march_end = date(2026, 3, 31)
    with time_machine.travel(datetime(2026, 4, 1, 0, 5, tzinfo=UTC), tick=False):
        closed_report = _reports(client, MARCH, march_end)
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in closed_report.items()}

    # After the close: the late end, a correction (twice, same key), new sessions in April.
    late_end = datetime(2026, 4, 1, 0, 10, tzinfo=UTC)
    _stop_at(running, late_end)
    truth.append(_minutes(late_start, late_end))
    corrected = UsageRecord.objects.filter(organisation=ours.org, kind="session").earliest(
        "ended_at"
    )
    with time_machine.travel(datetime(2026, 4, 2, 9, tzinfo=UTC), tick=False):
        first = usage_correct(record=corrected, billable_minutes_delta=-1, note="T-1", key="T-1")
        again = usage_correct(record=corrected, billable_minutes_delta=-1, note="T-1", key="T-1")
        with pytest.raises(errors.Conflict):
            usage_correct(record=corrected, billable_minutes_delta=-5, note="T-1", key="T-1")
    assert first.pk == again.pk
    truth.append(-1)
    for _ in range(10):
        start = datetime(2026, 4, 2, tzinfo=UTC) + timedelta(seconds=random.randint(0, 20 * 86400))
        end = start + timedelta(seconds=random.randint(1, 7200))
        _stop_at(_session(ours.org, random.choice(avatars), start), end)
        truth.append(_minutes(start, end))

    with time_machine.travel(datetime(2026, 5, 1, tzinfo=UTC), tick=False):
        reopened = _reports(client, MARCH, march_end)
        april = _totals(client, APRIL, date(2026, 4, 30))
        march = _totals(client, MARCH, march_end)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in reopened.items()} == digests
    assert reopened == closed_report
    corrections = UsageRecord.objects.filter(organisation=ours.org, kind="correction")
    assert [(c.pk, c.ended_at) for c in corrections] == [
        (first.pk, datetime(2026, 4, 2, 9, tzinfo=UTC))
    ]
    assert march["sessions"] == 30
    assert april["sessions"] == 11  # the ten April sessions and the late one
    assert march["billable_minutes"] + april["billable_minutes"] == sum(truth)
    record_property("closed_month_sha256_day_json", digests["day.json"])


@pytest.mark.django_db
def test_a_correction_in_the_open_month_counts_on_the_sessions_day(tenant):
    avatar = factories.AvatarFactory(organisation=tenant.org)
    start = datetime(2026, 6, 3, 10, tzinfo=UTC)
    session = _session(tenant.org, avatar, start)
    _stop_at(session, start + timedelta(minutes=5))
    record = UsageRecord.objects.get(session=session)
    with time_machine.travel(datetime(2026, 6, 20, tzinfo=UTC), tick=False):
        correction = usage_correct(record=record, billable_minutes_delta=2, note="x", key="k")
    assert correction.ended_at == record.ended_at
    assert usage_correct(record=record, billable_minutes_delta=2, note="x", key="k").pk == (
        correction.pk
    )
    assert UsageRecord.objects.filter(session=session, kind="correction").count() == 1


# --- T13 -------------------------------------------------------------------------------------

EDGES = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # US clocks go forward (02:00 EST)
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # EU clocks go forward
    datetime(2026, 3, 30, 0, tzinfo=UTC),  # a UTC midnight
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # EU clocks go back
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # US clocks go back (02:00 EDT)
    datetime(2026, 11, 2, 0, tzinfo=UTC),  # a UTC midnight
]
DAYS = sorted({(e + timedelta(days=d)).date() for e in EDGES for d in (-1, 0, 1)})
end_strategy = st.tuples(
    st.sampled_from(EDGES),
    st.one_of(
        st.sampled_from([0, -1, 1, -86_400_000_000, 86_400_000_000]),  # exact edges, ±1 µs
        st.integers(-2 * 86_400_000_000, 2 * 86_400_000_000),  # µs around the edge
    ),
)
session_strategy = st.tuples(end_strategy, st.integers(0, 3 * 3600 * 1000), st.booleans())


def _ended_session(org: Any, avatar: Any, end: datetime, length_ms: int) -> UsageRecord:
    session = AvatarSession.objects.create(
        organisation=org,
        avatar=avatar,
        avatar_slug=avatar.slug,
        provider="local",
        quality="medium",
        status="closed",
        close_reason="user",
        started_at=end - timedelta(milliseconds=length_ms),
        ended_at=end,
    )
    return usage_record_close(session)


def _window(client: Any, start: date, end: date) -> tuple[dict[str, Any], bytes]:
    params = {"from": start.isoformat(), "to": end.isoformat(), "group_by": "day"}
    body = client.get("/api/v1/usage/", params)
    as_csv = client.get("/api/v1/usage/", {**params, "format": "csv"})
    assert body.status_code == as_csv.status_code == 200
    return body.json(), as_csv.content


def _check_csv(body: dict[str, Any], content: bytes) -> None:
    parsed = list(csv.reader(io.StringIO(content.decode())))
    assert parsed[0] == ["day", *FIELDS]
    assert parsed[1:-1] == [[r["day"], *(str(r[f]) for f in FIELDS)] for r in body["rows"]]
    assert parsed[-1] == ["total", *(str(body["totals"][f]) for f in FIELDS)]


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sessions=st.lists(session_strategy, min_size=1, max_size=15),
    window=st.tuples(st.sampled_from(DAYS), st.sampled_from(DAYS), st.sampled_from(DAYS)),
)
def test_report_windows_add_up_across_dst_and_midnight(sessions, window):
    ours, theirs = (factories.OrganisationFactory(plan=Plan.ENTERPRISE) for _ in range(2))
    avatars = {org.pk: factories.AvatarFactory(organisation=org) for org in (ours, theirs)}
    ended: dict[Any, list[tuple[datetime, int]]] = {ours.pk: [], theirs.pk: []}
    for (edge, offset_us), length_ms, mine in sessions:
        org = ours if mine else theirs
        end = edge + timedelta(microseconds=offset_us)
        _ended_session(org, avatars[org.pk], end, length_ms)
        ended[org.pk].append((end, length_ms))
    first, split, last = sorted(window)
    low = datetime.combine(first, time.min, tzinfo=UTC)
    high = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)  # exclusive

    for org in (ours, theirs):
        client = bearer_client(api_key_create(org=org, name="b", scopes=["billing"]).secret)
        body, content = _window(client, first, last)
        _check_csv(body, content)
        assert body["totals"] == {f: sum(r[f] for r in body["rows"]) for f in FIELDS}
        inside = [(e, ms) for e, ms in ended[org.pk] if low <= e < high]
        assert body["totals"]["sessions"] == len(inside)  # only its own, each once
        assert body["totals"]["billable_minutes"] == sum(math.ceil(ms / 60000) for _, ms in inside)
        by_day = {r["day"]: r["sessions"] for r in body["rows"]}
        for day, count in by_day.items():
            assert count == sum(1 for e, _ in inside if e.date().isoformat() == day)
        if split < last:  # two adjacent windows sum to the one that spans them
            left, _ = _window(client, first, split)
            right, _ = _window(client, split + timedelta(days=1), last)
            for f in FIELDS:
                assert left["totals"][f] + right["totals"][f] == body["totals"][f]
