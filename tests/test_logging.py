"""Secrets never reach the logs: the redaction filter masks anything that looks like one."""

from __future__ import annotations

import logging

import pytest

from systimz.log import RedactSecretsFilter, redact

KEY = "stz_1a2b3c4d_Zx9vQ2mN8kL5pR7tY3wE6uI1oA4sD0fG2hJ5kL8zX1c"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"auth with {KEY} failed", "stz_1a2b3c4d_[redacted]"),
        ("Authorization: Bearer sk-live-abcdefghijkl", "Bearer [redacted]"),
        ('{"x-api-key": "hg-secret-abcdef"}', "[redacted]"),
        ("api_key=hg-secret-abcdef&x=1", "api_key=[redacted]"),
        ("GET /ws/sessions/1/?token=eyJabc.def.ghi HTTP/1.1", "token=[redacted]"),
    ],
)
def test_redact(text, kept):
    cleaned = redact(text)
    assert kept in cleaned
    assert "abcdef" not in cleaned
    assert "Zx9vQ2mN8" not in cleaned
    assert "eyJabc" not in cleaned


def test_the_filter_rewrites_messages_args_and_tracebacks():
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "key %s used", (KEY,), None)
    try:
        raise ValueError(f"bad {KEY}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactSecretsFilter().filter(record) is True
    assert KEY not in record.getMessage()
    assert KEY not in record.exc_text


def test_a_failed_login_with_a_real_key_leaves_no_trace_of_it(tenant, caplog):
    from tests.conftest import bearer_client

    caplog.set_level(logging.DEBUG)
    wrong = tenant.key[:-4] + "XXXX"
    assert bearer_client(wrong).get("/api/v1/avatars/").status_code == 401
    assert tenant.client.get("/api/v1/avatars/").status_code == 200
    assert tenant.key not in caplog.text
    assert wrong not in caplog.text
