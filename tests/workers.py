"""A real Celery worker for tests: the project's tasks on a real broker, in this process.

Redis when ``REDIS_URL`` is set (on a queue of the test's own), otherwise kombu's filesystem
transport in a temporary folder: the same two brokers production and ``make run`` use. The
worker runs in threads of the test process, so a test must use ``transactional_db`` (the
worker's database connections see only committed rows).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery.contrib.testing.app import setup_default_app
from celery.contrib.testing.worker import start_worker
from django.conf import settings


@contextmanager
def running_worker(tmp_path: Path, *, concurrency: int = 2) -> Iterator[Celery]:
    app = Celery("systimz-tests", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    queue = f"tests-{uuid.uuid4().hex[:12]}"
    options: dict[str, Any] = {
        "task_default_queue": queue,
        "result_backend": "cache+memory://",
        "beat_schedule": {},
        "worker_hijack_root_logger": False,
    }
    if not settings.REDIS_URL:
        folder = tmp_path / "broker"
        folder.mkdir()
        options["broker_url"] = "filesystem://"
        options["broker_transport_options"] = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    app.conf.update(options)
    app.loader.import_default_modules()
    with (
        setup_default_app(app),
        start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
            queues=[queue],
        ),
    ):
        yield app


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "", interval: float = 0.02
) -> Any:
    """Poll ``condition`` (a database read, say) until it is truthy; fail after ``timeout``.
    For state a worker changes in another thread: the condition, not a pause, is the point."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)
