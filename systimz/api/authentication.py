"""Bearer API-key authentication for DRF."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from systimz.api import schema  # noqa: F401 - registers the OpenAPI security scheme
from systimz.orgs import services
from systimz.orgs.models import ApiKey, Organisation


@dataclass(frozen=True)
class ApiPrincipal:
    """``request.user`` for a request made with an API key: the organisation acting."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def organisation(self) -> Organisation:
        return self.api_key.organisation

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <key>``. ``request.auth`` is the :class:`ApiKey`."""

    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Malformed Authorization header: use 'Bearer <key>'.")
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid API key.") from None
        api_key = services.api_key_authenticate(secret=secret)
        if api_key is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        return ApiPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="systimz"'
