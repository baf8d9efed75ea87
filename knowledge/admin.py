from __future__ import annotations

from django.contrib import admin

from knowledge import services
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from systimz.orgs.admin_base import OrgScopedAdmin, OrgScopedInline


class DocumentInline(OrgScopedInline):
    model = Document
    fields = ["title", "format", "size_bytes", "status", "created_at"]
    readonly_fields = ["format", "size_bytes", "status", "created_at"]
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # documents are added on their own page (text needs normalising)


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(OrgScopedAdmin):
    list_display = ["name", "language", "created_at", "updated_at"]
    search_fields = ["name", "instructions"]
    inlines = [DocumentInline]


@admin.register(Document)
class DocumentAdmin(OrgScopedAdmin):
    list_display = ["title", "knowledge_base", "format", "size_bytes", "status", "created_at"]
    list_filter = ["status", "format"]
    search_fields = ["title"]
    list_select_related = ["organisation", "knowledge_base"]
    readonly_fields = ["size_bytes", "content_hash", "status", "failure_reason", "created_at"]

    def save_model(self, request, obj, form, change) -> None:  # type: ignore[no-untyped-def]
        services.document_set_content(obj, obj.content)
        if not change:
            obj.status = DocumentStatus.READY
        super().save_model(request, obj, form, change)
