"""The one exception handler: every error of the API leaves in the contract's envelope.

``{"error": {"code": "<snake_case>", "message": "<human text>", "fields": {...}}}``

DRF routes its own exceptions and everything raised in a view here; Django's 404/500/400
handlers (``systimz.urls``) reuse :func:`error_response` for paths that never reach a view.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from systimz import errors
from systimz.orgs.crypto import DecryptionError

log = logging.getLogger("systimz.api")

# DRF exception → our error class. Order matters: subclasses before their bases.
_DRF_MAP: list[tuple[type[Exception], type[errors.SystimzError]]] = [
    (drf.ValidationError, errors.InvalidInput),
    (drf.ParseError, errors.InvalidInput),
    (drf.NotAuthenticated, errors.Unauthenticated),
    (drf.AuthenticationFailed, errors.Unauthenticated),
    (drf.PermissionDenied, errors.Forbidden),
    (drf.NotFound, errors.NotFound),
    (drf.MethodNotAllowed, errors.MethodNotAllowed),
    (drf.NotAcceptable, errors.NotAcceptable),
    (drf.UnsupportedMediaType, errors.UnsupportedMediaType),
    (drf.Throttled, errors.RateLimited),
]


def _plain(detail: Any) -> Any:
    """ErrorDetail trees → plain str/list/dict trees."""
    if isinstance(detail, Mapping):
        return {str(key): _plain(value) for key, value in detail.items()}
    if isinstance(detail, list | tuple):
        return [_plain(item) for item in detail]
    return str(detail)


def _fields(detail: Any) -> dict[str, Any]:
    plain = _plain(detail)
    if isinstance(plain, dict):
        return plain
    return {"non_field_errors": plain if isinstance(plain, list) else [plain]}


def _first_message(fields: Mapping[str, Any]) -> str:
    for name, value in fields.items():
        while isinstance(value, list | dict) and value:
            value = value[0] if isinstance(value, list) else next(iter(value.values()))
        if isinstance(value, str):
            return value if name == "non_field_errors" else f"{name}: {value}"
    return errors.InvalidInput.default_message


def to_systimz_error(exc: Exception) -> errors.SystimzError | None:
    """Translate any known exception into the vocabulary; None for a real bug."""
    if isinstance(exc, errors.SystimzError):
        return exc
    if isinstance(exc, drf.ValidationError):
        fields = _fields(exc.detail)
        return errors.InvalidInput(_first_message(fields), fields=fields)
    if isinstance(exc, DjangoValidationError):
        fields = _fields(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
        return errors.InvalidInput(_first_message(fields), fields=fields)
    if isinstance(exc, drf.ParseError):
        return errors.InvalidInput(f"Malformed request body: {exc.detail}")
    if isinstance(exc, drf.Throttled):
        return errors.RateLimited(
            "Too many requests for this key; retry later.",
            retry_after=int(exc.wait) + 1 if exc.wait is not None else None,
        )
    if isinstance(exc, DecryptionError):
        # A stored key under a dropped encryption key, or a ciphertext moved from another row:
        # the organisation has to store the credential again; not a server bug.
        return errors.Conflict(
            "A stored credential cannot be decrypted; store it again under provider-credentials/."
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away (restart, fail-over, connections exhausted): transient, and
        # the transaction was rolled back.
        log.warning("api.database_unavailable %s", type(exc).__name__)
        return errors.ServiceUnavailable()
    if isinstance(exc, Http404):
        return errors.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return errors.Forbidden()
    if isinstance(exc, RequestDataTooBig):
        return errors.TooLarge("The request body is too large.")
    for drf_class, error_class in _DRF_MAP:
        if isinstance(exc, drf_class):
            detail = getattr(exc, "detail", None)
            return error_class(str(detail) if isinstance(detail, str) else None)
    return None


def error_response(error: errors.SystimzError) -> Response:
    return Response(error.as_dict(), status=error.status, headers=error.headers)


def json_error_response(error: errors.SystimzError) -> JsonResponse:
    # The same bytes DRF's JSONRenderer writes (compact, UTF-8), so a 404 from Django's
    # resolver is indistinguishable from a 404 from a view (no leak of which ids are routable).
    response = JsonResponse(
        error.as_dict(),
        status=error.status,
        json_dumps_params={"separators": (",", ":"), "ensure_ascii": False},
    )
    for name, value in error.headers.items():
        response[name] = value
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER. Unknown exceptions return None: Django logs them and
    ``handler500`` answers with ``server_error`` in the same envelope."""
    error = to_systimz_error(exc)
    if error is None:
        return None
    response = error_response(error)
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        response["WWW-Authenticate"] = auth_header
    if error.status in (401, 403):
        request = context.get("request")
        log.info(
            "api.denied status=%s path=%s key=%s",
            error.status,
            getattr(request, "path", "?"),
            getattr(getattr(request, "auth", None), "prefix", "-"),
        )
    return response
