from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from avatars.models import Avatar, VoicePreset
from systimz.orgs.admin_base import OrgScopedAdmin


@admin.register(VoicePreset)
class VoicePresetAdmin(OrgScopedAdmin):
    list_display = ["name", "voice_id", "rate", "emotion", "language", "created_at"]
    list_filter = ["emotion", "language"]
    search_fields = ["name", "voice_id"]


@admin.register(Avatar)
class AvatarAdmin(OrgScopedAdmin):
    list_display = ["slug", "name", "provider", "kind", "quality", "published", "updated_at"]
    list_filter = ["provider", "kind", "quality", "published"]
    search_fields = ["slug", "name", "provider_avatar_id"]
    list_select_related = ["organisation", "voice_preset", "knowledge_base"]
    readonly_fields = ["talk_page", "embed_code", "created_at", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}

    @admin.display(description="Talk page")
    def talk_page(self, obj: Avatar) -> str:
        if not obj.pk or not obj.published:
            return "Publish the avatar to give it a talk page."
        url = reverse("talk-page", args=[obj.organisation.slug, obj.slug])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.display(description="Embed on your site")
    def embed_code(self, obj: Avatar) -> str:
        if not obj.pk or not obj.published:
            return "Publish the avatar to embed it."
        path = reverse("talk-embed", args=[obj.organisation.slug, obj.slug])
        base = settings.PUBLIC_BASE_URL.rstrip("/")
        snippet = f'<script src="{base}{path}" async></script>'
        return format_html(
            "<code>{}</code><p class='help'>Paste it where the player should appear. Pages "
            "outside the avatar's allowed origins cannot show it.</p>",
            snippet,
        )
