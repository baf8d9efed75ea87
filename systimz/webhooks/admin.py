from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from systimz.orgs.admin_base import (
    OrgScopedAdmin,
    OrgScopedInline,
    ReadOnlyAdminMixin,
    member_org_id,
)
from systimz.webhooks import delivery, services
from systimz.webhooks.models import EventType, Webhook, WebhookAttempt, WebhookDelivery


class WebhookForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=EventType.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=list(EventType.values),
    )

    class Meta:
        model = Webhook
        fields = ["url", "events", "active", "description"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = delivery.url_problem(url)
        if problem is not None:
            raise forms.ValidationError(problem)
        return url

    def clean_events(self) -> list[str]:
        return services.normalise_events(self.cleaned_data["events"])


@admin.register(Webhook)
class WebhookAdmin(OrgScopedAdmin):
    """Endpoints. The signing secret is made here and shown once, in a message."""

    form = WebhookForm
    list_display = ["url", "event_list", "active", "masked_secret", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    readonly_fields = ["masked_secret", "key_id", "recent_deliveries", "created_at", "updated_at"]

    @admin.display(description="Events")
    def event_list(self, obj: Webhook) -> str:
        return ", ".join(obj.events or [])

    @admin.display(description="Signing secret")
    def masked_secret(self, obj: Webhook) -> str:
        return f"{delivery.SECRET_PREFIX}\u2026{obj.last4}" if obj.last4 else "\u2014"

    @admin.display(description="Deliveries")
    def recent_deliveries(self, obj: Webhook) -> str:
        if not obj.pk:
            return "\u2014"
        url = reverse("admin:webhooks_webhookdelivery_changelist") + f"?webhook={obj.pk}"
        return format_html('<a href="{}">Deliveries to this endpoint</a>', url)

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        secret = None
        if not change:
            if not request.user.is_superuser:
                obj.organisation_id = member_org_id(request)  # the secret's context binds it
            secret = services.generate_secret()
            obj.set_secret(secret)
        super().save_model(request, obj, form, change)
        if secret is not None:
            messages.warning(
                request,
                f"The signing secret is {secret} — copy it now: it is shown only this once.",
            )


class WebhookAttemptInline(ReadOnlyAdminMixin, OrgScopedInline):
    model = WebhookAttempt
    fields = ["number", "status_code", "error", "duration_ms", "created_at"]
    readonly_fields = fields
    ordering = ["number"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """The outbox: every event sent or to be sent, with its attempts. Read-only, but for
    "retry now"."""

    list_display = [
        "event_id",
        "type",
        "webhook",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    ]
    list_filter = ["status", "type"]
    list_select_related = ["organisation", "webhook"]
    search_fields = ["webhook__url"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    fields = [
        "webhook",
        "event_id",
        "type",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "updated_at",
        "pretty_body",
    ]
    readonly_fields = fields
    actions = ["retry_now"]

    @admin.display(description="Body")
    def pretty_body(self, obj: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.body, indent=2, ensure_ascii=False))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        try:
            wanted = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(event_id=wanted) | queryset.filter(pk=wanted), False

    @admin.action(description="Retry the selected deliveries now", permissions=["view"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = services.deliveries_retry_now(deliveries=queryset)
        self.message_user(
            request,
            f"Queued {report.queued} deliveries; skipped {report.skipped} "
            "(already delivered, or an attempt is in progress).",
        )
