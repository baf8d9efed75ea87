"""A session's life writes its webhook events into the outbox: started, then ended (with the
reason and usage) and usage.recorded, once each."""

from __future__ import annotations

import json

from systimz.webhooks.delivery import verify_signature
from systimz.webhooks.models import WebhookDelivery
from systimz.webhooks.tasks import webhook_deliver
from tests import factories
from tests.webhooks.conftest import make_webhook


def test_a_session_emits_started_ended_and_usage(tenant, receiver):
    hook = make_webhook(tenant.org, f"{receiver.url}/in")
    factories.AvatarFactory(organisation=tenant.org, slug="guide")
    started = tenant.client.post("/api/v1/sessions/", {"avatar": "guide"}, format="json")
    assert started.status_code == 201, started.content
    session_id = started.json()["id"]
    for _ in range(2):  # stopping twice records the end once
        assert tenant.client.post(f"/api/v1/sessions/{session_id}/stop").status_code == 200

    deliveries = list(WebhookDelivery.objects.order_by("created_at", "type"))
    assert [d.type for d in deliveries] == ["session.started", "session.ended", "usage.recorded"]
    ended = deliveries[1].body["data"]
    assert ended["session_id"] == session_id
    assert ended["reason"] == "user"
    assert set(ended["usage"]) >= {"session_seconds", "billable_minutes"}
    assert deliveries[2].body["data"]["session_id"] == session_id

    for delivery in deliveries:
        assert webhook_deliver(str(delivery.pk)) == "delivered"
    requests = receiver.wait_for(3)
    assert [json.loads(r.body)["type"] for r in requests] == [d.type for d in deliveries]
    assert all(verify_signature(hook.secret, r.signature, r.body) for r in requests)
