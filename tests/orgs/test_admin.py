"""The Django admin, as a member of an organisation and as a platform operator."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from avatars.models import Avatar, VoicePreset
from systimz.orgs import services
from systimz.orgs.models import ApiKey, ProviderCredential, User
from tests import factories

SECRET = "hg-admin-secret-0123456789"


@pytest.fixture
def member(tenant) -> Client:
    services.member_create(org=tenant.org, username="mia", password="a-long-pass-phrase-1")
    client = Client()
    assert client.login(username="mia", password="a-long-pass-phrase-1")
    return client


@pytest.fixture
def operator(db) -> Client:
    User.objects.create_superuser("root", "root@example.com", "another-long-pass-2")
    client = Client()
    client.login(username="root", password="another-long-pass-2")
    return client


def _changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _change(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


ORG_MODELS = [
    m
    for m in admin.site._registry
    if m._meta.app_label in {"avatars", "knowledge", "avatar_sessions"}
] + [
    ApiKey,
    ProviderCredential,
]


@pytest.mark.parametrize("model", ORG_MODELS, ids=lambda m: m.__name__)
def test_member_sees_only_their_organisations_rows(tenant, outsider, member, model):
    response = member.get(_changelist(model))
    assert response.status_code == 200
    page = response.content.decode()
    mine = model.objects.for_org(tenant.org)
    theirs = model.objects.for_org(outsider.org)
    assert response.context["cl"].result_count == mine.count()
    for obj in theirs:
        assert _change(obj) not in page
        assert member.get(_change(obj)).status_code == 302  # "does not exist" → admin index


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m.__name__)
def test_every_admin_page_renders_for_the_operator(outsider, operator, model):
    assert operator.get(_changelist(model)).status_code == 200
    model_admin = admin.site._registry[model]
    if model_admin.has_add_permission(type("R", (), {"user": User.objects.get(username="root")})()):
        add = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
        assert operator.get(add).status_code == 200
    obj = model.objects.first()
    if obj is not None:
        assert operator.get(_change(obj)).status_code == 200


def test_member_cannot_see_users_or_other_organisations(tenant, outsider, member):
    assert member.get(_changelist(User)).status_code == 403
    from systimz.orgs.models import Organisation

    listed = member.get(_changelist(Organisation))
    assert listed.context["cl"].result_count == 1
    assert member.get(_change(outsider.org)).status_code == 302


def test_member_foreign_key_choices_are_their_own(tenant, outsider, member):
    mine = factories.VoicePresetFactory(organisation=tenant.org)
    theirs = VoicePreset.objects.for_org(outsider.org).first()
    page = member.get(reverse("admin:avatars_avatar_add")).content.decode()
    assert str(mine.pk) in page
    assert str(theirs.pk) not in page
    assert 'name="organisation"' not in page


def test_member_adds_an_avatar_into_their_organisation(tenant, outsider, member):
    data = {
        "slug": "helper",
        "name": "Helper",
        "kind": "public",
        "provider": "local",
        "provider_avatar_id": "",
        "quality": "medium",
        "language": "en",
        "allowed_origins": "[]",
        "chat_mode": "systimz",
    }
    response = member.post(reverse("admin:avatars_avatar_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Avatar.objects.get(slug="helper").organisation == tenant.org
    clash = member.post(reverse("admin:avatars_avatar_add"), data)
    assert clash.status_code == 200  # the form again, with the error; not a 500
    assert clash.context["adminform"].form.errors == {
        "__all__": ["An avatar with this slug already exists."]
    }


def test_member_cannot_plant_a_foreign_voice_preset(tenant, outsider, member):
    theirs = VoicePreset.objects.for_org(outsider.org).first()
    data = {
        "slug": "spy",
        "name": "Spy",
        "kind": "public",
        "provider": "local",
        "quality": "medium",
        "language": "en",
        "allowed_origins": "[]",
        "chat_mode": "systimz",
        "voice_preset": str(theirs.pk),
    }
    response = member.post(reverse("admin:avatars_avatar_add"), data)
    assert response.status_code == 200
    assert not Avatar.objects.filter(slug="spy").exists()


def test_credential_added_in_admin_is_encrypted_and_never_shown(tenant, member):
    response = member.post(
        reverse("admin:orgs_providercredential_add"),
        {"provider": "heygen", "plan": "trial", "api_key": SECRET},
    )
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(organisation=tenant.org)
    assert credential.reveal_api_key() == SECRET
    assert SECRET not in credential.encrypted_api_key
    for url in (_change(credential), _changelist(ProviderCredential)):
        page = member.get(url).content.decode()
        assert SECRET not in page
        assert credential.encrypted_api_key not in page
        assert f"…{SECRET[-4:]}" in page


def test_credential_change_without_a_key_keeps_the_old_one(tenant, member):
    credential = factories.ProviderCredentialFactory(organisation=tenant.org, api_key=SECRET)
    response = member.post(_change(credential), {"plan": "enterprise", "api_key": ""})
    assert response.status_code == 302
    credential.refresh_from_db()
    assert (credential.plan, credential.reveal_api_key()) == ("enterprise", SECRET)


def test_api_key_added_in_admin_shows_its_secret_once(tenant, member):
    response = member.post(
        reverse("admin:orgs_apikey_add"), {"name": "from admin", "scopes": ["billing"]}, follow=True
    )
    messages = [str(m) for m in response.context["messages"]]
    secret = next(word for m in messages for word in m.split() if word.startswith("stz_"))
    api_key = ApiKey.objects.get(name="from admin")
    assert (api_key.organisation, api_key.scopes) == (tenant.org, ["billing"])
    from systimz.orgs.services import api_key_authenticate

    assert api_key_authenticate(secret=secret) == api_key
    assert secret not in member.get(_change(api_key)).content.decode()
    assert api_key.key_hash not in member.get(_change(api_key)).content.decode()


def test_revoke_action(tenant, member):
    api_key = ApiKey.objects.get(organisation=tenant.org)
    member.post(_changelist(ApiKey), {"action": "revoke", "_selected_action": [str(api_key.pk)]})
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_member_asks_their_knowledge_base_in_the_admin_console(tenant, outsider, member):
    from knowledge import services as knowledge_services
    from knowledge.models import KnowledgeBase, UnansweredQuestion

    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    text = knowledge_services.document_text_from_json(
        title="Hours", content="# Hours\n\nWe are open from 9 to 17 on weekdays.", fmt="markdown"
    )
    knowledge_services.document_create(knowledge_base=kb, text=text)
    url = reverse("admin:knowledge_knowledgebase_ask", args=[kb.pk])
    assert url in member.get(_change(kb)).content.decode()

    page = member.post(url, {"question": "When are you open on weekdays?"}).content.decode()
    assert "We are open from 9 to 17 on weekdays." in page
    assert "Hours" in page
    refused = member.post(url, {"question": "Do you sell zebras?"}).content.decode()
    assert "Refused" in refused
    assert UnansweredQuestion.objects.get(knowledge_base=kb).source == "admin"
    assert "Do you sell zebras?" in member.get(_change(kb)).content.decode()

    foreign = KnowledgeBase.objects.for_org(outsider.org).first()
    foreign_url = reverse("admin:knowledge_knowledgebase_ask", args=[foreign.pk])
    assert member.get(foreign_url).status_code == 404
