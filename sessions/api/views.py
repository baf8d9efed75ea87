from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from avatars.models import Avatar
from sessions import lifecycle, relay
from sessions.api import serializers
from sessions.models import LIVE_STATUSES, AvatarSession
from systimz import errors
from systimz.api.viewsets import OrgScopedViewSet


class SessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgScopedViewSet):
    """Avatar sessions: start one with an avatar's slug, make it speak, interrupt it, keep it
    alive, stop it. `?status=active` lists the live ones."""

    model = AvatarSession
    required_scopes = ("sessions",)
    serializer_class = serializers.SessionSerializer
    filterset_fields = ["provider", "avatar_slug"]
    ordering_fields = ["created_at"]

    def scope_queryset(self, queryset: QuerySet) -> QuerySet:
        wanted = self.request.query_params.get("status") if self.request else None
        if wanted == "active":
            queryset = queryset.filter(status__in=LIVE_STATUSES)
        elif wanted:
            queryset = queryset.filter(status=wanted)
        return queryset.select_related("credential")

    def get_serializer_class(self) -> Any:
        return (
            serializers.SessionDetailSerializer
            if self.action == "retrieve"
            else serializers.SessionSerializer
        )

    @extend_schema(
        request=serializers.SessionCreateSerializer, responses={201: serializers.SessionSerializer}
    )
    def create(self, request: Request) -> Response:
        data = serializers.SessionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        avatar = (
            Avatar.objects.for_org(self.organisation)
            .select_related("organisation", "voice_preset", "knowledge_base")
            .filter(slug=data.validated_data["avatar"])
            .first()
        )
        if avatar is None:
            raise errors.InvalidInput("No such avatar.", fields={"avatar": ["Not found."]})
        session = lifecycle.session_open(
            org=self.organisation,
            avatar=avatar,
            quality=data.validated_data.get("quality"),
            end_user=data.validated_data.get("end_user", ""),
        )
        return Response(serializers.SessionSerializer(session).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=serializers.SpeakSerializer, responses={202: None})
    @action(detail=True, methods=["post"])
    def speak(self, request: Request, pk: str | None = None) -> Response:
        session = self.get_object()
        data = serializers.SpeakSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = lifecycle.session_speak(session=session, **data.validated_data)
        return Response({"task_id": result.task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: None})
    @action(detail=True, methods=["post"])
    def interrupt(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.session_control(session=self.get_object(), action="interrupt")
        return Response({"status": "interrupted"})

    @extend_schema(request=None, responses={200: None})
    @action(detail=True, methods=["post"], url_path="keep-alive")
    def keep_alive(self, request: Request, pk: str | None = None) -> Response:
        lifecycle.session_control(session=self.get_object(), action="keep_alive")
        return Response({"status": "alive"})

    @extend_schema(request=None, responses={200: serializers.SessionSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        session = lifecycle.session_stop(session=self.get_object())
        return Response(serializers.SessionSerializer(session).data)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Events after this seq")],
        responses=serializers.EventSerializer(many=True),
    )
    # One session's log, not a list of sessions: no session filters, no pagination.
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def events(self, request: Request, pk: str | None = None) -> Response:
        session = self.get_object()
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            raise errors.InvalidInput(
                "after must be a number.", fields={"after": ["A number."]}
            ) from None
        messages, _ = relay.events_after(str(session.pk), after)
        return Response(messages)
