"""Tenant isolation, generated from the URL resolver: every object route, every method, with
another organisation's ids, answers 404 with exactly the body of an id that does not exist.
A route added without a case here fails `test_every_object_route_has_a_case`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from avatars.models import Avatar, VoicePreset
from knowledge.models import Document, KnowledgeBase, LLMEndpoint
from sessions.models import AvatarSession
from sessions.routing import websocket_urlpatterns
from systimz.orgs.models import ApiKey, Organisation, ProviderCredential
from systimz.webhooks.models import Webhook
from tests.api.routes import api_routes

# url name -> (outsider org -> URL kwargs naming the outsider's object)
Case = Callable[[Organisation], dict[str, Any]]


def _one(model: Any) -> Case:
    return lambda org: {"pk": model.objects.for_org(org).first().pk}


OBJECT_ROUTE_CASES: dict[str, Case] = {
    "api-key-detail": _one(ApiKey),
    "provider-credential-detail": _one(ProviderCredential),
    "voice-preset-detail": _one(VoicePreset),
    "knowledge-base-detail": _one(KnowledgeBase),
    "knowledge-base-ask": _one(KnowledgeBase),
    "knowledge-base-gaps": _one(KnowledgeBase),
    "llm-endpoint-detail": _one(LLMEndpoint),
    "avatar-detail": _one(Avatar),
    "session-detail": _one(AvatarSession),
    "session-speak": _one(AvatarSession),
    "session-interrupt": _one(AvatarSession),
    "session-keep-alive": _one(AvatarSession),
    "session-stop": _one(AvatarSession),
    "session-events": _one(AvatarSession),
    "document-list": lambda org: {
        "knowledge_base_id": KnowledgeBase.objects.for_org(org).first().pk
    },
    "document-detail": lambda org: {
        "knowledge_base_id": KnowledgeBase.objects.for_org(org).first().pk,
        "pk": Document.objects.for_org(org).first().pk,
    },
    "webhook-detail": _one(Webhook),
    "webhook-deliveries": _one(Webhook),
    "webhook-rotate-secret": _one(Webhook),
}
WEBSOCKET_ROUTE_CASES: dict[str, Case] = {
    "ws/sessions/<uuid:session_id>/": lambda org: {
        "session_id": AvatarSession.objects.for_org(org).first().pk
    },
}

ORG_MODELS = (
    ApiKey,
    ProviderCredential,
    VoicePreset,
    KnowledgeBase,
    Avatar,
    Document,
    LLMEndpoint,
    AvatarSession,
    Webhook,
)

BODIES = {
    "PUT": {"name": "hijack", "slug": "hijack", "voice_id": "v", "title": "t", "plan": "trial"},
    "PATCH": {"name": "hijack", "title": "hijack"},
    "POST": {"title": "t", "content": "hijack", "question": "What is the secret?", "text": "hi"},
}


def _object_routes() -> list[Any]:
    return [route for route in api_routes() if route.params]


def test_every_object_route_has_a_case():
    assert {route.name for route in _object_routes()} == set(OBJECT_ROUTE_CASES)
    assert {str(p.pattern) for p in websocket_urlpatterns} == set(WEBSOCKET_ROUTE_CASES)


def _random_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: uuid.uuid4() for name in kwargs}


@pytest.mark.parametrize("route", _object_routes(), ids=lambda route: route.name)
def test_other_organisations_objects_are_404_like_missing_ones(tenant, outsider, route):
    foreign = OBJECT_ROUTE_CASES[route.name](outsider.org)
    missing = _random_kwargs(foreign)
    for method in route.methods:
        call = getattr(tenant.client, method.lower())
        data = BODIES.get(method)
        got = call(reverse(route.name, kwargs=foreign), data, format="json")
        expected = call(reverse(route.name, kwargs=missing), data, format="json")
        assert got.status_code == 404, (method, route.name, got.content)
        assert got.content == expected.content, (method, route.name)
        assert got.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_outsider_objects_are_untouched_after_the_sweep(tenant, outsider):
    before = {
        model.__name__: sorted(
            str(pk) for pk in model.objects.for_org(outsider.org).values_list("pk", flat=True)
        )
        for model in ORG_MODELS
    }
    for route in _object_routes():
        kwargs = OBJECT_ROUTE_CASES[route.name](outsider.org)
        for method in route.methods:
            getattr(tenant.client, method.lower())(
                reverse(route.name, kwargs=kwargs), BODIES.get(method), format="json"
            )
    after = {
        model.__name__: sorted(
            str(pk) for pk in model.objects.for_org(outsider.org).values_list("pk", flat=True)
        )
        for model in ORG_MODELS
    }
    assert after == before
    assert ApiKey.objects.for_org(outsider.org).filter(revoked_at__isnull=False).count() == 0
    assert not VoicePreset.objects.filter(name="hijack").exists()
    assert not Document.objects.filter(content="hijack").exists()


def _list_routes() -> list[Any]:
    return [r for r in api_routes() if r.name.endswith("-list") and not r.params]


@pytest.mark.parametrize("route", _list_routes(), ids=lambda route: route.name)
def test_lists_show_only_the_callers_objects(tenant, outsider, route):
    response = tenant.client.get(reverse(route.name))
    assert response.status_code == 200
    text = response.content.decode()
    for model in ORG_MODELS:
        for pk in model.objects.for_org(outsider.org).values_list("pk", flat=True):
            assert str(pk) not in text


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pattern", sorted(WEBSOCKET_ROUTE_CASES))
def test_another_organisations_socket_refuses_our_token(tenant, outsider, pattern):
    """A player token is for its own session: on another organisation's session it is 4401."""
    from asgiref.sync import async_to_sync
    from channels.layers import channel_layers
    from channels.testing import WebsocketCommunicator

    from sessions.player import player_token
    from sessions.services import session_admit
    from systimz.asgi import application
    from tests import factories

    channel_layers.backends.clear()
    ours = session_admit(org=tenant.org, avatar=factories.AvatarFactory(organisation=tenant.org))
    foreign = WEBSOCKET_ROUTE_CASES[pattern](outsider.org)
    path = "/" + pattern.replace("<uuid:session_id>", str(foreign["session_id"]))

    async def connect() -> int | None:
        communicator = WebsocketCommunicator(application, f"{path}?token={player_token(ours)}")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        output = await communicator.receive_output(timeout=10)
        return output.get("code")

    assert async_to_sync(connect)() == 4401
