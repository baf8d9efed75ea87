"""One error vocabulary: whatever fails, the body is the contract's envelope."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from systimz.api.viewsets import OrgScopedModelViewSet


def _error(response):
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "fields"}
    assert body["error"]["message"]
    return body["error"]


def test_unknown_api_path_is_404_envelope(tenant):
    response = tenant.client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert _error(response) == {"code": "not_found", "message": "Not found."}


def test_malformed_id_is_404_like_a_missing_one(tenant):
    assert _error(tenant.client.get("/api/v1/avatars/not-a-uuid/"))["code"] == "not_found"


def test_method_not_allowed_is_405_envelope(tenant):
    response = tenant.client.put("/api/v1/organisation/", {}, format="json")
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"


def test_malformed_json_is_400_invalid(tenant):
    response = tenant.client.generic(
        "POST", "/api/v1/voice-presets/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "invalid"
    assert "JSON" in error["message"]


def test_unsupported_media_type_is_415_envelope(tenant):
    response = tenant.client.generic(
        "POST", "/api/v1/voice-presets/", "<x/>", content_type="application/xml"
    )
    assert response.status_code == 415
    assert _error(response)["code"] == "unsupported_media_type"


def test_not_acceptable_is_406_envelope(tenant):
    response = tenant.client.get("/api/v1/avatars/", HTTP_ACCEPT="application/xml")
    assert response.status_code == 406
    assert _error(response)["code"] == "not_acceptable"


def test_validation_errors_carry_fields(tenant):
    response = tenant.client.post("/api/v1/voice-presets/", {"rate": 3}, format="json")
    error = _error(response)
    assert response.status_code == 400
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"name", "voice_id", "rate"}


def test_throttling_is_429_with_retry_after(tenant, settings):
    from django.core.cache import cache
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    cache.clear()
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "api_key": "2/minute"}
    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = rates
    try:
        statuses = [tenant.client.get("/api/v1/avatars/").status_code for _ in range(3)]
        response = tenant.client.get("/api/v1/avatars/")
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original
        cache.clear()
    assert statuses == [200, 200, 429]
    assert response.status_code == 429
    assert _error(response)["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1


def test_server_errors_under_api_are_500_envelope(db):
    client = APIClient(raise_request_exception=False)
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="tests.api.boom_urls"):
        response = client.get("/api/v1/boom/")
    assert response.status_code == 500
    assert _error(response) == {
        "code": "server_error",
        "message": "Something went wrong on our side.",
    }


@pytest.mark.parametrize("name", ["get_queryset", "get_object", "queryset"])
def test_org_scoped_viewsets_cannot_override_tenancy(name):
    with pytest.raises(TypeError, match="tenancy lives in OrgScopedViewSet"):
        type("Leaky", (OrgScopedModelViewSet,), {name: lambda self: None})
