"""Delivery attempts against a receiver on loopback, calling the tasks directly: the signed
request, retries with backoff after a 5xx with the same id, never delivering twice."""

from __future__ import annotations

import json
import logging
import socket
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from systimz.webhooks import services
from systimz.webhooks.delivery import verify_signature
from systimz.webhooks.models import WebhookAttempt, WebhookDelivery
from systimz.webhooks.tasks import webhook_deliver, webhooks_retry_due
from tests.webhooks.conftest import make_webhook


@pytest.fixture
def hook(tenant, receiver):
    return make_webhook(tenant.org, f"{receiver.url}/hooks/systimz")


def _emit(org, type_="session.ended", data=None) -> WebhookDelivery:
    deliveries = services.webhook_emit(
        org=org, type_=type_, data=data or {"session_id": "s-1", "reason": "idle"}
    )
    assert len(deliveries) == 1
    return deliveries[0]


def _due_now(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_delivery_is_signed_and_verifies(tenant, hook, receiver):
    delivery = _emit(tenant.org)

    assert webhook_deliver(str(delivery.pk)) == "delivered"

    [request] = receiver.wait_for(1)
    assert request.path == "/hooks/systimz"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Systimz-Webhooks/1"
    assert request.headers["Systimz-Event-Id"] == str(delivery.event_id)
    body = json.loads(request.body)
    assert body == delivery.body
    assert body["id"] == str(delivery.event_id)
    assert (body["type"], body["organisation"]) == ("session.ended", tenant.org.slug)
    assert body["data"] == {"session_id": "s-1", "reason": "idle"}
    assert request.body == json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    assert verify_signature(hook.secret, request.signature, request.body)
    mutated = request.body.replace(b'"idle"', b'"user"')
    assert mutated != request.body
    assert not verify_signature(hook.secret, request.signature, mutated)
    assert not verify_signature(hook.secret, request.signature, request.body + b"\n")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None
    assert delivery.next_attempt_at is None
    [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")


def test_a_5xx_is_retried_with_backoff_the_same_id_and_a_fresh_signature(
    tenant, hook, receiver, published
):
    receiver.fail(1, status=503)
    delivery = _emit(tenant.org)
    start = timezone.now()

    assert webhook_deliver(str(delivery.pk)) == "pending"

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    assert delivery.last_error == "HTTP 503"
    wait = (delivery.next_attempt_at - start).total_seconds()
    assert 8 <= wait <= 12.5  # 10 s, jittered by ±20 %
    # A retry this soon is enqueued at once with a countdown; the sweep is the backstop.
    [(task, args, eta)] = published.messages
    assert (task, args) == ("webhooks.deliver", (str(delivery.pk),))
    assert eta is not None

    assert webhook_deliver(str(delivery.pk)) == "not_due"  # an early message sends nothing
    assert len(receiver.requests) == 1

    with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1)):
        assert webhook_deliver(str(delivery.pk)) == "delivered"

    first, second = receiver.wait_for(2)
    assert first.body == second.body  # the same event, the same id
    assert json.loads(second.body)["id"] == str(delivery.event_id)
    assert first.headers["Systimz-Event-Id"] == second.headers["Systimz-Event-Id"]
    assert first.signature != second.signature  # signed again, at the retry's time
    t1, t2 = (int(r.signature.split(",")[0][2:]) for r in (first, second))
    assert t2 - t1 >= 9
    assert verify_signature(hook.secret, first.signature, first.body, now=t1)
    assert verify_signature(hook.secret, second.signature, second.body, now=t2)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    codes = list(
        WebhookAttempt.objects.filter(delivery=delivery).values_list("number", "status_code")
    )
    assert codes == [(1, 503), (2, 200)]


