from __future__ import annotations

import pytest

from avatars.models import Avatar, VoicePreset
from knowledge.models import KnowledgeBase
from tests import factories

URL = "/api/v1/avatars/"


def _create(tenant, **fields):
    return tenant.client.post(URL, {"slug": "guide", "name": "Guide", **fields}, format="json")


def test_create_with_defaults(tenant):
    response = _create(tenant)
    assert response.status_code == 201
    body = response.json()
    assert {
        k: body[k]
        for k in (
            "kind",
            "provider",
            "provider_avatar_id",
            "quality",
            "language",
            "published",
            "allowed_origins",
            "voice_preset",
            "knowledge_base",
        )
    } == {
        "kind": "public",
        "provider": "local",
        "provider_avatar_id": "",
        "quality": "medium",
        "language": "en",
        "published": False,
        "allowed_origins": [],
        "voice_preset": None,
        "knowledge_base": None,
    }


def test_create_with_everything(tenant):
    voice = factories.VoicePresetFactory(organisation=tenant.org)
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    response = _create(
        tenant,
        kind="studio",
        provider="heygen",
        provider_avatar_id="Wayne_20240711",
        voice_preset=str(voice.pk),
        knowledge_base=str(kb.pk),
        quality="high",
        language="de-DE",
        published=True,
        allowed_origins=["HTTPS://Shop.Example:443/", "http://localhost:3000"],
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["voice_preset"] == str(voice.pk)
    assert body["knowledge_base"] == str(kb.pk)
    assert body["allowed_origins"] == ["https://shop.example", "http://localhost:3000"]
    avatar = Avatar.objects.get(pk=body["id"])
    assert (avatar.organisation, avatar.provider, avatar.quality) == (tenant.org, "heygen", "high")


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"quality": "ultra"}, "quality"),
        ({"kind": "robot"}, "kind"),
        ({"provider": "d-id"}, "provider"),
        ({"provider": "heygen"}, "provider_avatar_id"),
        ({"provider": "liveavatar", "provider_avatar_id": ""}, "provider_avatar_id"),
        ({"allowed_origins": ["https://x.example/path"]}, "allowed_origins"),
        ({"allowed_origins": ["ftp://x.example"]}, "allowed_origins"),
        ({"allowed_origins": "https://x.example"}, "allowed_origins"),
        ({"slug": "not a slug"}, "slug"),
        ({"language": "xx_YY"}, "language"),
        ({"voice_preset": "not-a-uuid"}, "voice_preset"),
    ],
)
def test_invalid_fields_are_named(tenant, fields, bad):
    response = _create(tenant, **fields)
    assert response.status_code == 400
    assert bad in response.json()["error"]["fields"]


def test_another_organisations_voice_or_knowledge_base_is_not_found(tenant, outsider):
    foreign_voice = VoicePreset.objects.for_org(outsider.org).first()
    foreign_kb = KnowledgeBase.objects.for_org(outsider.org).first()
    import uuid

    for field, foreign in (("voice_preset", foreign_voice.pk), ("knowledge_base", foreign_kb.pk)):
        as_foreign = _create(tenant, **{field: str(foreign)})
        as_missing = _create(tenant, **{field: str(uuid.uuid4())})
        assert as_foreign.status_code == 400
        assert as_foreign.json()["error"]["fields"] == {field: ["Not found."]}
        assert as_foreign.json() == as_missing.json()
    assert not Avatar.objects.for_org(tenant.org).exists()


def test_slug_is_unique_per_organisation(tenant, outsider):
    outsider_slug = Avatar.objects.for_org(outsider.org).first().slug
    assert _create(tenant, slug=outsider_slug).status_code == 201
    again = _create(tenant, slug=outsider_slug)
    assert again.status_code == 400
    assert list(again.json()["error"]["fields"]) == ["slug"]


def test_patch_keeps_provider_rules(tenant):
    avatar_id = _create(tenant).json()["id"]
    response = tenant.client.patch(f"{URL}{avatar_id}/", {"provider": "heygen"}, format="json")
    assert response.status_code == 400
    ok = tenant.client.patch(
        f"{URL}{avatar_id}/",
        {"provider": "heygen", "provider_avatar_id": "Anna_public"},
        format="json",
    )
    assert ok.status_code == 200
    assert ok.json()["provider"] == "heygen"


def test_list_filters_and_paginates(tenant):
    for n in range(5):
        factories.AvatarFactory(organisation=tenant.org, published=n % 2 == 0)
    published = tenant.client.get(URL, {"published": "true"}).json()
    assert published["count"] == 3
    page = tenant.client.get(URL, {"page_size": 2}).json()
    assert (page["count"], len(page["results"]), page["next"] is not None) == (5, 2, True)


def test_avatar_list_query_count_does_not_grow(tenant, django_assert_max_num_queries):
    voice = factories.VoicePresetFactory(organisation=tenant.org)
    for _ in range(10):
        factories.AvatarFactory(organisation=tenant.org, voice_preset=voice)
    with django_assert_max_num_queries(4):
        assert tenant.client.get(URL).status_code == 200


def test_a_local_avatar_cannot_chat_with_a_provider_model(tenant):
    response = tenant.client.post(
        "/api/v1/avatars/",
        {"slug": "home", "name": "Home", "provider": "local", "chat_mode": "provider"},
        format="json",
    )
    assert response.status_code == 400
    assert "chat_mode" in response.json()["error"]["fields"]
    ok = tenant.client.post(
        "/api/v1/avatars/",
        {"slug": "home", "name": "Home", "provider": "local", "chat_mode": "systimz"},
        format="json",
    )
    assert ok.status_code == 201
    assert ok.json()["chat_mode"] == "systimz"
