"""Scope checks. Views declare ``required_scopes`` (any one suffices); a view that declares
none is refused, so a new endpoint fails closed until someone decides who may call it."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from systimz.orgs.models import ApiKey


class HasScope(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise NotAuthenticated()
        required: tuple[str, ...] = tuple(getattr(view, "required_scopes", ()))
        if not required:
            raise PermissionDenied("This endpoint declares no scope and is closed.")
        if not any(api_key.has_scope(scope) for scope in required):
            raise PermissionDenied(f"This key lacks the scope {' or '.join(required)!s}.")
        return True
