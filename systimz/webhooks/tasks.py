"""Celery shells for webhooks: take ids, call one service. Both are safe to run twice (see the
claim protocol in ``systimz.webhooks.services``)."""

from __future__ import annotations

from celery import shared_task

from systimz.webhooks import services


# Hard limit well inside the attempt lease (services.ATTEMPT_LEASE): a killed attempt's lease
# always outlives it. One POST takes at most connect (3 s) + write/read (10 s each).
@shared_task(
    name="webhooks.deliver",
    acks_late=True,
    time_limit=60,
    soft_time_limit=45,
    ignore_result=True,
)
def webhook_deliver(delivery_id: str) -> str:
    """Make the next attempt of one delivery, if it is due and not already being made."""
    return services.delivery_attempt(delivery_id=delivery_id)


@shared_task(
    name="webhooks.retry_due",
    acks_late=True,
    time_limit=120,
    soft_time_limit=100,
    ignore_result=True,
)
def webhooks_retry_due() -> int:
    """The outbox sweep (beat, every 30 s): enqueue every due delivery without a recent task."""
    return services.deliveries_enqueue_due()
