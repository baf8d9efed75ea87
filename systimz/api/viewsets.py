"""Tenancy, structurally: the one base for every organisation-owned resource.

``OrgScopedViewSet`` owns ``get_queryset`` and ``get_object``: the queryset always starts
from ``Model.objects.for_org(<the key's organisation>)`` and a subclass that tries to
override either (or sets a class-level ``queryset``) fails at import time. Subclasses narrow
through :meth:`scope_queryset`. An id of another organisation therefore simply does not
exist, and answers exactly like a random id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from rest_framework import mixins, viewsets

from systimz import errors
from systimz.orgs.models import Organisation, OrgOwnedModel

_SEALED = ("get_queryset", "get_object", "queryset")
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


class OrgScopedViewSet(viewsets.GenericViewSet):
    model: ClassVar[type[OrgOwnedModel]]
    required_scopes: ClassVar[tuple[str, ...]]
    lookup_value_regex = UUID_PATTERN

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _SEALED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} may not define {name}: tenancy lives in OrgScopedViewSet; "
                    "narrow with scope_queryset()"
                )

    @property
    def organisation(self) -> Organisation:
        return self.request.auth.organisation

    def get_queryset(self) -> models.QuerySet:  # sealed
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request
            return self.model.objects.none()
        queryset = self.model.objects.for_org(self.organisation)
        return self.scope_queryset(queryset)

    def get_object(self) -> Any:  # sealed
        queryset = self.filter_queryset(self.get_queryset())
        lookup = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        try:
            obj = queryset.get(**{self.lookup_field: lookup})
        except (self.model.DoesNotExist, ValueError, TypeError):
            raise errors.NotFound() from None
        self.check_object_permissions(self.request, obj)
        return obj

    def scope_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        """Hook: narrow (filter, select_related, annotate) the organisation's queryset."""
        return queryset

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if self.request is not None and self.request.auth is not None:
            context["organisation"] = self.organisation
        return context


class OrgScopedModelViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    OrgScopedViewSet,
):
    """List, create, retrieve, update (PUT and PATCH) and delete within the organisation."""

    def perform_create(self, serializer: Any) -> None:
        # Here, not on OrgScopedViewSet: CreateModelMixin's own perform_create precedes it.
        serializer.save(organisation=self.organisation)
