"""The test world: every test that has an organisation also has an outsider organisation
with objects of its own, so a cross-tenant check is one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from systimz.orgs import services
from systimz.orgs.models import Organisation, Plan, Scope
from tests import factories


@dataclass
class Tenant:
    org: Organisation
    key: str  # an API key with every scope
    client: APIClient  # authenticated with `key`

    def client_with(self, *scopes: str) -> APIClient:
        issued = services.api_key_create(org=self.org, name="scoped", scopes=scopes)
        return bearer_client(issued.secret)


def bearer_client(secret: str | None) -> APIClient:
    client = APIClient()
    if secret is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _tenant(slug: str, plan: str = Plan.TRIAL) -> Tenant:
    org = factories.OrganisationFactory(slug=slug, plan=plan)
    issued = services.api_key_create(org=org, name="all", scopes=Scope.values)
    return Tenant(org=org, key=issued.secret, client=bearer_client(issued.secret))


@pytest.fixture
def tenant(db: None) -> Tenant:
    return _tenant("acme")


@pytest.fixture
def outsider(db: None) -> Tenant:
    """Another organisation with one object of every kind."""
    other = _tenant("outsider")
    kb = factories.KnowledgeBaseFactory(organisation=other.org)
    factories.DocumentFactory(knowledge_base=kb)
    voice = factories.VoicePresetFactory(organisation=other.org)
    factories.AvatarFactory(organisation=other.org, voice_preset=voice, knowledge_base=kb)
    factories.ProviderCredentialFactory(organisation=other.org)
    factories.LLMEndpointFactory(organisation=other.org)
    from systimz.webhooks.services import webhook_create

    webhook_create(org=other.org, url="https://hooks.outsider.example/in", events=["session.ended"])
    from sessions.services import session_admit

    session_admit(org=other.org, avatar=factories.AvatarFactory(organisation=other.org))
    return other


@pytest.fixture
def anonymous() -> APIClient:
    return bearer_client(None)


@pytest.fixture
def make_tenant(db: None) -> Callable[..., Tenant]:
    return _tenant


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Admin logins hash passwords; the production hasher is slow on purpose.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def anyio_backend() -> str:
    """WebSocket tests (``pytest.mark.anyio``) run on asyncio, as daphne does."""
    return "asyncio"


@pytest.fixture
def fresh_channel_layer() -> None:
    """Forget channel layers built by an earlier test: each is bound to that test's loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
