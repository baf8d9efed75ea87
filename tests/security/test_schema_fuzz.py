"""T20 — schema fuzzing: schemathesis 4 in-process against the live OpenAPI schema.

Pass criterion (reliability.md §4.2): authenticated as a tenant (a key with every scope),
0 ``not_a_server_error``, 0 ``response_schema_conformance`` and 0 ``negative_data_rejection``
failures over positive and negative examples of every operation.

Scale: ``SYSTIMZ_FUZZ_EXAMPLES`` examples per operation and mode (positive, negative); default
3 + 3 = 6 per operation in the default run (20 per operation took 245 s, 10 took 118 s on the
shared 2-core machine, over the default budget), ``SYSTIMZ_FUZZ_EXAMPLES_SLOW`` (default
10 + 10 = 20 per operation) in the slow one. The criterion's 500 per operation is for a
dedicated machine: raise the variables there.
The schema is loaded from the WSGI application (``schemathesis.openapi.from_wsgi``), so
requests run in this process against the test database. Tasks go to an in-memory broker
(``tests.webhooks.conftest.celery_app``).

Checks: all of schemathesis' defaults, each failure collected and reported together, except:
- ``max_response_time`` is not set: the machine is shared and timing-noisy (figures reported,
  not asserted, style rule);
- ``status_code_conformance`` stays on: the schema documents the error statuses
  (``systimz/api/schema.py`` adds the envelope responses to every operation).
- ``positive_data_acceptance`` is excluded: positive examples legitimately meet 404 (random
  ids), 409 (session state) and 429 (plan limits) — business rules a schema cannot express.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup

from systimz.api.throttling import ApiKeyRateThrottle
from tests.webhooks.conftest import celery_app  # noqa: F401

DEFAULT_EXAMPLES = 3
EXCLUDED_CHECKS = ("positive_data_acceptance", "max_response_time")


def _checks() -> list[Any]:
    from schemathesis.checks import CHECKS

    load_all_checks()
    return [check for check in CHECKS.get_all() if check.__name__ not in EXCLUDED_CHECKS]


@pytest.fixture
def fuzz_schema(tenant, outsider, monkeypatch, celery_app) -> Iterator[Any]:  # noqa: F811
    """The live schema, loaded from the WSGI app, with the per-key rate out of the way (T23
    tests the rate; here it would turn the fuzzer's burst into 429s)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from systimz.wsgi import application

    monkeypatch.setattr(
        ApiKeyRateThrottle, "THROTTLE_RATES", {**ApiKeyRateThrottle.THROTTLE_RATES, "api_key": None}
    )
    # As Django's test client does: a request must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _run(schema: Any, key: str, examples: int) -> tuple[list[str], int]:
    checks = _checks()
    failures: list[str] = []
    calls = 0
    headers = {"Authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
            def fuzz(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(checks=checks)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing to negate (an operation without parameters or body): no case to send.
                if mode is not GenerationMode.NEGATIVE:
                    raise
            except FailureGroup as exc:
                failures.append(f"{operation.label} [{mode}]: {str(exc)[:1500]}")
            except Exception as exc:  # noqa: BLE001 - a crash in the app is also a finding
                failures.append(f"{operation.label} [{mode}]: {type(exc).__name__}: {exc!s:.1500}")
    return failures, calls


def test_schema_fuzz(fuzz_schema, tenant, record_property):
    examples = int(os.environ.get("SYSTIMZ_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
    failures, calls = _run(fuzz_schema, tenant.key, examples)
    record_property("fuzz_calls", calls)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_schema_fuzz_long(fuzz_schema, tenant, record_property):
    examples = int(os.environ.get("SYSTIMZ_FUZZ_EXAMPLES_SLOW", "10"))
    failures, calls = _run(fuzz_schema, tenant.key, examples)
    record_property("fuzz_calls", calls)
    assert not failures, "\n\n".join(failures)
