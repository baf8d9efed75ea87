"""factory_boy factories for the tenant world."""

from __future__ import annotations

import factory

from avatars.models import Avatar, Provider, VoicePreset
from knowledge.models import Document, DocumentStatus, KnowledgeBase, LLMEndpoint
from systimz.orgs.models import Organisation, Plan, ProviderCredential


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Organisation {n}")
    plan = Plan.TRIAL


class VoicePresetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VoicePreset

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"Voice {n}")
    voice_id = "en-us-1"
    rate = 1.0


class KnowledgeBaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = KnowledgeBase

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"Knowledge {n}")
    instructions = "Answer briefly."
    opening_text = "Hello!"


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    knowledge_base = factory.SubFactory(KnowledgeBaseFactory)
    organisation = factory.SelfAttribute("knowledge_base.organisation")
    title = factory.Sequence(lambda n: f"Document {n}")
    content = factory.Sequence(lambda n: f"Fact number {n}.")
    content_hash = factory.Sequence(lambda n: f"{n:064x}")
    size_bytes = 16
    status = DocumentStatus.READY


class AvatarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Avatar

    organisation = factory.SubFactory(OrganisationFactory)
    slug = factory.Sequence(lambda n: f"avatar-{n}")
    name = factory.Sequence(lambda n: f"Avatar {n}")
    provider = Provider.LOCAL
    published = True
    allowed_origins = factory.LazyFunction(lambda: ["https://shop.example"])


class EncryptedKeyFactory(factory.django.DjangoModelFactory):
    """Takes ``api_key`` in clear and stores it the way the services do."""

    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class: type, *args: object, **kwargs: object) -> object:
        api_key = str(kwargs.pop("api_key"))
        row = model_class(*args, **kwargs)
        row.set_api_key(api_key)
        row.save()
        return row


class ProviderCredentialFactory(EncryptedKeyFactory):
    class Meta:
        model = ProviderCredential

    organisation = factory.SubFactory(OrganisationFactory)
    provider = "heygen"
    api_key = factory.Sequence(lambda n: f"hg-test-secret-{n:08d}")


class LLMEndpointFactory(EncryptedKeyFactory):
    class Meta:
        model = LLMEndpoint

    organisation = factory.SubFactory(OrganisationFactory)
    name = factory.Sequence(lambda n: f"LLM {n}")
    base_url = "http://127.0.0.1:9/v1"
    model = "test-model"
    api_key = factory.Sequence(lambda n: f"llm-test-secret-{n:08d}")
