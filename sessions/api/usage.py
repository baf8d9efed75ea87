"""``GET /api/v1/usage/``: the usage ledger for billing, as JSON or CSV (identical numbers)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions.usage import REPORT_FIELDS, usage_report
from systimz import errors

MAX_DAYS = 400
GROUPS = ("day", "avatar", "quality")


class UsageCSVRenderer(BaseRenderer):
    """The report as CSV: a header, one line per group, then a ``total`` line. An error is
    still the contract's JSON envelope."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        response = (renderer_context or {}).get("response")
        if not isinstance(data, dict) or "rows" not in data:
            if response is not None:
                response["Content-Type"] = "application/json"
            return json.dumps(data).encode()
        return report_csv(data).encode()


def report_csv(report: dict[str, Any]) -> str:
    key = report["group_by"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key, *REPORT_FIELDS])
    for row in report["rows"]:
        writer.writerow([row[key], *(row[f] for f in REPORT_FIELDS)])
    writer.writerow(["total", *(report["totals"][f] for f in REPORT_FIELDS)])
    return buffer.getvalue()


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise errors.InvalidInput(
            f"{name} must be a date, YYYY-MM-DD.", fields={name: ["A date, YYYY-MM-DD."]}
        ) from None


class UsageView(APIView):
    """The organisation's usage by UTC day (of a session's end), avatar or quality, `from` to
    `to` inclusive; `?format=csv` or `Accept: text/csv` for CSV. Needs scope `billing`."""

    required_scopes = ("billing",)
    renderer_classes = [JSONRenderer, UsageCSVRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="First UTC day, YYYY-MM-DD"),
            OpenApiParameter("to", str, description="Last UTC day (inclusive), YYYY-MM-DD"),
            OpenApiParameter("group_by", str, enum=list(GROUPS)),
        ],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        today = timezone.now().date()
        start = _day(request, "from", today.replace(day=1))
        end = _day(request, "to", today)
        if end < start:
            raise errors.InvalidInput("to is before from.", fields={"to": ["Before from."]})
        if end - start > timedelta(days=MAX_DAYS):
            raise errors.InvalidInput(
                f"At most {MAX_DAYS} days at once.", fields={"to": ["Range too long."]}
            )
        group_by = request.query_params.get("group_by", "day")
        if group_by not in GROUPS:
            raise errors.InvalidInput(
                "group_by is day, avatar or quality.", fields={"group_by": ["Invalid."]}
            )
        report = usage_report(
            org=request.auth.organisation,
            start=start,
            end=end,
            group_by=group_by,  # type: ignore[arg-type]
        )
        response = Response(report.as_dict())
        if request.accepted_renderer.format == "csv":
            name = f"usage-{report.organisation}-{start}-{end}-{group_by}.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