def test_a_delivered_event_is_never_delivered_again(tenant, hook, receiver, published):
    delivery = _emit(tenant.org)
    assert webhook_deliver(str(delivery.pk)) == "delivered"
    receiver.wait_for(1)
    published.messages.clear()

    assert webhook_deliver(str(delivery.pk)) == "delivered"  # a redelivered message
    assert webhooks_retry_due() == 0  # the sweep
    WebhookDelivery.objects.filter(pk=delivery.pk).update(enqueued_at=None)
    assert webhooks_retry_due() == 0
    report = services.deliveries_retry_now(deliveries=WebhookDelivery.objects.all())
    assert (report.queued, report.skipped) == (0, 1)

    assert len(receiver.requests) == 1
    assert published.messages == []
    assert WebhookDelivery.objects.get().attempts == 1


def test_a_delivery_gives_up_after_the_last_attempt(tenant, hook, receiver, settings):
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0, 0]  # three attempts in all
    receiver.fail(10)
    delivery = _emit(tenant.org)

    results = [webhook_deliver(str(delivery.pk)) for _ in range(4)]

    assert results == ["pending", "pending", "failed", "failed"]
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 3


def test_the_backoff_schedule_grows_with_jitter(settings):
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [10, 30, 120, 600]
    for attempt, base in [(1, 10), (2, 30), (3, 120), (4, 600), (9, 600)]:
        for _ in range(20):
            assert base * 0.8 <= services.backoff_seconds(attempt) <= base * 1.2
    assert services.max_attempts() == 5


def test_a_timeout_is_a_failed_attempt(tenant, hook, receiver, settings):
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.3
    receiver.hold()  # the receiver reads the request and never answers in time
    delivery = _emit(tenant.org)
    try:
        assert webhook_deliver(str(delivery.pk)) == "pending"
    finally:
        receiver.release()
    delivery.refresh_from_db()
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("timeout")


def test_a_refused_connection_is_a_failed_attempt(tenant):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_webhook(tenant.org, f"http://127.0.0.1:{port}/in")
    delivery = _emit(tenant.org)
    assert webhook_deliver(str(delivery.pk)) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("connection error")


def test_redirects_are_not_followed(tenant, hook, receiver):
    receiver.fail(1, status=302)
    delivery = _emit(tenant.org)
    assert webhook_deliver(str(delivery.pk)) == "pending"
    assert len(receiver.wait_for(1)) == 1
    delivery.refresh_from_db()
    assert (delivery.last_status_code, delivery.last_error) == (302, "HTTP 302")
    assert len(receiver.requests) == 1


def test_a_webhook_disabled_after_the_event_gets_nothing(tenant, hook, receiver):
    delivery = _emit(tenant.org)
    services.webhook_update(webhook=hook.webhook, active=False)
    assert webhook_deliver(str(delivery.pk)) == "failed"
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.last_error == "the webhook is disabled"


def test_a_url_no_longer_allowed_is_not_called(tenant, hook, receiver, settings):
    delivery = _emit(tenant.org)
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = []
    assert webhook_deliver(str(delivery.pk)) == "failed"
    assert receiver.requests == []


def test_a_rotated_secret_signs_the_retries(tenant, hook, receiver):
    receiver.fail(1)
    delivery = _emit(tenant.org)
    webhook_deliver(str(delivery.pk))
    new_secret = services.webhook_rotate_secret(webhook=hook.webhook)
    _due_now(delivery)
    assert webhook_deliver(str(delivery.pk)) == "delivered"
    first, second = receiver.wait_for(2)
    assert verify_signature(hook.secret, first.signature, first.body)
    assert verify_signature(new_secret, second.signature, second.body)
    assert not verify_signature(hook.secret, second.signature, second.body)


def test_missing_and_malformed_ids_are_ignored():
    assert webhook_deliver("not-a-uuid") == "missing"


@pytest.mark.django_db
def test_missing_deliveries_are_ignored():
    assert webhook_deliver("00000000-0000-0000-0000-000000000000") == "missing"


