"""A per-key request rate, against runaway clients. Not a security control (DRF's throttles
are not atomic); the limits that cost money are enforced in the database."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from systimz.orgs.models import ApiKey

log = logging.getLogger(__name__)


class FailOpenRateThrottle(SimpleRateThrottle):
    """A rate whose counter lives in the cache (Redis in production). When the cache is down
    the request is let through and the outage logged: a rate limit is not a security control
    here (the limits that cost money are in the database), and failing closed would turn a
    Redis outage into a 5xx on every API call."""

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            log.warning(
                "throttle %s skipped: cache unavailable (%s)", self.scope, type(exc).__name__
            )
            return True


class ApiKeyRateThrottle(FailOpenRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = str(request.auth.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TalkClientThrottle(FailOpenRateThrottle):
    """Session starts from the public talk page, per client address (``NUM_PROXIES`` says how
    many proxies' ``X-Forwarded-For`` entries to trust)."""

    scope = "talk_client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TalkOrganisationThrottle(FailOpenRateThrottle):
    """Session starts from the public talk pages, per organisation."""

    scope = "talk_organisation"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        org = view.kwargs.get("org_slug", "")
        return self.cache_format % {"scope": self.scope, "ident": org}
