"""The webhooks/ API: the secret once, validation, deliveries, tenancy, encryption at rest."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from systimz.orgs import crypto
from systimz.webhooks import services
from systimz.webhooks.models import Webhook, WebhookDelivery
from tests.webhooks.conftest import ALL_EVENTS, make_webhook

URL = "https://hooks.example.com/systimz"


def _create(client, **overrides):
    body = {"url": URL, "events": ["session.ended", "session.started"], **overrides}
    return client.post("/api/v1/webhooks/", body, format="json")


def _raw_secret_column(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encrypted_api_key FROM webhooks_webhook WHERE id = %s",
            [pk.hex] if connection.vendor == "sqlite" else [str(pk)],
        )
        return cursor.fetchone()[0]


def test_create_shows_the_secret_once(tenant, caplog):
    caplog.set_level(logging.DEBUG)
    response = _create(tenant.client, description="CRM")
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body.pop("secret")
    assert secret.startswith("whsec_")
    assert len(secret) == len("whsec_") + 43  # 32 random bytes, url-safe base64
    assert body["events"] == ["session.started", "session.ended"]  # canonical order
    assert (body["url"], body["active"], body["description"]) == (URL, True, "CRM")
    assert set(body) == {"id", "url", "events", "active", "description", "created_at", "updated_at"}

    webhook = Webhook.objects.get(pk=body["id"])
    assert webhook.organisation == tenant.org
    assert webhook.reveal_secret() == secret
    raw = _raw_secret_column(webhook.pk)
    assert secret not in raw
    assert secret[6:] not in raw

    later = [
        tenant.client.get("/api/v1/webhooks/"),
        tenant.client.get(f"/api/v1/webhooks/{webhook.pk}/"),
        tenant.client.patch(f"/api/v1/webhooks/{webhook.pk}/", {"active": False}, format="json"),
        tenant.client.put(
            f"/api/v1/webhooks/{webhook.pk}/", {"url": URL, "events": ALL_EVENTS}, format="json"
        ),
        tenant.client.get(f"/api/v1/webhooks/{webhook.pk}/deliveries/"),
    ]
    for response in later:
        assert response.status_code == 200, response.content
        assert secret not in response.content.decode()
        assert "secret" not in response.json()
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"events": []}, "events"),
        ({"events": ["session.paused"]}, "events"),
        ({"events": "session.ended"}, "events"),
        ({"url": "http://hooks.example.com/in"}, "url"),
        ({"url": "https://user:pass@hooks.example.com/in"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://hooks.example.com/" + "a" * 500}, "url"),
    ],
)
def test_invalid_webhooks_are_400_with_the_field(tenant, overrides, field):
    response = _create(tenant.client, **overrides)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert not Webhook.objects.exists()


def test_plain_http_only_to_allowed_hosts(tenant, settings):
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = []
    assert _create(tenant.client, url="http://127.0.0.1:9000/in").status_code == 400
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    assert _create(tenant.client, url="http://127.0.0.1:9000/in").status_code == 201


def test_duplicate_events_are_kept_once(tenant):
    response = _create(tenant.client, events=["usage.recorded", "limit.reached", "usage.recorded"])
    assert response.json()["events"] == ["usage.recorded", "limit.reached"]


def test_update_is_validated_and_keeps_the_secret(tenant):
    issued = make_webhook(tenant.org, URL)
    path = f"/api/v1/webhooks/{issued.webhook.pk}/"
    bad = tenant.client.patch(path, {"url": "http://hooks.example.com/"}, format="json")
    assert bad.status_code == 400
    assert "url" in bad.json()["error"]["fields"]
    assert tenant.client.patch(path, {"events": []}, format="json").status_code == 400
    ok = tenant.client.patch(
        path, {"url": "https://other.example/in", "events": ["limit.reached"]}, format="json"
    )
    assert ok.status_code == 200
    assert (ok.json()["url"], ok.json()["events"]) == (
        "https://other.example/in",
        ["limit.reached"],
    )
    webhook = Webhook.objects.get(pk=issued.webhook.pk)
    assert webhook.reveal_secret() == issued.secret


def test_delete_removes_the_webhook_and_its_deliveries(tenant):
    issued = make_webhook(tenant.org, URL)
    services.webhook_emit(org=tenant.org, type_="session.ended", data={})
    assert WebhookDelivery.objects.count() == 1
    response = tenant.client.delete(f"/api/v1/webhooks/{issued.webhook.pk}/")
    assert response.status_code == 204
    assert not Webhook.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_deliveries_lists_recent_deliveries(tenant):
    issued = make_webhook(tenant.org, URL)
    first = services.webhook_emit(org=tenant.org, type_="session.started", data={})[0]
    second = services.webhook_emit(org=tenant.org, type_="session.ended", data={})[0]
    WebhookDelivery.objects.filter(pk=first.pk).update(status="delivered", attempts=1)
    path = f"/api/v1/webhooks/{issued.webhook.pk}/deliveries/"

    body = tenant.client.get(path).json()
    assert body["count"] == 2
    newest = body["results"][0]
    assert newest["event_id"] == str(second.event_id)
    assert {
        k: newest[k] for k in ("type", "status", "attempts", "last_status_code", "delivered_at")
    } == {
        "type": "session.ended",
        "status": "pending",
        "attempts": 0,
        "last_status_code": None,
        "delivered_at": None,
    }
    assert newest["next_attempt_at"] is not None

    only = tenant.client.get(path, {"status": "delivered"}).json()
    assert [d["event_id"] for d in only["results"]] == [str(first.event_id)]
    bad = tenant.client.get(path, {"status": "lost"})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"status": ["One of pending, delivered, failed."]}


def test_rotate_secret_shows_the_new_secret_once(tenant):
    issued = make_webhook(tenant.org, URL)
    response = tenant.client.post(f"/api/v1/webhooks/{issued.webhook.pk}/rotate-secret")
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new.startswith("whsec_")
    assert new != issued.secret
    assert Webhook.objects.get(pk=issued.webhook.pk).reveal_secret() == new
    listed = tenant.client.get(f"/api/v1/webhooks/{issued.webhook.pk}/").content.decode()
    assert new not in listed


def test_another_organisations_webhook_is_404(tenant, outsider):
    theirs = Webhook.objects.for_org(outsider.org).get()
    before = (theirs.url, theirs.events, theirs.active, theirs.encrypted_api_key)
    base = f"/api/v1/webhooks/{theirs.pk}/"
    calls = [
        tenant.client.get(base),
        tenant.client.patch(base, {"active": False}, format="json"),
        tenant.client.put(base, {"url": URL, "events": ALL_EVENTS}, format="json"),
        tenant.client.delete(base),
        tenant.client.get(base + "deliveries/"),
        tenant.client.post(base + "rotate-secret"),
    ]
    for response in calls:
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    theirs.refresh_from_db()
    assert (theirs.url, theirs.events, theirs.active, theirs.encrypted_api_key) == before
    listed = tenant.client.get("/api/v1/webhooks/").json()
    assert listed["count"] == 0


def test_webhooks_need_the_manage_scope(tenant):
    client = tenant.client_with("sessions", "billing")
    response = client.get("/api/v1/webhooks/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_an_organisation_has_at_most_twenty_webhooks(tenant):
    for n in range(services.MAX_WEBHOOKS_PER_ORGANISATION):
        make_webhook(tenant.org, f"{URL}/{n}")
    response = _create(tenant.client)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_encryption_key_rotation_reencrypts_webhook_secrets(tenant, outsider, settings):
    issued = make_webhook(tenant.org, URL)
    before = _raw_secret_column(issued.webhook.pk)
    old_key = settings.ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_encryption_keys")

    settings.ENCRYPTION_KEYS = [new_key]  # the old key is gone: every webhook still decrypts
    assert set(Webhook.objects.values_list("key_id", flat=True)) == {crypto.key_id(new_key)}
    assert _raw_secret_column(issued.webhook.pk) != before
    assert Webhook.objects.get(pk=issued.webhook.pk).reveal_secret() == issued.secret
    assert Webhook.objects.for_org(outsider.org).get().reveal_secret().startswith("whsec_")


def test_a_secret_copied_into_another_webhook_does_not_decrypt(tenant, outsider):
    mine = make_webhook(tenant.org, URL).webhook
    theirs = Webhook.objects.for_org(outsider.org).get()
    mine.encrypted_api_key = theirs.encrypted_api_key
    mine.save()
    with pytest.raises(crypto.DecryptionError):
        Webhook.objects.get(pk=mine.pk).reveal_secret()
