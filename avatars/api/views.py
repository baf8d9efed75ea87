from __future__ import annotations

from django.db.models import QuerySet

from avatars.api import serializers
from avatars.models import Avatar, VoicePreset
from systimz.api.viewsets import OrgScopedModelViewSet


class VoicePresetViewSet(OrgScopedModelViewSet):
    """Voices an avatar speaks with: the provider's voice id, a rate from 0.5 to 1.5 and an
    optional emotion."""

    model = VoicePreset
    required_scopes = ("manage",)
    serializer_class = serializers.VoicePresetSerializer
    filterset_fields = ["language", "emotion"]
    search_fields = ["name", "voice_id"]
    ordering_fields = ["name", "created_at"]


class AvatarViewSet(OrgScopedModelViewSet):
    """The organisation's avatars. A published avatar can be talked to on its talk page."""

    model = Avatar
    required_scopes = ("manage",)
    serializer_class = serializers.AvatarSerializer
    filterset_fields = ["provider", "published", "quality", "kind", "slug"]
    search_fields = ["slug", "name"]
    ordering_fields = ["slug", "name", "created_at"]

    def scope_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("voice_preset", "knowledge_base")
