from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatars.models import VoicePreset

URL = "/api/v1/voice-presets/"


def test_create_list_update_delete(tenant):
    created = tenant.client.post(
        URL,
        {"name": "Warm", "voice_id": "v-1", "rate": 1.2, "emotion": "friendly", "language": "en"},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body | {"id": None, "created_at": None} == {
        "id": None,
        "created_at": None,
        "name": "Warm",
        "voice_id": "v-1",
        "rate": 1.2,
        "emotion": "friendly",
        "language": "en",
    }
    assert VoicePreset.objects.get(pk=body["id"]).organisation == tenant.org
    assert [p["name"] for p in tenant.client.get(URL).json()["results"]] == ["Warm"]

    patched = tenant.client.patch(
        f"{URL}{body['id']}/", {"emotion": None, "rate": 0.5}, format="json"
    )
    assert patched.status_code == 200
    assert (patched.json()["emotion"], patched.json()["rate"]) == (None, 0.5)

    assert tenant.client.delete(f"{URL}{body['id']}/").status_code == 204
    assert not VoicePreset.objects.filter(pk=body["id"]).exists()


def test_rate_defaults_to_one(tenant):
    body = tenant.client.post(URL, {"name": "A", "voice_id": "v"}, format="json").json()
    assert body["rate"] == 1.0
    assert body["emotion"] is None


@pytest.mark.parametrize("rate", [0.49, 1.51, -1, "fast"])
def test_rate_outside_range_is_a_field_error(tenant, rate):
    response = tenant.client.post(URL, {"name": "A", "voice_id": "v", "rate": rate}, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["rate"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rate=st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10))
def test_rate_is_accepted_exactly_within_bounds(tenant, rate):
    # Examples share one transaction, so each preset gets a fresh name.
    name = f"voice-{uuid.uuid4()}"
    response = tenant.client.post(URL, {"name": name, "voice_id": "v", "rate": rate}, format="json")
    assert response.status_code == (201 if 0.5 <= rate <= 1.5 else 400)


def test_unknown_emotion_is_a_field_error(tenant):
    response = tenant.client.post(
        URL, {"name": "A", "voice_id": "v", "emotion": "angry"}, format="json"
    )
    assert response.status_code == 400
    assert "emotion" in response.json()["error"]["fields"]


def test_name_is_unique_per_organisation_only(tenant, outsider):
    outsider_name = VoicePreset.objects.for_org(outsider.org).first().name
    assert (
        tenant.client.post(URL, {"name": outsider_name, "voice_id": "v"}, format="json").status_code
        == 201
    )
    again = tenant.client.post(URL, {"name": outsider_name, "voice_id": "v"}, format="json")
    assert again.status_code == 400
    assert list(again.json()["error"]["fields"]) == ["name"]


def test_bad_language_tag_is_a_field_error(tenant):
    response = tenant.client.post(
        URL, {"name": "A", "voice_id": "v", "language": "English!"}, format="json"
    )
    assert response.status_code == 400
    assert "language" in response.json()["error"]["fields"]
