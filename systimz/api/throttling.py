"""A per-key request rate, against runaway clients. Not a security control (DRF's throttles
are not atomic); the limits that cost money are enforced in the database."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from systimz.orgs.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = str(request.auth.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TalkClientThrottle(SimpleRateThrottle):
    """Session starts from the public talk page, per client address (``NUM_PROXIES`` says how
    many proxies' ``X-Forwarded-For`` entries to trust)."""

    scope = "talk_client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TalkOrganisationThrottle(SimpleRateThrottle):
    """Session starts from the public talk pages, per organisation."""

    scope = "talk_organisation"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        org = view.kwargs.get("org_slug", "")
        return self.cache_format % {"scope": self.scope, "ident": org}
