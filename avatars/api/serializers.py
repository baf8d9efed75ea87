from __future__ import annotations

from typing import Any

from rest_framework import serializers

from avatars.models import Avatar, ChatMode, Provider, VoicePreset
from avatars.origins import normalise_origin
from knowledge.models import KnowledgeBase
from systimz.api.serializers import OrgRelatedField, OrgUniqueFieldsMixin, StrictStringsMixin


class VoicePresetSerializer(StrictStringsMixin, OrgUniqueFieldsMixin, serializers.ModelSerializer):
    org_unique_fields = ("name",)

    class Meta:
        model = VoicePreset
        fields = ["id", "name", "voice_id", "rate", "emotion", "language", "created_at"]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"rate": {"min_value": 0.5, "max_value": 1.5}}


class OriginField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        try:
            return normalise_origin(super().to_internal_value(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class AvatarSerializer(StrictStringsMixin, OrgUniqueFieldsMixin, serializers.ModelSerializer):
    org_unique_fields = ("slug",)
    voice_preset = OrgRelatedField(VoicePreset, required=False, allow_null=True)
    knowledge_base = OrgRelatedField(KnowledgeBase, required=False, allow_null=True)
    allowed_origins = serializers.ListField(
        child=OriginField(max_length=300), required=False, max_length=50
    )

    class Meta:
        model = Avatar
        fields = [
            "id",
            "slug",
            "name",
            "kind",
            "provider",
            "provider_avatar_id",
            "voice_preset",
            "knowledge_base",
            "chat_mode",
            "provider_knowledge_id",
            "quality",
            "language",
            "published",
            "allowed_origins",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_allowed_origins(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))  # de-duplicated, order kept

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        provider = attrs.get("provider", getattr(self.instance, "provider", Provider.LOCAL))
        avatar_id = attrs.get(
            "provider_avatar_id", getattr(self.instance, "provider_avatar_id", "")
        )
        if provider != Provider.LOCAL and not avatar_id:
            raise serializers.ValidationError(
                {"provider_avatar_id": [f"Required for the {provider} provider."]}
            )
        chat_mode = attrs.get("chat_mode", getattr(self.instance, "chat_mode", ChatMode.SYSTIMZ))
        if provider == Provider.LOCAL and chat_mode == ChatMode.PROVIDER:
            raise serializers.ValidationError(
                {"chat_mode": ["The local avatar has no language model: use 'systimz'."]}
            )
        return attrs
