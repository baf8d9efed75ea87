"""Scopes, generated from the URL resolver: every API route refuses a key without one of
its scopes (403 forbidden) and a request without a key (401), and declares its scopes."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from systimz.orgs.models import Scope
from tests.api.routes import PUBLIC, api_routes

ROUTES = [
    route
    for route in api_routes()
    if route.name not in PUBLIC and route.callback.__name__ != "api_not_found"
]


def _url(route):
    return reverse(route.name, kwargs={name: uuid.uuid4() for name in route.params})


def test_every_route_declares_its_scopes():
    undeclared = [route.name for route in ROUTES if not route.required_scopes]
    assert undeclared == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_a_key_without_the_routes_scope_is_403(tenant, route):
    other_scopes = [scope for scope in Scope.values if scope not in route.required_scopes]
    if not other_scopes:
        pytest.skip("every scope grants this route")
    client = tenant.client_with(*other_scopes)
    for method in route.methods:
        response = getattr(client, method.lower())(_url(route), {}, format="json")
        assert response.status_code == 403, (method, response.content)
        assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_no_key_is_401(anonymous, db, route):
    for method in route.methods:
        response = getattr(anonymous, method.lower())(_url(route), {}, format="json")
        assert response.status_code == 401, method
        assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("scope", ["manage", "billing"])
def test_organisation_is_readable_with_manage_or_billing(tenant, scope):
    assert tenant.client_with(scope).get("/api/v1/organisation/").status_code == 200


def test_organisation_is_not_readable_with_sessions_only(tenant):
    assert tenant.client_with("sessions").get("/api/v1/organisation/").status_code == 403
