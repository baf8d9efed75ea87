from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html_join

from sessions import lifecycle
from sessions.api.usage import report_csv
from sessions.models import LIVE_STATUSES, AvatarSession, ProviderOrphan, SessionEvent, UsageRecord
from sessions.usage import usage_report
from systimz import errors
from systimz.orgs.admin_base import (
    OrgScopedAdmin,
    OrgScopedInline,
    ReadOnlyAdminMixin,
    _is_operator,
    member_org_id,
)
from systimz.orgs.models import Organisation


class SessionEventInline(ReadOnlyAdminMixin, OrgScopedInline):
    model = SessionEvent
    fields = ["seq", "type", "payload", "created_at"]
    readonly_fields = fields
    ordering = ["seq"]


@admin.register(AvatarSession)
class AvatarSessionAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """Sessions are the record of what ran: read-only here."""

    list_display = [
        "pk",
        "avatar_slug",
        "provider",
        "quality",
        "status",
        "close_reason",
        "duration",
        "created_at",
        "stop_pending",
    ]
    list_filter = ["status", "provider", "close_reason", "stop_pending"]  # stop_pending: see it
    search_fields = ["avatar_slug", "provider_session_id", "end_user"]
    date_hierarchy = "created_at"
    inlines = [SessionEventInline]
    readonly_fields = [
        "transcript",
        *(
            f.name
            for f in AvatarSession._meta.get_fields()
            if f.concrete and f.name != "organisation"
        ),
    ]

    @admin.display(description="Duration")
    def duration(self, obj: AvatarSession) -> str:
        if obj.started_at is None:
            return "—"
        seconds = int(((obj.ended_at or timezone.now()) - obj.started_at).total_seconds())
        return f"{seconds // 60}:{seconds % 60:02d}"

    @admin.display(description="Transcript")
    def transcript(self, obj: AvatarSession) -> str:
        from sessions.api.serializers import SessionDetailSerializer

        lines = SessionDetailSerializer().get_transcript(obj)
        if not lines:
            return "Nothing said yet."
        return format_html_join(
            "",
            "<p><strong>{}</strong> <small>{}</small><br>{}</p>",
            ((line["who"], line["at"], line["text"]) for line in lines),
        )

    actions = ["stop_now"]

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


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """The usage ledger (append-only), and the month's report with its CSV."""

    list_display = [
        "ended_at",
        "kind",
        "avatar_slug",
        "quality",
        "provider",
        "session_seconds",
        "billable_minutes",
        "speaking_seconds",
        "tasks",
        "close_reason",
    ]
    list_filter = ["kind", "provider", "quality", "close_reason"]
    search_fields = ["avatar_slug", "end_user", "session__id"]
    date_hierarchy = "ended_at"
    change_list_template = "admin/sessions/usagerecord/change_list.html"

    def get_urls(self) -> list[Any]:
        report = self.admin_site.admin_view(self.report_view)
        return [path("report/", report, name="avatar_sessions_usage_report"), *super().get_urls()]

    def _organisation(self, request: HttpRequest) -> Organisation | None:
        if _is_operator(request):
            slug = request.GET.get("org")
            queryset = Organisation.objects.order_by("slug")
            return (queryset.filter(slug=slug) if slug else queryset).first()
        org_id = member_org_id(request)
        return Organisation.objects.filter(pk=org_id).first() if org_id else None

    def report_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        org = self._organisation(request)
        today = timezone.now().date()
        try:
            month = date.fromisoformat(request.GET.get("month", "") + "-01")
        except ValueError:
            month = today.replace(day=1)
        end = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
        end = end - timedelta(days=1)
        report = (
            usage_report(org=org, start=month, end=end, group_by="day").as_dict() if org else None
        )
        if report is not None and request.GET.get("format") == "csv":
            response = HttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
            name = f"usage-{org.slug}-{month:%Y-%m}.csv" if org else "usage.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        peak = max((r["billable_minutes"] for r in report["rows"]), default=0) if report else 0
        bars = [
            {**row, "height": round(100 * row["billable_minutes"] / peak) if peak else 0}
            for row in (report["rows"] if report else [])
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Usage {month:%B %Y}" + (f" — {org.name}" if org else ""),
            "organisation": org,
            "organisations": Organisation.objects.order_by("slug") if _is_operator(request) else [],
            "report": report,
            "bars": bars,
            "month": f"{month:%Y-%m}",
            "budget": org.limits.monthly_minutes if org else None,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/sessions/usage_report.html", context)


@admin.register(ProviderOrphan)
class ProviderOrphanAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """Sessions found running at a provider without a live row here, and what was done."""

    list_display = ["provider_session_id", "provider", "stopped", "attempts", "created_at"]
    list_filter = ["provider", "stopped"]
