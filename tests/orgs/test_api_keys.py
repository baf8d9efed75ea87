from __future__ import annotations

import pytest

from systimz.orgs.models import ApiKey
from tests.conftest import bearer_client

URL = "/api/v1/api-keys/"


def test_create_shows_secret_once_and_stores_only_its_hash(tenant):
    response = tenant.client.post(URL, {"name": "ci", "scopes": ["sessions"]}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "scopes",
        "prefix",
        "key",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert body["key"].startswith(f"stz_{body['prefix']}_")
    stored = ApiKey.objects.get(pk=body["id"])
    assert body["key"] not in (stored.key_hash, stored.prefix)
    assert stored.scopes == ["sessions"]
    listed = tenant.client.get(URL).json()["results"]
    assert all("key" not in item for item in listed)
    assert body["prefix"] in [item["prefix"] for item in listed]
    assert tenant.client.get(f"{URL}{body['id']}/").json().get("key") is None


def test_new_key_authenticates_and_records_last_use(tenant):
    secret = tenant.client.post(URL, {"name": "x", "scopes": ["manage"]}, format="json").json()[
        "key"
    ]

    assert bearer_client(secret).get(URL).status_code == 200
    assert ApiKey.objects.get(prefix=secret[4:12]).last_used_at is not None


def test_scopes_are_validated(tenant):
    for scopes, field in [([], "scopes"), (["admin"], "scopes"), ("manage", "scopes")]:
        response = tenant.client.post(URL, {"name": "x", "scopes": scopes}, format="json")
        assert response.status_code == 400, scopes
        assert response.json()["error"]["code"] == "invalid"
        assert field in response.json()["error"]["fields"]
    missing = tenant.client.post(URL, {"scopes": ["manage"]}, format="json")
    assert missing.json()["error"]["fields"] == {"name": ["This field is required."]}


def test_scopes_are_stored_once_in_canonical_order(tenant):
    body = tenant.client.post(
        URL, {"name": "x", "scopes": ["billing", "manage", "billing"]}, format="json"
    ).json()
    assert body["scopes"] == ["manage", "billing"]


def test_revoke_is_idempotent_and_the_key_stops_working(tenant):
    created = tenant.client.post(URL, {"name": "x", "scopes": ["manage"]}, format="json").json()
    victim = bearer_client(created["key"])
    assert victim.get(URL).status_code == 200

    assert tenant.client.delete(f"{URL}{created['id']}/").status_code == 204
    first = ApiKey.objects.get(pk=created["id"]).revoked_at
    assert tenant.client.delete(f"{URL}{created['id']}/").status_code == 204
    assert ApiKey.objects.get(pk=created["id"]).revoked_at == first

    response = victim.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    listed = {item["id"]: item for item in tenant.client.get(URL).json()["results"]}
    assert listed[created["id"]]["revoked_at"] is not None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer stz_00000000_nope",
        "Bearer ",
        "Bearer a b",
        "Bearer stz_",
        "Bearer ünïcode",
    ],
)
def test_bad_keys_are_401_in_the_envelope(db, header):
    client = bearer_client(None)
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_right_prefix_with_a_wrong_secret_is_refused(tenant):
    prefix = tenant.key[4:12]
    forged = f"stz_{prefix}_" + "A" * 43
    assert bearer_client(forged).get(URL).status_code == 401


def test_no_key_is_401(anonymous, db):
    response = anonymous.get(URL)
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "unauthenticated",
            "message": "Authentication credentials were not provided.",
        }
    }
