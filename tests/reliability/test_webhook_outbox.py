"""T12 (reliability.md §4.2): the webhook outbox against a flaky receiver.

Our "billing provider" push is the webhook outbox (``WebhookDelivery`` rows written in the
transaction of the event; ``usage.recorded`` is the billing event). A receiver on loopback
answers 30 % of requests with 503 and holds 10 % past the client's read timeout (it processed
them: the answer is what is lost, as with a provider that timed out after committing) for the
first 30 simulated minutes, then is healthy. The real tasks run — the after-commit
``webhooks.deliver``, its countdown retries and the ``webhooks.retry_due`` sweep every 30 s —
through an in-memory broker that the test pumps at simulated times (time-machine), so the
backoff schedule (10 s … 8 h) is followed without waiting for it.

Pass criterion: after the drain the receiver has exactly one accepted event per outbox row
(deduplicated on the event id, as a receiver must: the held ones arrive again); every attempt
of an event carried the same event id and byte-identical body with a valid signature; the
sender recorded exactly one success per delivery and sent nothing after it; and a delivery
whose retry window ran out (a receiver down longer than the schedule) is never sent again,
however long the sweep runs afterwards.
Scale: ``RELIABILITY_T12_EVENTS`` events (default 20).
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine
from celery import Celery
from django.db import transaction

from systimz.webhooks import services
from systimz.webhooks.delivery import verify_signature
from systimz.webhooks.models import WebhookAttempt, WebhookDelivery
from systimz.webhooks.tasks import webhooks_retry_due
from tests.webhooks.conftest import celery_app, make_webhook

assert celery_app  # the in-memory broker as the current app (autouse here too)
pytestmark = pytest.mark.django_db(transaction=True)
EVENTS = int(os.environ.get("RELIABILITY_T12_EVENTS", "20"))
SWEEP = timedelta(seconds=30)  # the beat schedule of webhooks.retry_due
T0 = datetime(2026, 5, 4, 9, tzinfo=UTC)


@dataclass
class Request:
    event_id: str
    body: bytes
    signature: str
    answer: str  # "ok", "503" or "held"


@dataclass
class FlakyReceiver:
    """A receiver that fails at random while ``faulty``; records every request."""

    faulty: bool = True
    seed: int = 12
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = receiver.decide()
                with receiver.lock:
                    receiver.requests.append(
                        Request(
                            self.headers.get("Systimz-Event-Id", ""),
                            body,
                            self.headers.get("Systimz-Signature", ""),
                            answer,
                        )
                    )
                if answer == "held":
                    receiver.release.wait(5)  # well past the client's read timeout
                try:
                    self.send_response(503 if answer == "503" else 200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up on this one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def decide(self) -> str:
        with self.lock:
            if self.faulty is None:  # down
                return "503"
            roll = self.random.random()
        if not self.faulty:
            return "ok"
        return "503" if roll < 0.3 else "held" if roll < 0.4 else "ok"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class PumpedWorker:
    """A Celery worker driven by the test's clock: takes the messages off the in-memory
    broker, keeps those with an ETA until the simulated time reaches it, runs the rest with
    the real task code (``Task.apply``, so what they enqueue goes back to the broker)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.timers: list[tuple[datetime, str, tuple[Any, ...]]] = []

    def _drain(self, now: datetime) -> None:
        queue = self.app.conf.task_default_queue
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                args = message.decode()[0]
                eta = message.headers.get("eta")
                when = datetime.fromisoformat(eta) if eta else now
                self.timers.append((when, message.headers["task"], tuple(args)))

    def run_due(self, now: datetime) -> int:
        ran = 0
        while True:
            self._drain(now)
            due = [t for t in self.timers if t[0] <= now]
            if not due:
                return ran
            self.timers = [t for t in self.timers if t[0] > now]
            for _, name, args in due:
                self.app.tasks[name].apply(args=args, throw=True)
                ran += 1

    def next_timer(self) -> datetime | None:
        return min((t[0] for t in self.timers), default=None)


