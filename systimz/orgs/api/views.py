from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from systimz.api.viewsets import OrgScopedModelViewSet, OrgScopedViewSet
from systimz.orgs import selectors, services
from systimz.orgs.api import serializers
from systimz.orgs.models import ApiKey, ProviderCredential


class ApiKeyViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, OrgScopedViewSet
):
    """API keys of the organisation. The secret is in the create response only; `DELETE`
    revokes (idempotent), and a revoked key stays listed with `revoked_at`."""

    model = ApiKey
    required_scopes = ("manage",)
    serializer_class = serializers.ApiKeySerializer
    filterset_fields = ["name"]
    search_fields = ["name", "prefix"]
    ordering_fields = ["created_at", "name", "last_used_at"]

    @extend_schema(
        request=serializers.ApiKeyInputSerializer,
        responses={201: serializers.ApiKeyCreatedSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = serializers.ApiKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.api_key_create(org=self.organisation, **data.validated_data)
        body = serializers.ApiKeySerializer(issued.api_key).data | {"key": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiKey) -> None:
        services.api_key_revoke(api_key=instance)


class ProviderCredentialViewSet(OrgScopedModelViewSet):
    """Keys for HeyGen and LiveAvatar, one per provider. `api_key` is write-only; responses
    show its last four characters."""

    model = ProviderCredential
    required_scopes = ("manage",)
    serializer_class = serializers.ProviderCredentialSerializer
    filterset_fields = ["provider", "plan"]

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if self.action in ("update",):
            kwargs["partial"] = True  # the key need not be resent to change the plan
        return super().get_serializer(*args, **kwargs)


class OrganisationView(APIView):
    """The caller's organisation: its plan, limits and what it is using now."""

    required_scopes = ("manage", "billing")

    @extend_schema(responses=serializers.OrganisationSerializer)
    def get(self, request: Request) -> Response:
        overview = selectors.organisation_overview(org=request.auth.organisation)
        return Response(serializers.OrganisationSerializer(overview).data)