def test_the_claim_is_compare_and_set(tenant, hook):
    delivery = _emit(tenant.org)
    seen_by_a = WebhookDelivery.objects.get(pk=delivery.pk)
    seen_by_b = WebhookDelivery.objects.get(pk=delivery.pk)
    now = timezone.now()
    assert services._claim(seen_by_a, now)
    assert not services._claim(seen_by_b, now)  # the same attempt, seen by a second worker
    row = WebhookDelivery.objects.get(pk=delivery.pk)
    assert row.attempts == 1
    assert row.next_attempt_at == now + services.ATTEMPT_LEASE  # the lease
    assert webhook_deliver(str(delivery.pk)) == "not_due"  # a third: leased


def test_the_sweep_enqueues_due_deliveries_without_a_recent_task(tenant, hook, receiver, published):
    lost = _emit(tenant.org)  # its task was lost
    recent = _emit(tenant.org, "session.started")  # its task was just enqueued
    later = _emit(tenant.org, "usage.recorded")  # backing off
    done = _emit(tenant.org, "limit.reached")
    old = timezone.now() - timedelta(minutes=5)
    WebhookDelivery.objects.filter(pk=lost.pk).update(enqueued_at=old, next_attempt_at=old)
    WebhookDelivery.objects.filter(pk=later.pk).update(
        enqueued_at=old, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    WebhookDelivery.objects.filter(pk=done.pk).update(status="delivered", enqueued_at=old)

    assert webhooks_retry_due() == 1
    assert published.of("webhooks.deliver") == [(str(lost.pk),)]
    assert webhooks_retry_due() == 0  # enqueued now: not again within REQUEUE_AFTER
    assert WebhookDelivery.objects.get(pk=recent.pk).status == "pending"

    assert webhook_deliver(str(lost.pk)) == "delivered"
    assert len(receiver.wait_for(1)) == 1


def test_a_lost_attempt_is_retried_after_its_lease(tenant, hook, receiver, published):
    delivery = _emit(tenant.org)
    services._claim(delivery, timezone.now())  # a worker claimed it and died
    assert webhook_deliver(str(delivery.pk)) == "not_due"
    lease_over = timezone.now() + services.ATTEMPT_LEASE + services.REQUEUE_AFTER
    with time_machine.travel(lease_over):
        assert webhooks_retry_due() == 1
        assert webhook_deliver(str(delivery.pk)) == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert len(receiver.requests) == 1


def test_retry_now_gives_a_failed_delivery_one_more_attempt(
    tenant, hook, receiver, settings, published
):
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0]
    receiver.fail(2)
    delivery = _emit(tenant.org)
    webhook_deliver(str(delivery.pk))
    assert webhook_deliver(str(delivery.pk)) == "failed"
    published.messages.clear()

    report = services.deliveries_retry_now(deliveries=WebhookDelivery.objects.all())

    assert (report.queued, report.skipped) == (1, 0)
    assert published.of("webhooks.deliver") == [(str(delivery.pk),)]
    assert webhook_deliver(str(delivery.pk)) == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert len({r.body for r in receiver.wait_for(3)}) == 1


def test_the_secret_is_never_logged(tenant, receiver, caplog, settings):
    caplog.set_level(logging.DEBUG)
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0]
    response = tenant.client.post(
        "/api/v1/webhooks/", {"url": f"{receiver.url}/in", "events": ["session.ended"]}
    )
    secret = response.json()["secret"]
    receiver.fail(1)
    delivery = _emit(tenant.org)
    webhook_deliver(str(delivery.pk))
    webhook_deliver(str(delivery.pk))
    rotated = tenant.client.post(f"/api/v1/webhooks/{response.json()['id']}/rotate-secret")
    new_secret = rotated.json()["secret"]

    assert len(receiver.wait_for(2)) == 2
    assert "webhook.attempt" in caplog.text
    for value in (secret, new_secret, secret[6:], new_secret[6:]):
        assert value not in caplog.text
        for record in caplog.records:
            assert value not in record.getMessage()
    stored = WebhookDelivery.objects.get()
    assert secret not in json.dumps(stored.body)
    assert secret not in stored.last_error
