"""The public talk page's session start, its frame policy and the embed script."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from avatars.providers import local_tts
from sessions.models import AvatarSession
from sessions.player import read_player_token
from tests import factories

pytestmark = pytest.mark.skipif(not local_tts.is_available(), reason="requirements-tts.txt")
SHOP = "https://shop.example"


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    from django.core.cache import cache

    cache.clear()  # the throttles count per client address (127.0.0.1 for every test)


@pytest.fixture
def guide(tenant):
    return factories.AvatarFactory(
        organisation=tenant.org, slug="guide", published=True, allowed_origins=[SHOP]
    )


def _start(client: APIClient, origin: str | None = "http://testserver", slug: str = "guide"):
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    return client.post(f"/talk/acme/{slug}/sessions", {}, format="json", **headers)


@pytest.mark.django_db(transaction=True)
def test_a_page_starts_a_session_with_a_token_bound_to_its_origin(guide):
    client = APIClient()
    response = _start(client, SHOP)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["avatar"], body["provider"], body["status"]) == ("guide", "local", "active")
    grant = read_player_token(body["player"]["token"], body["id"])
    assert grant is not None
    assert grant.origin == SHOP
    session = AvatarSession.objects.get(pk=body["id"])
    assert session.embed_origin == SHOP
    assert session.end_user.startswith("visitor:")


@pytest.mark.django_db(transaction=True)
def test_the_same_visitor_rejoins_instead_of_starting_a_second_session(tenant, guide):
    client = APIClient()
    first = _start(client).json()
    again = _start(client)  # a reload: the visitor cookie comes back
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert AvatarSession.objects.count() == 1
    factories.AvatarFactory(organisation=tenant.org, slug="other", published=True)
    other = _start(client, slug="other")
    assert other.status_code == 429
    assert other.json()["error"]["code"] == "concurrency_limit"
    assert _start(APIClient()).status_code == 201  # another visitor


@pytest.mark.django_db
@pytest.mark.parametrize("origin", ["https://evil.example", None, "null", "http://testserver.evil"])
def test_a_foreign_or_missing_origin_is_403_and_starts_nothing(guide, origin):
    response = _start(APIClient(), origin)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert not AvatarSession.objects.exists()


@pytest.mark.django_db
def test_an_unpublished_or_unknown_avatar_is_404(tenant):
    factories.AvatarFactory(organisation=tenant.org, slug="draft", published=False)
    for slug in ("draft", "nobody"):
        assert _start(APIClient(), slug=slug).status_code == 404
        assert APIClient().get(f"/talk/acme/{slug}/").status_code == 404
        assert APIClient().get(f"/talk/acme/{slug}/embed.js").status_code == 404
    assert not AvatarSession.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_starts_are_rate_limited_per_client_address(guide, settings):
    from django.core.cache import cache

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "talk_client": "2/minute"},
    }
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        codes = [_start(APIClient()).status_code for _ in range(3)]
        assert codes[:2] == [201, 201]
        refused = _start(APIClient())
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused["Retry-After"]) > 0
    finally:
        SimpleRateThrottle.THROTTLE_RATES = rates
        cache.clear()


@pytest.mark.django_db
def test_only_allowed_origins_may_frame_the_page(guide):
    response = APIClient().get("/talk/acme/guide/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {SHOP}" in policy
    assert "script-src 'self'" in policy  # the site's policy, with only framing relaxed
    assert "X-Frame-Options" not in response
    script = APIClient().get("/talk/acme/guide/embed.js")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("text/javascript")
    source = script.content.decode().encode().decode("unicode_escape")  # escapejs
    assert "http://testserver/talk/acme/guide/?embed=1" in source


@pytest.mark.django_db(transaction=True)
def test_an_embedded_start_records_the_allowed_parent_page_only(guide):
    response = APIClient().post(
        "/talk/acme/guide/sessions",
        {"embed_origin": SHOP},
        format="json",
        HTTP_ORIGIN="http://testserver",  # the frame is the site's own page
    )
    assert response.status_code == 201
    assert AvatarSession.objects.get(pk=response.json()["id"]).embed_origin == SHOP
    assert response.json()["last_seq"] >= 2  # starting, then active
    forged = APIClient().post(
        "/talk/acme/guide/sessions",
        {"embed_origin": "https://evil.example"},
        format="json",
        HTTP_ORIGIN="http://testserver",
    )
    session = AvatarSession.objects.get(pk=forged.json()["id"])
    assert session.embed_origin == "http://testserver"


@pytest.mark.django_db(transaction=True)
def test_the_visitor_cookie_survives_a_third_party_frame_over_https(guide, settings):
    settings.SECURE_SSL_REDIRECT = False
    response = APIClient().post(
        "/talk/acme/guide/sessions",
        {},
        format="json",
        HTTP_ORIGIN="https://testserver",
        secure=True,
    )
    assert response.status_code == 201
    cookie = response.cookies["systimz_visitor"]
    assert (cookie["samesite"], bool(cookie["secure"]), bool(cookie["httponly"])) == (
        "None",
        True,
        True,
    )
