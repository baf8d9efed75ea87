"""What the benchmarks share: a private throwaway test database, quiet loggers, progress on
stderr, and the machine's load.

The database is made as Django's test runner makes one (``setup_databases`` /
``teardown_databases``), under a private name so neither the development database nor a
concurrent pytest run's ``test_<name>`` is touched: a file in a temporary directory on SQLite, a
database ``test_<name>_bench_<pid>`` on PostgreSQL. Call :func:`bench_database` after
``django.setup()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)


def quiet(*names: str) -> None:
    """Per-call INFO lines would drown the output; warnings still show."""
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def bench_database() -> Iterator[str]:
    """Create the private test database, yield its name, drop it afterwards. On PostgreSQL,
    other connections to it (a worker thread's, say) are ended first so the drop succeeds."""
    from django.db import connections
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    settings_dict = connections["default"].settings_dict
    tmpdir = None
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        tmpdir = tempfile.mkdtemp(prefix="systimz-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmpdir, "bench.sqlite3")
    else:
        settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_bench_{os.getpid()}"

    setup_test_environment(debug=False)
    started = time.perf_counter()
    old_config = setup_databases(
        verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set()
    )
    name = connections["default"].settings_dict["NAME"]
    log(f"test database {name} ready in {time.perf_counter() - started:.1f} s")
    try:
        yield name
    finally:
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
