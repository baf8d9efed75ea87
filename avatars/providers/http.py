"""One way to call a provider over HTTP: explicit timeouts, bounded retries, one log line.

Retry policy (after openai-python's): up to ``max_retries`` more attempts, exponential backoff
with jitter, ``Retry-After`` honoured up to ``max_retry_after``. What is retried depends on the
call: an idempotent call (stop, keep-alive, list) on any transient failure; a call that costs or
repeats an effect (create, speak) only when the connection never opened, because otherwise the
provider may have acted on it. The API key travels only in a header and never reaches a log
line or an exception message.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from avatars.providers.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

log = logging.getLogger("systimz.providers")

# Parses a provider's response (status, headers, decoded JSON body) into the ``data`` it
# carries, or raises a typed ProviderError.
EnvelopeParser = Callable[[int, Mapping[str, str], Any], Any]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        base = min(self.initial_delay * 2**attempt, self.max_delay)
        return base * (1 - 0.25 * random.random())  # noqa: S311 - jitter, not cryptography


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one (reading the CA bundle) costs ~20 ms, and a
    client is made per provider call (bench/sessions.py). SSLContext is safe to share."""
    return httpx.create_ssl_context()


def default_timeout() -> httpx.Timeout:
    return timeouts(connect=3.0, read=10.0)


def timeouts(*, connect: float, read: float) -> httpx.Timeout:
    """Connect (and wait for a pooled connection) within ``connect``; each read and write
    within ``read`` seconds."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class ProviderHttp:
    """An ``httpx.Client`` for one provider, base URL and key, with the retry policy."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        parse: EnvelopeParser,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.parse = parse
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.client = httpx.Client(
            base_url=base_url,
            headers=dict(headers),
            timeout=timeout or default_timeout(),
            follow_redirects=False,
            transport=transport,
            verify=shared_ssl_context(),
        )

    def close(self) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        idempotent: bool,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send the request and return the envelope's data; raise a typed ProviderError."""
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                result = self._once(method, path, json_body, params)
            except ProviderError as exc:
                if not self._should_retry(exc, idempotent, attempt):
                    self._log(operation, started, attempt, getattr(exc, "status", None), exc)
                    raise
                retry_after = exc.retry_after if isinstance(exc, ProviderRateLimited) else None
                self.sleep(self.retry.delay(attempt, retry_after))
                attempt += 1
                continue
            self._log(operation, started, attempt, 200, None)
            return result

    def _should_retry(self, exc: ProviderError, idempotent: bool, attempt: int) -> bool:
        if attempt >= self.retry.max_retries or not exc.retryable:
            return False
        if idempotent:
            return True
        # Not safe to repeat: only when the request certainly never reached the provider.
        return isinstance(exc, ProviderUnavailable) and not exc.connected

    def _once(
        self, method: str, path: str, json_body: Any, params: Mapping[str, Any] | None
    ) -> Any:
        try:
            response = self.client.request(method, path, json=json_body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ProviderUnavailable(
                f"{self.provider}: cannot connect ({type(exc).__name__})", connected=False
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"{self.provider}: no answer in time") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"{self.provider}: connection failed ({type(exc).__name__})"
            ) from exc
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json() if response.content else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if response.status_code >= 500:
                raise ProviderUnavailable(
                    f"{self.provider}: HTTP {response.status_code}",
                    status=response.status_code,
                    request_id=request_id,
                ) from exc
            raise ProviderBadResponse(
                f"{self.provider}: the answer is not JSON (HTTP {response.status_code})",
                status=response.status_code,
                request_id=request_id,
            ) from exc
        try:
            return self.parse(response.status_code, response.headers, body)
        except ProviderError as exc:
            exc.request_id = exc.request_id or request_id
            raise

    def _log(
        self,
        operation: str,
        started: float,
        retries: int,
        status: int | None,
        error: ProviderError | None,
    ) -> None:
        log.log(
            logging.WARNING if error else logging.INFO,
            "provider.call provider=%s operation=%s status=%s ms=%d retries=%s error=%s",
            self.provider,
            operation,
            status if status is not None else "-",
            (time.monotonic() - started) * 1000,
            retries,
            type(error).__name__ if error else "-",
        )
