from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from knowledge import selectors, services
from knowledge.models import (
    Chunk,
    Document,
    KnowledgeBase,
    LLMEndpoint,
    UnansweredQuestion,
)
from systimz.orgs.admin_base import (
    EncryptedKeyAdmin,
    EncryptedKeyForm,
    OrgScopedAdmin,
    OrgScopedInline,
)


class DocumentInline(OrgScopedInline):
    model = Document
    fields = ["title", "format", "size_bytes", "status", "chunk_count", "created_at"]
    readonly_fields = ["format", "size_bytes", "status", "chunk_count", "created_at"]
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # documents are added on their own page or through the API


class AskForm(forms.Form):
    question = forms.CharField(max_length=2000, widget=forms.TextInput(attrs={"size": 80}))


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(OrgScopedAdmin):
    list_display = ["name", "language", "llm_endpoint", "created_at", "updated_at"]
    list_filter = ["language"]
    search_fields = ["name", "instructions"]
    readonly_fields = ["test_console", "top_gaps"]
    inlines = [DocumentInline]

    def get_urls(self) -> list[Any]:
        ask = self.admin_site.admin_view(self.ask_view)
        return [
            path("<uuid:pk>/ask/", ask, name="knowledge_knowledgebase_ask"),
            *super().get_urls(),
        ]

    @admin.display(description="Test console")
    def test_console(self, obj: KnowledgeBase) -> str:
        if not obj.pk:
            return "Save the knowledge base first."
        url = reverse("admin:knowledge_knowledgebase_ask", args=[obj.pk])
        return format_html('<a href="{}">Ask this knowledge base a question</a>', url)

    @admin.display(description="Most asked unanswered questions")
    def top_gaps(self, obj: KnowledgeBase) -> str:
        if not obj.pk:
            return "-"
        groups = list(selectors.gap_groups(kb=obj)[:10])
        if not groups:
            return "None yet."
        rows = format_html_join(
            "", "<li>{} &times; {}</li>", ((g["count"], g["question"]) for g in groups)
        )
        return format_html("<ul>{}</ul>", rows)

    def ask_view(self, request: HttpRequest, pk: Any) -> HttpResponse:
        kb = self.get_queryset(request).filter(pk=pk).first()
        if kb is None or not self.has_view_permission(request, kb):
            raise Http404("No such knowledge base")
        form = AskForm(request.POST or None)
        answer = None
        if request.method == "POST" and form.is_valid():
            answer = services.knowledge_ask(
                kb=kb, question=form.cleaned_data["question"], source="admin"
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Ask {kb.name}",
            "opts": self.model._meta,
            "original": kb,
            "form": form,
            "answer": answer,
        }
        return TemplateResponse(request, "admin/knowledge/ask.html", context)


@admin.register(Document)
class DocumentAdmin(OrgScopedAdmin):
    list_display = [
        "title",
        "knowledge_base",
        "format",
        "size_bytes",
        "status",
        "chunk_count",
        "created_at",
    ]
    list_filter = ["status", "format"]
    search_fields = ["title"]
    list_select_related = ["organisation", "knowledge_base"]
    readonly_fields = [
        "size_bytes",
        "content_hash",
        "status",
        "failure_reason",
        "chunk_count",
        "created_at",
    ]

    def save_model(self, request: HttpRequest, obj: Document, form: Any, change: bool) -> None:
        services.document_set_content(obj, obj.content)
        super().save_model(request, obj, form, change)
        services.document_ingest(document=obj)


@admin.register(Chunk)
class ChunkAdmin(OrgScopedAdmin):
    list_display = ["document", "position", "heading", "ts_config"]
    list_select_related = ["organisation", "document"]
    search_fields = ["heading", "text"]
    readonly_fields = ["knowledge_base", "document", "position", "heading", "text", "ts_config"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # chunks come from ingestion

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UnansweredQuestion)
class UnansweredQuestionAdmin(OrgScopedAdmin):
    list_display = [
        "question",
        "knowledge_base",
        "reason",
        "support",
        "source",
        "session_id",
        "created_at",
    ]
    list_filter = ["reason", "source", "created_at"]
    search_fields = ["question", "group_key"]
    list_select_related = ["organisation", "knowledge_base"]
    readonly_fields = [
        "knowledge_base",
        "question",
        "group_key",
        "reason",
        "support",
        "source",
        "session_id",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class LLMEndpointForm(EncryptedKeyForm):
    base_url = forms.URLField(max_length=300, assume_scheme="https")

    class Meta:
        model = LLMEndpoint
        fields = ["name", "base_url", "model", "timeout_seconds"]


@admin.register(LLMEndpoint)
class LLMEndpointAdmin(EncryptedKeyAdmin):
    form = LLMEndpointForm
    list_display = ["name", "base_url", "model", "masked_key", "updated_at"]
    search_fields = ["name", "model"]
