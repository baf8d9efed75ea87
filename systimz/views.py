"""Django's error handlers: the contract's JSON envelope for the API and machine paths,
Django's own pages for the people-facing ones (admin, talk page)."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from systimz import errors
from systimz.api.exceptions import json_error_response

_JSON_PREFIXES = ("/api/", "/healthz")


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(_JSON_PREFIXES)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return json_error_response(errors.InvalidInput("Bad request."))
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return json_error_response(errors.Forbidden())
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return json_error_response(errors.NotFound())
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        # Django calls this inside its ``except``: a database outage outside a DRF view (in
        # middleware, say) is the same transient 503 as inside one.
        if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
            return json_error_response(errors.ServiceUnavailable())
        return json_error_response(errors.ServerError())
    return defaults.server_error(request)


@csrf_exempt
def api_not_found(request: HttpRequest) -> HttpResponse:
    """The last route under /api/v1/: unknown paths answer in the envelope even in DEBUG.
    CSRF-exempt like the API views: a POST to a malformed id is a 404, not Django's HTML 403."""
    return json_error_response(errors.NotFound())
