from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from rest_framework import serializers

from knowledge.models import Document, DocumentFormat, KnowledgeBase, LLMEndpoint
from systimz.api.serializers import OrgRelatedField, OrgUniqueFieldsMixin, StrictStringsMixin


class LLMEndpointSerializer(StrictStringsMixin, OrgUniqueFieldsMixin, serializers.ModelSerializer):
    org_unique_fields = ("name",)
    api_key = serializers.CharField(
        write_only=True, max_length=500, style={"input_type": "password"}
    )
    timeout_seconds = serializers.FloatField(min_value=1.0, max_value=120.0, required=False)

    class Meta:
        model = LLMEndpoint
        fields = [
            "id",
            "name",
            "base_url",
            "model",
            "api_key",
            "last4",
            "timeout_seconds",
            "created_at",
        ]
        read_only_fields = ["id", "last4", "created_at"]

    def validate_base_url(self, value: str) -> str:
        parts = urlsplit(value)
        insecure_ok = parts.hostname in settings.LLM_HTTP_ALLOWED_HOSTS
        if parts.scheme != "https" and not (parts.scheme == "http" and insecure_ok):
            raise serializers.ValidationError("Use an https:// URL.")
        if parts.query or parts.fragment or parts.username:
            raise serializers.ValidationError(
                "Give the base URL only, e.g. https://api.example.com/v1."
            )
        return value.rstrip("/")

    def create(self, validated_data: dict[str, Any]) -> LLMEndpoint:
        api_key = validated_data.pop("api_key")
        endpoint = LLMEndpoint(**validated_data)
        endpoint.set_api_key(api_key)
        endpoint.save()
        return endpoint

    def update(self, instance: LLMEndpoint, validated_data: dict[str, Any]) -> LLMEndpoint:
        if "api_key" in validated_data:
            instance.set_api_key(validated_data.pop("api_key"))
        return super().update(instance, validated_data)


class KnowledgeBaseSerializer(
    StrictStringsMixin, OrgUniqueFieldsMixin, serializers.ModelSerializer
):
    org_unique_fields = ("name",)
    llm_endpoint = OrgRelatedField(LLMEndpoint, required=False, allow_null=True)

    class Meta:
        model = KnowledgeBase
        fields = [
            "id",
            "name",
            "instructions",
            "opening_text",
            "fallback_text",
            "language",
            "llm_endpoint",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]


class DocumentInputSerializer(StrictStringsMixin, serializers.Serializer):
    """JSON ``{title, content, format?}``, or multipart ``file`` with an optional ``title``."""

    title = serializers.CharField(max_length=300, required=False)
    content = serializers.CharField(required=False, trim_whitespace=False)
    format = serializers.ChoiceField(
        choices=[DocumentFormat.TEXT, DocumentFormat.MARKDOWN, DocumentFormat.HTML],
        default=DocumentFormat.TEXT,
    )
    file = serializers.FileField(required=False, allow_empty_file=False)

    def validate(self, attrs: dict) -> dict:
        has_file, has_content = "file" in attrs, "content" in attrs
        if has_file == has_content:
            raise serializers.ValidationError(
                {"content": ["Send either content (JSON) or a file (multipart), not both."]}
            )
        if has_content and not attrs.get("title"):
            raise serializers.ValidationError({"title": ["This field is required."]})
        return attrs


class DocumentSerializer(StrictStringsMixin, serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = [
            "id",
            "knowledge_base",
            "title",
            "content",
            "format",
            "size_bytes",
            "status",
            "failure_reason",
            "chunk_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [f for f in fields if f != "title"]


class DocumentSummarySerializer(DocumentSerializer):
    """The list form: everything but the text itself, which may be megabytes."""

    class Meta(DocumentSerializer.Meta):
        fields = [f for f in DocumentSerializer.Meta.fields if f != "content"]
        read_only_fields = [f for f in fields if f != "title"]


class TurnSerializer(StrictStringsMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "avatar"])
    text = serializers.CharField(max_length=2000)


class AskInputSerializer(StrictStringsMixin, serializers.Serializer):
    question = serializers.CharField(max_length=2000)
    history = TurnSerializer(many=True, required=False, max_length=20)


class CitationSerializer(serializers.Serializer):
    document = serializers.UUIDField()
    title = serializers.CharField()
    quote = serializers.CharField()


class AnswerSerializer(serializers.Serializer):
    answer = serializers.CharField(source="text")
    answered = serializers.BooleanField()
    citations = CitationSerializer(many=True)
    support = serializers.FloatField(help_text="0..1: how much of the question the answer covers")
    answerer = serializers.ChoiceField(choices=["offline", "llm"])


class GapSerializer(serializers.Serializer):
    question = serializers.CharField(help_text="The latest wording of the question")
    count = serializers.IntegerField()
    last_asked_at = serializers.DateTimeField()
    group_key = serializers.CharField(help_text="The content words shared by the group")
