"""T19 — webhook verification, from the receiver's side (``verify_signature``).

Pass criterion (reliability.md §4.2): only the valid and the rotated (two ``v1``) cases are
accepted; a body mutated by one byte, a wrong secret and a timestamp 301 s old are refused; a
replay is processed once (every retry of a delivery carries the same event id, so a receiver
deduplicates on it); 0 exceptions under fuzzing of the header parser.

Fuzzing uses hypothesis, not atheris: atheris has no wheel for this Python and does not build
here. ``SYSTIMZ_HEADER_FUZZ_EXAMPLES`` (default 1,000) sets the examples per property; the slow
variant runs 20,000 per property. The documented failure result of a bad header is ``False``.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from systimz.webhooks import services
from systimz.webhooks.delivery import compute_signature, signature_header, verify_signature
from systimz.webhooks.models import WebhookAttempt, WebhookDelivery
from systimz.webhooks.tasks import webhook_deliver
from tests.webhooks.conftest import celery_app, make_webhook, receiver  # noqa: F401

SECRET = "whsec_t19-secret-0123456789abcdefghijklmnopq"
ROTATED = "whsec_t19-rotated-abcdefghijklmnopqrstuvwxyz0"
BODY = b'{"data":{"reason":"idle"},"id":"9f1c","type":"session.ended"}'
NOW = 1_700_000_000
EXAMPLES = int(os.environ.get("SYSTIMZ_HEADER_FUZZ_EXAMPLES", "1000"))


def _v1(secret: str, t: int = NOW, body: bytes = BODY) -> str:
    return compute_signature(secret, t, body)


def _flip_one_byte(body: bytes, index: int) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


def test_a_valid_signature_is_accepted():
    assert verify_signature(SECRET, signature_header(SECRET, BODY, timestamp=NOW), BODY, now=NOW)


@pytest.mark.parametrize("index", range(len(BODY)))
def test_any_one_byte_mutation_is_refused(index):
    header = signature_header(SECRET, BODY, timestamp=NOW)
    assert not verify_signature(SECRET, header, _flip_one_byte(BODY, index), now=NOW)


def test_a_wrong_secret_is_refused():
    header = signature_header(SECRET, BODY, timestamp=NOW)
    assert not verify_signature(ROTATED, header, BODY, now=NOW)


def test_a_timestamp_301_seconds_old_is_refused():
    header = signature_header(SECRET, BODY, timestamp=NOW - 301)
    assert not verify_signature(SECRET, header, BODY, now=NOW)
    assert verify_signature(
        SECRET, signature_header(SECRET, BODY, timestamp=NOW - 300), BODY, now=NOW
    )


def test_two_v1_signatures_either_key_verifies():
    """During a rotation the sender signs with both secrets; a receiver holding either one
    accepts, a receiver holding neither refuses."""
    header = f"t={NOW},v1={_v1(ROTATED)},v1={_v1(SECRET)}"
    assert verify_signature(SECRET, header, BODY, now=NOW)
    assert verify_signature(ROTATED, header, BODY, now=NOW)
    assert not verify_signature("whsec_neither", header, BODY, now=NOW)


@pytest.mark.parametrize(
    "t",
    [
        "\u0661\u0667" + "\u0660" * 8,
        " 1700000000",
        "1_700_000_000",
        "+1700000000",
        "-5",
        "1" * 13,
        "",
        "0x10",
    ],
)
def test_timestamps_are_ascii_digits_only_at_most_12(t):
    """``int()`` accepts several of these; the parser must not. (Whitespace around a whole
    ``name=value`` part is separator whitespace and stays tolerated.)"""
    value = int(t.replace("_", "")) if t.strip().replace("_", "").isdigit() else NOW
    header = f"t={t},v1={_v1(SECRET, t=value)}"
    assert verify_signature(SECRET, header, BODY, now=value, tolerance=10**15) is False


def test_a_non_ascii_v1_is_skipped_not_raised():
    header = f"t={NOW},v1=ä{_v1(SECRET)[1:]},v1={_v1(SECRET)}"
    assert verify_signature(SECRET, header, BODY, now=NOW)
    assert not verify_signature(SECRET, f"t={NOW},v1=é", BODY, now=NOW)


@pytest.mark.django_db
def test_every_retry_of_a_delivery_carries_the_same_event_id(tenant, receiver):  # noqa: F811
    """Replay: a receiver deduplicating on the body's ``id`` processes the event once, however
    many attempts (each freshly signed) reach it."""
    from django.utils import timezone

    hook = make_webhook(tenant.org, f"{receiver.url}/in")
    receiver.fail(2, status=503)
    [delivery] = services.webhook_emit(
        org=tenant.org, type_="session.ended", data={"session_id": "s-19", "reason": "user"}
    )
    for _ in range(3):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
        webhook_deliver(str(delivery.pk))
    requests = receiver.wait_for(3)
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 3
    processed: set[str] = set()
    handled = 0
    for request in requests:
        assert verify_signature(hook.secret, request.signature, request.body)
        event_id = json.loads(request.body)["id"]
        assert request.headers["Systimz-Event-Id"] == event_id == str(delivery.event_id)
        if event_id not in processed:
            processed.add(event_id)
            handled += 1
    assert handled == 1
    assert len({r.signature for r in requests}) >= 1  # signatures may differ; the id does not


def _fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


_header_text = st.one_of(
    st.text(),
    st.lists(
        st.tuples(
            st.sampled_from(["t", "v1", "v0", "T", " t", "v1 ", ""]),
            st.one_of(st.text(max_size=80), st.integers().map(str), st.just(_v1(SECRET))),
        ),
        max_size=6,
    ).map(lambda parts: ",".join(f"{k}={v}" for k, v in parts)),
)


def _check_header(header: object, body: bytes, now: float) -> None:
    result = verify_signature(SECRET, header, body, now=now)  # type: ignore[arg-type]
    assert result is False or result is True
    if result:  # only a genuine signature over this body can pass
        assert isinstance(header, str)
        assert _v1(SECRET, t=int(header.split("t=")[1].split(",")[0]), body=body) in header


def _property(examples: int):
    @_fuzz(examples)
    @given(
        header=st.one_of(_header_text, st.binary(max_size=120), st.none(), st.integers()),
        body=st.one_of(st.binary(max_size=64), st.just(BODY)),
        now=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(float(NOW))),
    )
    def check(header: object, body: bytes, now: float) -> None:
        _check_header(header, body, now)

    return check


def test_header_parser_fuzz_never_raises():
    _property(EXAMPLES)()


@pytest.mark.slow
def test_header_parser_fuzz_never_raises_long():
    _property(int(os.environ.get("SYSTIMZ_HEADER_FUZZ_EXAMPLES_SLOW", "20000")))()


def test_fuzzed_valid_headers_round_trip():
    """The other half of the fuzz: any timestamp in range and any body signs and verifies."""

    @_fuzz(min(EXAMPLES, 500))
    @given(t=st.integers(min_value=0, max_value=10**12 - 1), body=st.binary(max_size=256))
    def check(t: int, body: bytes) -> None:
        header = signature_header(SECRET, body, timestamp=t)
        assert verify_signature(SECRET, header, body, now=t)
        assert not verify_signature(SECRET, header, body + b"x", now=t)

    check()


def test_wall_clock_default():
    """Without ``now`` the current time is used (no clock injection needed by receivers)."""
    assert verify_signature(SECRET, signature_header(SECRET, BODY), BODY, now=time.time())
