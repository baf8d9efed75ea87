from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from systimz import errors
from systimz.api.viewsets import OrgScopedModelViewSet
from systimz.webhooks import services
from systimz.webhooks.api import serializers
from systimz.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery


class WebhookViewSet(OrgScopedModelViewSet):
    """Endpoints that receive the organisation's events (`session.started`, `session.ended`,
    `usage.recorded`, `limit.reached`) as signed `POST {id, type, created_at, organisation,
    data}`. The signing secret is in the create response only (and in `rotate-secret`'s). A
    failed delivery is retried with backoff, with the same `id`; verify `Systimz-Signature:
    t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` and deduplicate on `id`."""

    model = Webhook
    required_scopes = ("manage",)
    serializer_class = serializers.WebhookSerializer
    filterset_fields = ["active"]
    search_fields = ["url", "description"]
    ordering_fields = ["created_at", "url"]

    @extend_schema(
        request=serializers.WebhookSerializer,
        responses={201: serializers.WebhookCreatedSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.webhook_create(org=self.organisation, **data.validated_data)
        body = serializers.WebhookSerializer(issued.webhook).data | {"secret": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=DeliveryStatus.values,
                description="Only deliveries in this state",
            )
        ],
        responses=serializers.WebhookDeliverySerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        """Recent deliveries to this endpoint, newest first: the event, its state, how many
        attempts it took and what the last one got."""
        webhook = self.get_object()
        queryset = WebhookDelivery.objects.for_org(self.organisation).filter(webhook=webhook)
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in DeliveryStatus.values:
                raise errors.InvalidInput(
                    "Unknown delivery status.",
                    fields={"status": [f"One of {', '.join(DeliveryStatus.values)}."]},
                )
            queryset = queryset.filter(status=wanted)
        page = self.paginate_queryset(queryset.order_by("-created_at"))
        data = serializers.WebhookDeliverySerializer(page, many=True).data
        return self.get_paginated_response(data)

    @extend_schema(request=None, responses=serializers.WebhookCreatedSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """Replace the signing secret at once; the new one is in this response only. Every
        attempt from now on, retries included, is signed with it."""
        webhook = self.get_object()
        secret = services.webhook_rotate_secret(webhook=webhook)
        return Response(serializers.WebhookSerializer(webhook).data | {"secret": secret})
