"""T17 — tenant isolation, generated from the live OpenAPI schema (and the URL resolver).

Pass criterion (reliability.md §4.2): every object endpoint and every WebSocket route, with org
B's credentials against org A's ids (real ones, and guessed ones: random UUIDs, sequential
integers), answers 404 with no body leak, and a route without a case fails the suite.

What ``tests/api/test_tenancy.py`` already covers (resolver sweep, one method per route, lists,
one WebSocket case) is reused, not copied: its per-route cases (``OBJECT_ROUTE_CASES``) name org
A's objects. This module drives the sweep from ``GET /api/v1/schema/`` instead: every documented
path with a path parameter and every documented method, the 404 body byte-identical to a random
id's, the set of swept schema operations equal to the schema's, and a snapshot of every field of
org A's objects equal before and after. In the fixtures, ``outsider`` is org A (the victim) and
``tenant`` is org B (the caller).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.urls import resolve

from sessions.routing import websocket_urlpatterns
from tests.api.test_tenancy import BODIES, OBJECT_ROUTE_CASES, ORG_MODELS, WEBSOCKET_ROUTE_CASES

METHODS = ("get", "post", "put", "patch", "delete")
NOT_FOUND = {"error": {"code": "not_found", "message": "Not found."}}
SEQUENTIAL_GUESSES = ("1", "2", "3", "0")


def _schema() -> dict[str, Any]:
    response = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _object_operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, {param name: param schema}) for every operation with a path parameter."""
    found = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            params = {
                p["name"]: p.get("schema", {})
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if p["in"] == "path"
            }
            if params:
                found.append((path, method, params))
    return found


def _fill(path: str, values: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def _route_name(path: str, params: dict[str, Any]) -> str:
    return resolve(_fill(path, {name: uuid.uuid4() for name in params})).url_name


def _victim_values(route_name: str, org: Any) -> dict[str, Any]:
    """Org A's ids for a route, named as the schema names them (the resolver's ``pk`` is the
    schema's ``id``). A route with no case here is a KeyError: the suite fails."""
    kwargs = OBJECT_ROUTE_CASES[route_name](org)
    return {("id" if name == "pk" else name): value for name, value in kwargs.items()}


def _guesses(param: dict[str, Any]) -> list[str]:
    """Ids an attacker would try for a parameter of this schema type."""
    if param.get("type") == "integer":
        return list(SEQUENTIAL_GUESSES)
    if param.get("format") == "uuid":
        return [str(uuid.uuid4())]
    return [str(uuid.uuid4()), *SEQUENTIAL_GUESSES[:2]]


def _snapshot(org: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        model.__name__: list(model.objects.for_org(org).order_by("pk").values())
        for model in ORG_MODELS
    }


def _call(client: Any, method: str, url: str) -> Any:
    return getattr(client, method)(url, BODIES.get(method.upper()), format="json")


def test_schema_sweep_every_operation_is_404_like_a_random_id(tenant, outsider):
    schema = _schema()
    operations = _object_operations(schema)
    assert operations, "the schema lists no object operations"
    before = _snapshot(outsider.org)
    swept: set[tuple[str, str]] = set()
    checked = 0
    for path, method, params in operations:
        route_name = _route_name(path, params)
        victim = _victim_values(route_name, outsider.org)
        assert set(victim) == set(params), (path, "the case names other parameters")
        random_body = _call(tenant.client, method, _fill(path, {n: uuid.uuid4() for n in params}))
        assert random_body.status_code == 404, (method, path, random_body.content)
        assert random_body.json() == NOT_FOUND
        attempts = [victim]
        for name, param in params.items():
            attempts += [{**victim, name: guess} for guess in _guesses(param)]
        for values in attempts:
            got = _call(tenant.client, method, _fill(path, values))
            assert got.status_code == 404, (method, path, values, got.content)
            assert got.content == random_body.content, (method, path, values)
            checked += 1
        swept.add((path, method))
    # "A new route without a case fails": every documented object operation was swept.
    assert swept == {(path, method) for path, method, _ in operations}
    assert _snapshot(outsider.org) == before
    assert checked >= len(operations)


def test_schema_and_resolver_agree_on_the_object_routes(db):
    """Every object route the resolver knows is documented, and every documented one has a
    case (a route hidden from the schema would escape the schema sweep)."""
    from tests.api.test_tenancy import _object_routes

    documented = {_route_name(path, params) for path, _, params in _object_operations(_schema())}
    assert documented == {route.name for route in _object_routes()} == set(OBJECT_ROUTE_CASES)


def test_the_victims_own_key_still_sees_its_objects(tenant, outsider):
    """Control: the 404s above are about ownership, not broken routes."""
    for path, method, params in _object_operations(_schema()):
        if method != "get":
            continue
        values = _victim_values(_route_name(path, params), outsider.org)
        response = outsider.client.get(_fill(path, values))
        assert response.status_code == 200, (path, response.content)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pattern", [str(p.pattern) for p in websocket_urlpatterns])
def test_every_socket_route_refuses_org_b_before_any_event(tenant, outsider, pattern):
    """Org B's token against org A's session, and against a guessed session id: the first and
    only thing the socket does is close with 4401. (One case exists in test_tenancy; this adds
    the guessed id and asserts nothing else is sent.)"""
    from channels.layers import channel_layers
    from channels.testing import WebsocketCommunicator

    from sessions.player import player_token
    from sessions.services import session_admit
    from systimz.asgi import application
    from tests import factories

    channel_layers.backends.clear()
    ours = session_admit(org=tenant.org, avatar=factories.AvatarFactory(organisation=tenant.org))
    token = player_token(ours)
    foreign = WEBSOCKET_ROUTE_CASES[pattern](outsider.org)["session_id"]

    async def first_and_rest(session_id: Any) -> tuple[dict[str, Any], bool]:
        path = "/" + re.sub(r"<[^>]+>", str(session_id), pattern)
        communicator = WebsocketCommunicator(application, f"{path}?token={token}")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        first = await communicator.receive_output(timeout=10)
        quiet = await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect(timeout=5)
        return first, quiet

    for session_id in (foreign, uuid.uuid4()):
        first, quiet = async_to_sync(first_and_rest)(session_id)
        assert first == {"type": "websocket.close", "code": 4401}
        assert quiet
