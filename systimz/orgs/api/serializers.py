from __future__ import annotations

from typing import Any

from rest_framework import serializers

from systimz.api.serializers import StrictStringsMixin
from systimz.orgs import services
from systimz.orgs.models import ApiKey, Plan, ProviderCredential, Scope


class ApiKeyInputSerializer(StrictStringsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False, max_length=3
    )


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "scopes", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret. Shown only here.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class ProviderCredentialSerializer(StrictStringsMixin, serializers.ModelSerializer):
    api_key = serializers.CharField(
        write_only=True, max_length=500, trim_whitespace=True, style={"input_type": "password"}
    )

    class Meta:
        model = ProviderCredential
        fields = ["id", "provider", "plan", "api_key", "last4", "created_at", "updated_at"]
        read_only_fields = ["id", "last4", "created_at", "updated_at"]

    def validate_provider(self, value: str) -> str:
        if self.instance is not None and value != self.instance.provider:
            raise serializers.ValidationError("The provider of a credential cannot change.")
        return value

    def create(self, validated_data: dict[str, Any]) -> ProviderCredential:
        return services.provider_credential_create(
            org=validated_data["organisation"],
            provider=validated_data["provider"],
            api_key=validated_data["api_key"],
            plan=validated_data.get("plan", Plan.TRIAL),
        )

    def update(self, instance: ProviderCredential, validated_data: dict[str, Any]) -> Any:
        return services.provider_credential_update(
            credential=instance,
            api_key=validated_data.get("api_key"),
            plan=validated_data.get("plan"),
        )


class LimitsSerializer(serializers.Serializer):
    concurrent_sessions = serializers.IntegerField()
    session_seconds = serializers.IntegerField()
    idle_timeout_seconds = serializers.IntegerField()
    monthly_minutes = serializers.IntegerField(allow_null=True, help_text="null: unlimited")


class CurrentUsageSerializer(serializers.Serializer):
    active_sessions = serializers.IntegerField()
    minutes_this_month = serializers.IntegerField()


class OrganisationSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    plan = serializers.ChoiceField(choices=Plan.choices)
    limits = LimitsSerializer()
    current = CurrentUsageSerializer()
