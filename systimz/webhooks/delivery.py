"""The webhook sender: serialise, sign, POST once; and the receiver's side of the signature.

Wire format (contract): ``POST <url>`` with the JSON body ``{id, type, created_at,
organisation, data}`` and ``Systimz-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>``. The body is serialised once per attempt and exactly those bytes are signed
and sent; the timestamp, and so the signature, is fresh on every attempt while the body (and its
``id``) is the same. Redirects are not followed: a 3xx is a failed attempt.

The secret travels only into the HMAC; it never reaches a header, a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

SIGNATURE_HEADER = "Systimz-Signature"
EVENT_ID_HEADER = "Systimz-Event-Id"
USER_AGENT = "Systimz-Webhooks/1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a marker, not a secret
DEFAULT_TOLERANCE_SECONDS = 300


def serialise(body: dict[str, Any]) -> bytes:
    """The bytes sent for ``body``: compact UTF-8 JSON with sorted keys, so every attempt of a
    delivery sends the same bytes whatever database stored it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


def compute_signature(secret: str, timestamp: int, payload: bytes | str) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` under ``secret``."""
    message = f"{timestamp}.".encode() + _as_bytes(payload)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, payload: bytes | str, *, timestamp: int | None = None) -> str:
    """The ``Systimz-Signature`` value for ``payload`` signed now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={compute_signature(secret, t, payload)}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``header`` carries a ``v1`` signature of exactly ``body`` under
    ``secret`` with a timestamp within ``tolerance`` seconds of now. Verify the raw request
    body, before any JSON parsing; then deduplicate on the body's ``id``."""
    parsed = _parse_signature_header(header)
    if parsed is None:
        return False
    timestamp, candidates = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = compute_signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


_MAX_TIMESTAMP_DIGITS = 12


def _parse_signature_header(header: object) -> tuple[int, list[str]] | None:
    """``(t, [v1 values])`` from a ``Systimz-Signature`` value, or None when it is unusable.

    Strict on purpose: ``t`` is 1 to 12 ASCII digits (``int()`` alone would also take
    ``"١٢"``, ``" 12"`` and ``"1_000"``), and only ASCII ``v1`` values are kept
    (``hmac.compare_digest`` raises TypeError on non-ASCII text)."""
    if not isinstance(header, str) or not header:
        return None
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS):
                return None
            timestamp = int(value)
        elif name == "v1" and value.isascii():
            candidates.append(value)
    if timestamp is None or not candidates:
        return None
    return timestamp, candidates


def url_problem(url: str) -> str | None:
    """Why ``url`` may not receive webhooks, or None. https only; plain http only to the hosts
    in ``WEBHOOK_HTTP_ALLOWED_HOSTS`` (a local receiver in development)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "Not a valid URL."
    if not parts.hostname:
        return "The URL needs a host."
    insecure_ok = parts.hostname in settings.WEBHOOK_HTTP_ALLOWED_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and insecure_ok):
        return "Use an https:// URL."
    if parts.username is not None or parts.password is not None:
        return "Credentials do not belong in the URL; verify the signature instead."
    if parts.fragment:
        return "The URL may not have a fragment."
    return None


@dataclass(frozen=True)
class Outcome:
    """What one POST got: a 2xx is ``ok``; otherwise the status code, or a short error."""

    ok: bool
    status_code: int | None
    error: str
    duration_ms: int


def _timeout() -> httpx.Timeout:
    connect = float(settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)
    read = float(settings.WEBHOOK_READ_TIMEOUT_SECONDS)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def send(
    *,
    url: str,
    secret: str,
    body: dict[str, Any],
    timestamp: int | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """POST ``body`` to ``url`` once, signed with ``secret``. Never raises for what the
    receiver or the network does; the response body is not read."""
    payload = serialise(body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: str(body.get("id", "")),
        SIGNATURE_HEADER: signature_header(secret, payload, timestamp=timestamp),
    }
    problem = url_problem(url)
    if problem is not None:
        return Outcome(ok=False, status_code=None, error=f"refused URL: {problem}", duration_ms=0)
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        with (
            httpx.Client(timeout=_timeout(), follow_redirects=False, transport=transport) as client,
            client.stream("POST", url, content=payload, headers=headers) as response,
        ):
            status = response.status_code
    except httpx.TimeoutException as exc:
        return Outcome(False, None, f"timeout ({type(exc).__name__})", elapsed())
    except httpx.HTTPError as exc:  # connection refused, reset, TLS, protocol errors
        return Outcome(False, None, f"connection error ({type(exc).__name__})", elapsed())
    if 200 <= status < 300:
        return Outcome(True, status, "", elapsed())
    return Outcome(False, status, f"HTTP {status}", elapsed())
