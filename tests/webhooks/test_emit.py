"""webhook_emit: the outbox row is written in the caller's transaction, for subscribers only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import transaction

from systimz.webhooks.models import WebhookDelivery
from systimz.webhooks.services import webhook_emit
from tests.webhooks.conftest import make_webhook


class Boom(Exception):
    pass


def test_one_delivery_per_subscribed_active_webhook_with_one_event_id(tenant, outsider):
    a = make_webhook(tenant.org, "https://a.example/in", ["session.ended"]).webhook
    b = make_webhook(tenant.org, "https://b.example/in").webhook
    make_webhook(tenant.org, "https://c.example/in", ["session.started"])  # not subscribed
    make_webhook(tenant.org, "https://d.example/in", active=False)  # inactive

    deliveries = webhook_emit(
        org=tenant.org, type_="session.ended", data={"session_id": "s1", "reason": "idle"}
    )

    assert {d.webhook_id for d in deliveries} == {a.pk, b.pk}
    assert len({d.event_id for d in deliveries}) == 1
    assert WebhookDelivery.objects.count() == 2  # the outsider's webhook got nothing
    delivery = WebhookDelivery.objects.get(webhook=a)
    body = delivery.body
    assert set(body) == {"id", "type", "created_at", "organisation", "data"}
    assert body["id"] == str(delivery.event_id)
    assert (body["type"], body["organisation"]) == ("session.ended", "acme")
    assert body["data"] == {"session_id": "s1", "reason": "idle"}
    assert body["created_at"].endswith("Z")
    created = datetime.fromisoformat(body["created_at"])
    assert created.utcoffset().total_seconds() == 0
    assert (delivery.status, delivery.attempts, delivery.organisation) == ("pending", 0, tenant.org)


def test_unsubscribed_types_and_inactive_webhooks_get_nothing(tenant):
    make_webhook(tenant.org, "https://a.example/in", ["session.started"])
    make_webhook(tenant.org, "https://b.example/in", active=False)
    assert webhook_emit(org=tenant.org, type_="usage.recorded", data={}) == []
    assert not WebhookDelivery.objects.exists()


def test_no_webhooks_is_no_work(tenant, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert webhook_emit(org=tenant.org, type_="limit.reached", data={}) == []


def test_data_is_stored_as_plain_json(tenant):
    make_webhook(tenant.org, "https://a.example/in")
    session_id = uuid.uuid4()
    data = {
        "session_id": session_id,
        "ended_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "minutes": Decimal("1.5"),
    }
    delivery = webhook_emit(org=tenant.org, type_="usage.recorded", data=data)[0]
    delivery.refresh_from_db()
    assert delivery.body["data"] == {
        "session_id": str(session_id),
        "ended_at": "2025-01-02T03:04:05Z",
        "minutes": "1.5",
    }


def test_an_unknown_type_is_a_programming_error(tenant):
    with pytest.raises(ValueError, match="unknown webhook event type"):
        webhook_emit(org=tenant.org, type_="session.paused", data={})


def test_delivery_is_enqueued_after_commit(tenant, published, django_capture_on_commit_callbacks):
    make_webhook(tenant.org, "https://a.example/in")
    make_webhook(tenant.org, "https://b.example/in")
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        deliveries = webhook_emit(org=tenant.org, type_="session.started", data={})
        assert published.of("webhooks.deliver") == []  # nothing before commit
    assert len(callbacks) == 1
    assert sorted(published.of("webhooks.deliver")) == sorted((str(d.pk),) for d in deliveries)


def test_a_rolled_back_event_leaves_no_delivery_and_no_task(
    tenant, published, django_capture_on_commit_callbacks
):
    make_webhook(tenant.org, "https://a.example/in")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                webhook_emit(org=tenant.org, type_="session.ended", data={})
                raise Boom
        except Boom:
            pass
    assert callbacks == []
    assert not WebhookDelivery.objects.exists()
    assert published.of("webhooks.deliver") == []


def test_a_broker_failure_does_not_break_the_callers_transaction(
    tenant, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    from systimz.webhooks import tasks

    class BrokerDown:
        def apply_async(self, *args, **kwargs):
            raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "webhook_deliver", BrokerDown())
    make_webhook(tenant.org, "https://a.example/in")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        webhook_emit(org=tenant.org, type_="session.ended", data={})
    assert WebhookDelivery.objects.get().status == "pending"  # the sweep will send it
    assert "webhook.enqueue_failed" in caplog.text
