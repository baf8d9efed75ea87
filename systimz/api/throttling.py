"""Request rates, against runaway clients and bursts of session starts.

Each throttle is a fixed-window counter in the cache: ``cache.add`` creates the window's counter
and ``cache.incr`` counts the request, both atomic on Redis and on the in-memory cache, so 20
concurrent clients get exactly ``limit`` admissions per window. (DRF's ``SimpleRateThrottle``
reads the history, then writes it: concurrent requests all read the same history and more than
the limit get through.) A refusal is logged as a warning naming the scope and the organisation
(never a key or token); the limits that cost money are enforced in the database as well.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from systimz.orgs.models import ApiKey

log = logging.getLogger(__name__)


class FailOpenRateThrottle(SimpleRateThrottle):
    """An atomic fixed-window rate whose counter lives in the cache (Redis in production).
    When the cache is down the request is let through and the outage logged: a rate limit is
    not a security control here (the limits that cost money are in the database), and failing
    closed would turn a Redis outage into a 5xx on every API call."""

    _wait_seconds: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            allowed = self._count(self.key)
        except (RedisError, OSError) as exc:
            log.warning(
                "throttle %s skipped: cache unavailable (%s)", self.scope, type(exc).__name__
            )
            return True
        if not allowed:
            log.warning(
                "throttle.rejected scope=%s org=%s client=%s limit=%s/%ss retry_after=%s",
                self.scope,
                self.organisation_label(request, view),
                self.get_ident(request),
                self.num_requests,
                self.duration,
                int(self._wait_seconds or 0) + 1,
            )
        return allowed

    def _count(self, key: str) -> bool:
        """Count this request in the current window; True while within the limit."""
        now = self.timer()
        window = int(now // self.duration)
        bucket = f"{key}:w{window}"
        self.cache.add(bucket, 0, timeout=self.duration + 1)
        try:
            count = self.cache.incr(bucket)
        except ValueError:  # the counter expired between add and incr
            self.cache.add(bucket, 0, timeout=self.duration + 1)
            count = self.cache.incr(bucket)
        self._wait_seconds = max(0.0, (window + 1) * self.duration - now)
        return count <= self.num_requests

    def wait(self) -> float | None:
        return self._wait_seconds

    def organisation_label(self, request: Request, view: Any) -> str:
        """The organisation the request counts against, for the refusal's log line."""
        return "-"


class ApiKeyRateThrottle(FailOpenRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = str(request.auth.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def organisation_label(self, request: Request, view: Any) -> str:
        if isinstance(request.auth, ApiKey):
            return f"{request.auth.organisation.slug} key={request.auth.prefix}"
        return "-"


class TalkClientThrottle(FailOpenRateThrottle):
    """Session starts from the public talk page, per client address (``NUM_PROXIES`` says how
    many proxies' ``X-Forwarded-For`` entries to trust)."""

    scope = "talk_client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def organisation_label(self, request: Request, view: Any) -> str:
        return str(view.kwargs.get("org_slug", "-"))


class TalkOrganisationThrottle(FailOpenRateThrottle):
    """Session starts from the public talk pages, per organisation."""

    scope = "talk_organisation"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        org = view.kwargs.get("org_slug", "")
        return self.cache_format % {"scope": self.scope, "ident": org}

    def organisation_label(self, request: Request, view: Any) -> str:
        return str(view.kwargs.get("org_slug", "-"))
