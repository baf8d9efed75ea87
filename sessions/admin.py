from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from sessions.models import AvatarSession, SessionEvent
from systimz.orgs.admin_base import OrgScopedAdmin, OrgScopedInline


class SessionEventInline(OrgScopedInline):
    model = SessionEvent
    fields = ["seq", "type", "payload", "created_at"]
    readonly_fields = fields
    ordering = ["seq"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AvatarSession)
class AvatarSessionAdmin(OrgScopedAdmin):
    """Sessions are the record of what ran: read-only here."""

    list_display = [
        "pk",
        "avatar_slug",
        "provider",
        "quality",
        "status",
        "close_reason",
        "created_at",
        "ended_at",
    ]
    list_filter = ["status", "provider", "close_reason", "stop_pending"]
    search_fields = ["avatar_slug", "provider_session_id", "end_user"]
    date_hierarchy = "created_at"
    inlines = [SessionEventInline]
    readonly_fields = [
        f.name for f in AvatarSession._meta.get_fields() if f.concrete and f.name != "organisation"
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
