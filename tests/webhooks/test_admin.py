"""Webhooks in the Django admin: the secret shown once, deliveries with their attempts, and
"retry now"; a member sees only their organisation's."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from systimz.orgs import services as org_services
from systimz.orgs.models import User
from systimz.webhooks import services
from systimz.webhooks.models import Webhook, WebhookDelivery
from systimz.webhooks.tasks import webhook_deliver
from tests.webhooks.conftest import make_webhook

WEBHOOK_MODELS = ("webhook", "webhookdelivery", "webhookattempt")


@pytest.fixture
def member(tenant) -> Client:
    user, _ = org_services.member_create(
        org=tenant.org, username="mia", password="a-long-pass-phrase-1"
    )
    # Until ORG_ADMIN_MODELS lists the webhook models, grant them to this member directly.
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="webhooks", content_type__model__in=WEBHOOK_MODELS
        )
    )
    client = Client()
    assert client.login(username="mia", password="a-long-pass-phrase-1")
    return client


@pytest.fixture
def operator(db) -> Client:
    User.objects.create_superuser("root", "root@example.com", "another-long-pass-2")
    client = Client()
    assert client.login(username="root", password="another-long-pass-2")
    return client


def test_a_webhook_added_in_the_admin_shows_its_secret_once(tenant, member):
    response = member.post(
        reverse("admin:webhooks_webhook_add"),
        {"url": "https://hooks.example.com/in", "events": ["session.ended"], "active": "on"},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    secret = next(w for m in messages for w in m.split() if w.startswith("whsec_"))
    webhook = Webhook.objects.get()
    assert (webhook.organisation, webhook.events) == (tenant.org, ["session.ended"])
    assert webhook.reveal_secret() == secret
    change = reverse("admin:webhooks_webhook_change", args=[webhook.pk])
    page = member.get(change).content.decode()
    assert secret not in page
    assert webhook.encrypted_api_key not in page
    assert f"whsec_…{secret[-4:]}" in page


def test_the_admin_refuses_plain_http_and_no_events(tenant, member, settings):
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = []
    response = member.post(
        reverse("admin:webhooks_webhook_add"), {"url": "http://hooks.example.com/in"}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"url", "events"}
    assert not Webhook.objects.exists()


def test_deliveries_show_their_attempts_and_retry_now(tenant, outsider, member, receiver):
    make_webhook(tenant.org, f"{receiver.url}/in")
    receiver.fail(1)
    [delivery] = services.webhook_emit(org=tenant.org, type_="session.ended", data={})
    webhook_deliver(str(delivery.pk))
    [foreign] = services.webhook_emit(org=outsider.org, type_="session.ended", data={})

    changelist = member.get(reverse("admin:webhooks_webhookdelivery_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == 1
    page = member.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))
    text = page.content.decode()
    assert "HTTP 500" in text  # the attempt inline, and the last error
    assert str(delivery.event_id) in text
    foreign_page = reverse("admin:webhooks_webhookdelivery_change", args=[foreign.pk])
    assert member.get(foreign_page).status_code == 302  # "does not exist" → admin index

    WebhookDelivery.objects.filter(pk__in=[delivery.pk, foreign.pk]).update(status="failed")
    response = member.post(
        reverse("admin:webhooks_webhookdelivery_changelist"),
        {"action": "retry_now", "_selected_action": [str(delivery.pk), str(foreign.pk)]},
        follow=True,
    )
    assert "Queued 1 deliveries" in " ".join(str(m) for m in response.context["messages"])
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert WebhookDelivery.objects.get(pk=foreign.pk).status == "failed"  # not the member's
    assert webhook_deliver(str(delivery.pk)) == "delivered"


def test_search_by_event_id(tenant, operator):
    make_webhook(tenant.org, "https://hooks.example.com/in")
    [delivery] = services.webhook_emit(org=tenant.org, type_="session.ended", data={})
    services.webhook_emit(org=tenant.org, type_="session.started", data={})
    url = reverse("admin:webhooks_webhookdelivery_changelist")
    found = operator.get(url, {"q": str(delivery.event_id)})
    assert found.context["cl"].result_count == 1
    assert operator.get(url, {"q": "hooks.example"}).context["cl"].result_count == 2
