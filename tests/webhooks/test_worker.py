"""Through a real Celery worker: the event commits, the worker delivers, a 5xx is retried with
the same id, and nothing is delivered twice. Also two workers racing for one attempt."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import close_old_connections, transaction

from systimz.webhooks import services
from systimz.webhooks.delivery import verify_signature
from systimz.webhooks.models import WebhookAttempt, WebhookDelivery
from systimz.webhooks.tasks import webhook_deliver, webhooks_retry_due
from tests.webhooks.conftest import make_webhook

pytestmark = pytest.mark.django_db(transaction=True)
DELIVER = "webhooks.deliver"


def test_the_worker_delivers_after_commit_and_retries_a_5xx(
    tenant, receiver, celery_worker, settings
):
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [0, 0]  # retry at once: the test waits on events
    hook = make_webhook(tenant.org, f"{receiver.url}/in", ["session.ended"])
    receiver.fail(1, status=500)

    with transaction.atomic():
        [delivery] = services.webhook_emit(
            org=tenant.org, type_="session.ended", data={"reason": "idle", "usage": {"tasks": 2}}
        )
        services.webhook_emit(org=tenant.org, type_="session.started", data={})  # unsubscribed

    results = celery_worker.wait_for(DELIVER, lambda r: "delivered" in r)
    assert results == ["pending", "delivered"]
    first, second = receiver.wait_for(2)
    assert first.body == second.body
    assert json.loads(second.body)["id"] == str(delivery.event_id)
    assert json.loads(second.body)["data"] == {"reason": "idle", "usage": {"tasks": 2}}
    for request in (first, second):
        assert verify_signature(hook.secret, request.signature, request.body)
        assert not verify_signature(hook.secret, request.signature, request.body[:-1] + b" ")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert WebhookDelivery.objects.count() == 1  # session.started had no subscriber

    # Re-running the sweep and the task after success delivers nothing new.
    assert webhooks_retry_due() == 0
    webhook_deliver.delay(str(delivery.pk))
    results = celery_worker.wait_for(DELIVER, lambda r: len(r) == 3)
    assert results[-1] == "delivered"
    assert len(receiver.requests) == 2
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 2


def test_the_sweep_delivers_what_was_never_enqueued(tenant, receiver, celery_worker, monkeypatch):
    hook = make_webhook(tenant.org, f"{receiver.url}/in")
    monkeypatch.setattr(services, "_enqueue", lambda ids, countdown=None: 0)  # the broker lost it
    with transaction.atomic():
        [delivery] = services.webhook_emit(org=tenant.org, type_="limit.reached", data={})
    monkeypatch.undo()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(enqueued_at=None)

    assert webhooks_retry_due() == 1
    assert celery_worker.wait_for(DELIVER, lambda r: len(r) == 1) == ["delivered"]
    [request] = receiver.wait_for(1)
    assert verify_signature(hook.secret, request.signature, request.body)


def test_two_workers_never_send_the_same_attempt(tenant, receiver):
    make_webhook(tenant.org, f"{receiver.url}/in")
    [delivery] = services.webhook_emit(org=tenant.org, type_="usage.recorded", data={})
    receiver.hold()  # the sender that wins waits at the receiver while the other one tries
    start = threading.Barrier(2)
    results: list[str] = []
    finished = threading.Condition()

    def worker() -> None:
        try:
            start.wait(timeout=10)
            result = webhook_deliver(str(delivery.pk))
        finally:
            close_old_connections()
        with finished:
            results.append(result)
            finished.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        receiver.wait_for(1)
        with finished:  # the loser gives up while the winner's request is still open
            assert finished.wait_for(lambda: len(results) == 1, timeout=20)
        assert results[0] in ("claimed", "not_due")
    finally:
        receiver.release()
        for thread in threads:
            thread.join(timeout=20)
    assert sorted(results) in (["claimed", "delivered"], ["delivered", "not_due"])
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
