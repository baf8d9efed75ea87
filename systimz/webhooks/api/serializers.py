from __future__ import annotations

from typing import Any

from rest_framework import serializers

from systimz.api.serializers import StrictStringsMixin
from systimz.webhooks import delivery, services
from systimz.webhooks.models import EventType, Webhook, WebhookDelivery


class WebhookSerializer(StrictStringsMixin, serializers.ModelSerializer):
    url = serializers.URLField(
        max_length=500, help_text="https:// (plain http only to hosts the operator allows)"
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices),
        allow_empty=False,
        max_length=20,
        help_text="The event types to receive; at least one.",
    )

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "active", "description", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_url(self, value: str) -> str:
        problem = delivery.url_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return services.normalise_events(value)

    def create(self, validated_data: dict[str, Any]) -> Webhook:  # pragma: no cover - the view
        raise NotImplementedError("webhooks are created by services.webhook_create")

    def update(self, instance: Webhook, validated_data: dict[str, Any]) -> Webhook:
        return services.webhook_update(webhook=instance, **validated_data)


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (`whsec_…`). Shown only in this response: store it now.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    # A plain string here: the choice set is documented once, on Webhook.events.
    type = serializers.CharField(read_only=True, help_text="The event type")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "type",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
            "next_attempt_at",
        ]
        read_only_fields = fields