def _simulate(worker: PumpedWorker, start: datetime, until: datetime) -> datetime:
    """Beat's sweep every 30 s and the worker's due tasks, from ``start`` until nothing is
    pending or ``until``, jumping over stretches where neither has anything to do; returns the
    simulated time reached."""
    clock = start
    while clock < until:
        with time_machine.travel(clock, tick=False):
            worker.run_due(clock)
            webhooks_retry_due.apply(throw=True)
            worker.run_due(clock)
        pending = WebhookDelivery.objects.filter(status="pending")
        if not pending.exists() and worker.next_timer() is None:
            return clock
        # When the sweep would next find something: due, and not enqueued recently.
        sweepable = min(
            max(at, (queued or at) + services.REQUEUE_AFTER)
            for at, queued in pending.values_list("next_attempt_at", "enqueued_at")
        )
        tick = start + max((sweepable - start) // SWEEP + 1, (clock - start) // SWEEP + 1) * SWEEP
        timer = worker.next_timer()
        clock = min(tick, timer) if timer is not None and timer > clock else tick
    return clock


@pytest.fixture
def flaky(settings) -> Iterator[FlakyReceiver]:
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.3  # the client timeout, short for the test
    receiver = FlakyReceiver()
    yield receiver
    receiver.stop()


def _emit(org: Any, count: int) -> list[WebhookDelivery]:
    deliveries = []
    with time_machine.travel(T0, tick=False):
        for n in range(count):
            with transaction.atomic():  # the delivery task is enqueued after this commit
                deliveries += services.webhook_emit(
                    org=org,
                    type_="usage.recorded",
                    data={"session_id": f"s-{n}", "billable_minutes": n},
                )
    return deliveries


def test_a_flaky_receiver_gets_each_event_once_with_the_same_id(
    tenant, flaky, celery_app, record_property
):
    hook = make_webhook(tenant.org, flaky.url, ["usage.recorded"])
    worker = PumpedWorker(celery_app)
    deliveries = _emit(tenant.org, EVENTS)
    healthy_at = T0 + timedelta(minutes=30)
    reached = _simulate(worker, T0, healthy_at)  # the flaky half hour
    flaky.faulty = False
    reached = _simulate(worker, max(reached, healthy_at), T0 + timedelta(days=1))

    rows = WebhookDelivery.objects.filter(pk__in=[d.pk for d in deliveries])
    assert {r.status for r in rows} == {"delivered"}
    by_event: dict[str, list[Request]] = defaultdict(list)
    for request in flaky.requests:
        by_event[request.event_id].append(request)
    accepted = {e for e, reqs in by_event.items() if any(r.answer != "503" for r in reqs)}
    assert accepted == {str(r.event_id) for r in rows}  # count == outbox count, each once
    for row in rows:
        sent = by_event[str(row.event_id)]
        assert {r.body for r in sent} == {sent[0].body}  # every retry: the same bytes
        assert json.loads(sent[0].body)["id"] == str(row.event_id)
        assert all(verify_signature(hook.secret, r.signature, r.body, 10**9) for r in sent)
        assert len(sent) == row.attempts  # no request the outbox does not know of
        outcomes = list(
            WebhookAttempt.objects.filter(delivery=row).values_list("status_code", flat=True)
        )
        assert outcomes.count(200) == 1
        assert outcomes[-1] == 200  # nothing sent after the success
        assert sent[-1].answer == "ok"
    retried = sum(1 for reqs in by_event.values() if len(reqs) > 1)
    held_twice = sum(1 for reqs in by_event.values() if sum(r.answer != "503" for r in reqs) > 1)
    assert retried > 0  # the faults happened
    record_property("requests", len(flaky.requests))
    record_property("events_retried", retried)
    record_property("events_the_receiver_deduplicated", held_twice)
    record_property("simulated_drain_minutes", int((reached - T0).total_seconds() // 60))


def test_nothing_is_resent_once_the_retry_window_is_over(tenant, flaky, celery_app, settings):
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [10, 30, 60]  # four attempts over ~2 minutes
    make_webhook(tenant.org, flaky.url, ["usage.recorded"])
    worker = PumpedWorker(celery_app)
    flaky.faulty = None  # down for longer than the whole schedule
    deliveries = _emit(tenant.org, 5)
    reached = _simulate(worker, T0, T0 + timedelta(hours=1))
    assert {d.status for d in WebhookDelivery.objects.all()} == {"failed"}
    assert len(flaky.requests) == 4 * len(deliveries)

    flaky.faulty = False  # back, but the events are past their window: no blind resend
    clock = reached
    for _ in range(20):
        clock += timedelta(minutes=30)
        with time_machine.travel(clock, tick=False):
            webhooks_retry_due.apply(throw=True)
            worker.run_due(clock)
    assert len(flaky.requests) == 4 * len(deliveries)
    assert {d.status for d in WebhookDelivery.objects.all()} == {"failed"}
