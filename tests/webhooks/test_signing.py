"""The signature a receiver checks: HMAC-SHA256 over "<t>.<body>", within a tolerance."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from systimz.webhooks import delivery
from systimz.webhooks.delivery import signature_header, verify_signature

SECRET = "whsec_test-secret-0123456789abcdefghijklmnopqr"
BODY = b'{"data":{"reason":"idle"},"id":"7d4c","type":"session.ended"}'


def test_a_signature_verifies_over_exactly_the_body():
    header = signature_header(SECRET, BODY)
    assert verify_signature(SECRET, header, BODY)
    assert verify_signature(SECRET, header, BODY.decode())  # str bodies are UTF-8 encoded


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    header = signature_header(SECRET, BODY, timestamp=1_700_000_000)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "mutated",
    [
        BODY.replace(b"idle", b"user"),
        BODY + b" ",
        BODY[:-1],
        b"",
    ],
)
def test_a_mutated_body_fails(mutated):
    assert not verify_signature(SECRET, signature_header(SECRET, BODY), mutated)


def test_another_secret_fails():
    header = signature_header(SECRET, BODY)
    assert not verify_signature(SECRET + "x", header, BODY)


def test_a_changed_timestamp_fails():
    header = signature_header(SECRET, BODY)
    t = int(header.split(",")[0][2:])
    forged = header.replace(f"t={t}", f"t={t + 1}")
    assert not verify_signature(SECRET, forged, BODY)


def test_a_signature_outside_the_tolerance_fails():
    t = int(time.time())
    header = signature_header(SECRET, BODY, timestamp=t)
    assert verify_signature(SECRET, header, BODY, now=t + 300)
    assert not verify_signature(SECRET, header, BODY, now=t + 301)
    assert not verify_signature(SECRET, header, BODY, now=t - 301)
    assert verify_signature(SECRET, header, BODY, tolerance=600, now=t + 599)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=abc,v1=00", "v1=00", "t=1700000000", "t=1700000000,v1="],
)
def test_malformed_headers_fail(header):
    assert not verify_signature(SECRET, header, BODY, now=1_700_000_000)


def test_any_matching_v1_is_accepted():
    t = int(time.time())
    good = signature_header(SECRET, BODY, timestamp=t).split("v1=")[1]
    assert verify_signature(SECRET, f"t={t},v1={'0' * 64},v1={good}", BODY)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/systimz", None),
        ("https://hooks.example.com:8443/in?tenant=1", None),
        ("http://127.0.0.1:9000/in", None),
        ("http://[::1]:9000/in", None),
        ("http://hooks.example.com/in", "Use an https:// URL."),
        ("ftp://hooks.example.com/in", "Use an https:// URL."),
        ("https://user:pw@hooks.example.com/in", "Credentials"),
        ("https://hooks.example.com/in#frag", "fragment"),
        ("https:///in", "host"),
        ("https://hooks.example.com:99999/in", "Not a valid URL."),
    ],
)
def test_url_rules(settings, url, problem):
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = ["127.0.0.1", "::1"]
    got = delivery.url_problem(url)
    if problem is None:
        assert got is None
    else:
        assert got is not None
        assert problem in got


def test_plain_http_to_loopback_needs_the_setting(settings):
    settings.WEBHOOK_HTTP_ALLOWED_HOSTS = []
    assert delivery.url_problem("http://127.0.0.1:9000/in") == "Use an https:// URL."
