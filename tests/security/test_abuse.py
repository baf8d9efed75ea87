"""T23 — abuse and rate limits under concurrency.

Pass criterion (reliability.md §4.2): 10x the per-organisation start-rate limit in about one
second from 20 clients: accepted == limit exactly, the rest 429 (the contract's envelope, code
``rate_limited``, with ``Retry-After``), the HeyGen emulator receives 0 calls for the rejected
requests, and every rejection is logged as a warning naming the scope and the organisation,
with no secret in it.

Two limits, each driven by 20 threads with their own client (and, for the talk page, their own
client address): the talk page's per-organisation start rate (``talk_organisation``) and the
per-key API rate (``api_key``) on ``POST /api/v1/sessions/``. ``SYSTIMZ_ABUSE_LIMIT`` sets the
limit (default 5, so 50 requests per scenario). The throttles' clock is pinned mid-window so the
burst cannot straddle a window boundary (a fixed window admits up to 2x across one; that is the
documented trade-off, not what this test is about). Needs PostgreSQL (concurrent writers) and
Redis (the shared counter), the production pair.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from systimz.api import throttling
from systimz.orgs import services
from systimz.orgs.models import Plan, Scope
from tests import factories
from tests.emulators.heygen import HeyGenEmulator

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = int(os.environ.get("SYSTIMZ_ABUSE_LIMIT", "5"))
REQUESTS = LIMIT * 10
CLIENTS = 20
HEYGEN_KEY = "hg_live_SECRET_" + uuid.uuid4().hex
SHOP = "https://shop.example"
PINNED_NOW = 1_800_000_030.0  # 30 s into a one-minute window


@pytest.fixture(autouse=True)
def _production_pair(settings) -> None:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip("concurrent starts need PostgreSQL and the shared Redis counter")


@pytest.fixture
def heygen(settings) -> Iterator[HeyGenEmulator]:
    emulator = HeyGenEmulator(keys={HEYGEN_KEY: "enterprise"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    yield emulator
    emulator.stop()


@pytest.fixture
def org_and_avatar(heygen) -> tuple[Any, Any, str]:
    org = factories.OrganisationFactory(slug=f"abuse-{uuid.uuid4().hex[:8]}", plan=Plan.ENTERPRISE)
    factories.ProviderCredentialFactory(
        organisation=org, provider="heygen", api_key=HEYGEN_KEY, plan=Plan.ENTERPRISE
    )
    avatar = factories.AvatarFactory(
        organisation=org,
        slug="anna",
        provider="heygen",
        provider_avatar_id="Anna_public_3_20240108",
        published=True,
        allowed_origins=[SHOP],
    )
    key = services.api_key_create(org=org, name="abuse", scopes=Scope.values).secret
    return org, avatar, key


@pytest.fixture
def rates(monkeypatch) -> Callable[[dict[str, str | None]], None]:
    """Set throttle rates (the classes read them at construction) and pin their clock."""
    from rest_framework.throttling import SimpleRateThrottle

    def apply(changes: dict[str, str | None]) -> None:
        monkeypatch.setattr(
            SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, **changes}
        )

    monkeypatch.setattr(throttling.FailOpenRateThrottle, "timer", lambda self: PINNED_NOW)
    return apply


def _burst(send: Callable[[int], Any]) -> list[Any]:
    """REQUESTS calls of ``send(i)`` from CLIENTS threads, released together."""
    results: list[Any] = [None] * REQUESTS
    gate = threading.Barrier(CLIENTS)

    def worker(offset: int) -> None:
        try:
            gate.wait(timeout=30)
            for i in range(offset, REQUESTS, CLIENTS):
                results[i] = send(i)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in results), "a client did not finish"
    return results


def _assert_outcome(responses: list[Any], heygen: HeyGenEmulator, caplog: Any, scope: str, org):
    accepted = [r for r in responses if r.status_code in (200, 201)]
    refused = [r for r in responses if r.status_code == 429]
    codes = sorted((r.status_code, r.json().get("error", {}).get("code", "")) for r in responses)
    assert len(accepted) == LIMIT, codes
    assert len(refused) == REQUESTS - LIMIT
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response["Retry-After"]) >= 1
    # The provider saw exactly the accepted starts: none for a refused request.
    assert len(heygen.received("streaming.new")) == len(accepted)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and f"scope={scope}" in r.getMessage()
    ]
    assert len(warnings) == len(refused)
    assert all(f"org={org.slug}" in w for w in warnings)
    for record in caplog.records:
        message = record.getMessage()
        assert HEYGEN_KEY not in message
        assert "stz_" not in message or "[redacted]" in message


def test_talk_page_starts_from_20_clients_admit_exactly_the_org_limit(
    org_and_avatar, heygen, rates, caplog
):
    org, avatar, _ = org_and_avatar
    rates({"talk_organisation": f"{LIMIT}/minute", "talk_client": "100000/minute"})
    caplog.set_level(logging.INFO)
    url = f"/talk/{org.slug}/{avatar.slug}/sessions"

    def send(i: int) -> Any:
        client = APIClient(REMOTE_ADDR=f"10.23.{i // 250}.{i % 250 + 1}")
        return client.post(url, {}, format="json", HTTP_ORIGIN=SHOP)

    _assert_outcome(_burst(send), heygen, caplog, "talk_organisation", org)


def test_api_key_rate_from_20_clients_admits_exactly_the_limit(
    org_and_avatar, heygen, rates, caplog
):
    org, _, key = org_and_avatar
    rates({"api_key": f"{LIMIT}/minute"})
    caplog.set_level(logging.INFO)

    def send(i: int) -> Any:
        client = APIClient(REMOTE_ADDR=f"10.24.{i // 250}.{i % 250 + 1}")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client.post("/api/v1/sessions/", {"avatar": "anna"}, format="json")

    _assert_outcome(_burst(send), heygen, caplog, "api_key", org)
