from __future__ import annotations

from rest_framework import serializers

from knowledge.models import Document, DocumentFormat, KnowledgeBase
from systimz.api.serializers import OrgUniqueFieldsMixin


class KnowledgeBaseSerializer(OrgUniqueFieldsMixin, serializers.ModelSerializer):
    org_unique_fields = ("name",)

    class Meta:
        model = KnowledgeBase
        fields = ["id", "name", "instructions", "opening_text", "language", "created_at"]
        read_only_fields = ["id", "created_at"]


class DocumentInputSerializer(serializers.Serializer):
    """JSON ``{title, content, format?}``, or multipart ``file`` with an optional ``title``."""

    title = serializers.CharField(max_length=300, required=False)
    content = serializers.CharField(required=False, trim_whitespace=False)
    format = serializers.ChoiceField(choices=DocumentFormat.choices, default=DocumentFormat.TEXT)
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


class DocumentSerializer(serializers.ModelSerializer):
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = [f for f in fields if f != "title"]


class DocumentSummarySerializer(DocumentSerializer):
    """The list form: everything but the text itself, which may be megabytes."""

    class Meta(DocumentSerializer.Meta):
        fields = [f for f in DocumentSerializer.Meta.fields if f != "content"]
        read_only_fields = [f for f in fields if f != "title"]
