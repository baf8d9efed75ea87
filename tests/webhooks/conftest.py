"""Webhook tests run against a receiver on loopback and an in-memory Celery broker, so nothing
they enqueue reaches the development broker (``.local/celery``) or a shared Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery, signals
from celery.contrib.testing.app import setup_default_app
from celery.contrib.testing.worker import start_worker

from systimz.orgs.models import Organisation
from systimz.webhooks import services
from systimz.webhooks import tasks as webhook_tasks
from systimz.webhooks.models import EventType
from tests.webhooks.receiver import Receiver

assert webhook_tasks.webhook_deliver  # registered before any test app is made

ALL_EVENTS = list(EventType.values)


@pytest.fixture(autouse=True)
def _webhook_settings(settings) -> None:
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = ["127.0.0.1", "localhost", "::1"]
    settings.WEBHOOK_RETRY_DELAYS_SECONDS = [10, 30, 120, 600, 1800, 3600, 7200, 14400, 28800]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@dataclass
class Published:
    """Tasks sent to the broker: (task name, args, eta or None)."""

    messages: list[tuple[str, tuple[Any, ...], str | None]] = field(default_factory=list)

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for task, args, _ in self.messages if task == name]

    def on_publish(
        self, sender: str | None = None, headers: Any = None, body: Any = None, **_: Any
    ):
        args = tuple(body[0]) if isinstance(body, tuple | list) else ()
        self.messages.append((headers.get("task", sender), args, headers.get("eta")))


@pytest.fixture(autouse=True)
def celery_app() -> Iterator[Celery]:
    """The project's Celery configuration on an in-memory broker, as the current app."""
    app = Celery("systimz-tests", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(
        broker_url="memory://localhost/",
        result_backend="cache+memory://",
        broker_transport_options={"polling_interval": 0.05},
        task_always_eager=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    with setup_default_app(app):
        app.set_current()
        app.set_default()
        app.finalize()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(app.conf.task_default_queue)
        yield app


@pytest.fixture
def published(celery_app: Celery) -> Iterator[Published]:
    record = Published()
    signals.after_task_publish.connect(record.on_publish, weak=False)
    yield record
    signals.after_task_publish.disconnect(record.on_publish)


class TaskLog:
    """Task runs finished by the worker, to wait on without sleeping."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, Any]] = []
        self._changed = threading.Condition()

    def on_postrun(self, sender: Any = None, retval: Any = None, **_: Any) -> None:
        with self._changed:
            self.finished.append((getattr(sender, "name", ""), retval))
            self._changed.notify_all()

    def results(self, name: str) -> list[Any]:
        with self._changed:
            return [retval for task, retval in self.finished if task == name]

    def wait_for(self, name: str, predicate: Any, timeout: float = 20.0) -> list[Any]:
        with self._changed:
            done = self._changed.wait_for(lambda: predicate(self.results(name)), timeout)
            assert done, f"waited {timeout}s for {name}; finished: {self.finished}"
            return self.results(name)


@pytest.fixture
def celery_worker(celery_app: Celery) -> Iterator[TaskLog]:
    """A real Celery worker in a thread, consuming the in-memory broker."""
    log = TaskLog()
    signals.task_postrun.connect(log.on_postrun, weak=False)
    try:
        with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
            yield log
    finally:
        signals.task_postrun.disconnect(log.on_postrun)


def make_webhook(
    org: Organisation, url: str, events: list[str] | None = None, **kwargs: Any
) -> services.IssuedWebhook:
    return services.webhook_create(org=org, url=url, events=events or ALL_EVENTS, **kwargs)
