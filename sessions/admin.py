from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from sessions import lifecycle
from sessions.models import LIVE_STATUSES, AvatarSession, SessionEvent
from systimz import errors
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

    actions = ["stop_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Stop the selected sessions now", permissions=["view"])
    def stop_now(self, request: HttpRequest, queryset: Any) -> None:
        stopped = 0
        for session in queryset.filter(status__in=LIVE_STATUSES):
            try:
                lifecycle.session_stop(session=session)
            except errors.SystimzError as exc:
                self.message_user(request, f"{session.pk}: {exc.message}", messages.ERROR)
                continue
            stopped += 1
        self.message_user(request, f"Stopped {stopped} session(s).")
