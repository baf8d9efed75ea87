from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from knowledge import selectors, services
from knowledge.answerers import Turn
from knowledge.api import serializers
from knowledge.errors import DocumentTooLarge
from knowledge.models import Document, KnowledgeBase, LLMEndpoint
from systimz import errors
from systimz.api.viewsets import OrgScopedModelViewSet, OrgScopedViewSet


class LLMEndpointViewSet(OrgScopedModelViewSet):
    """OpenAI-compatible chat-completions endpoints a knowledge base may answer with. The key
    is write-only (responses show `last4`) and encrypted at rest."""

    model = LLMEndpoint
    required_scopes = ("manage",)
    serializer_class = serializers.LLMEndpointSerializer
    search_fields = ["name", "model"]


class KnowledgeBaseViewSet(OrgScopedModelViewSet):
    """Knowledge bases: the instructions and opening text an avatar answers with, and the
    documents it answers from."""

    model = KnowledgeBase
    required_scopes = ("manage",)
    serializer_class = serializers.KnowledgeBaseSerializer
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]

    def scope_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset.select_related("llm_endpoint", "organisation")

    @extend_schema(request=serializers.AskInputSerializer, responses=serializers.AnswerSerializer)
    @action(detail=True, methods=["post"], url_path="ask")
    def ask(self, request: Request, pk: str | None = None) -> Response:
        """The test console: answer a question from this knowledge base, with citations, or
        refuse with its fallback text. Refused and weakly supported questions become gaps."""
        kb = self.get_object()
        data = serializers.AskInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        history = [
            Turn(role=t["role"], text=t["text"]) for t in data.validated_data.get("history", [])
        ]
        answer = services.knowledge_ask(
            kb=kb, question=data.validated_data["question"], history=history, source="console"
        )
        return Response(serializers.AnswerSerializer(answer).data)

    @extend_schema(responses=serializers.GapSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="gaps")
    def gaps(self, request: Request, pk: str | None = None) -> Response:
        """Questions the knowledge base could not answer well, grouped by similar wording,
        most asked first."""
        groups = selectors.gap_groups(kb=self.get_object())
        page = self.paginate_queryset(groups)
        return self.get_paginated_response(serializers.GapSerializer(page, many=True).data)


_KB_PARAM = OpenApiParameter(
    "knowledge_base_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Knowledge base id"
)


@extend_schema_view(
    list=extend_schema(parameters=[_KB_PARAM], responses=serializers.DocumentSummarySerializer),
    retrieve=extend_schema(parameters=[_KB_PARAM]),
    partial_update=extend_schema(parameters=[_KB_PARAM]),
    destroy=extend_schema(parameters=[_KB_PARAM]),
)
class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    OrgScopedViewSet,
):
    """Documents of one knowledge base. Create with JSON `{title, content, format?}` (text,
    markdown or html) or a multipart `file` (.txt, .md, .html, .pdf; up to 10 MB). Uploading
    the same text again returns the existing document with 200. Small documents are `ready`
    at once; larger ones are `pending` until ingested in the background (`failed` with the
    reason if that fails). Only the title can be changed afterwards."""

    model = Document
    required_scopes = ("manage",)
    serializer_class = serializers.DocumentSerializer
    filterset_fields = ["status", "format"]
    search_fields = ["title"]
    ordering_fields = ["created_at", "title"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @cached_property
    def knowledge_base(self) -> KnowledgeBase:
        try:
            return KnowledgeBase.objects.for_org(self.organisation).get(
                pk=self.kwargs["knowledge_base_id"]
            )
        except (KnowledgeBase.DoesNotExist, ValueError):
            raise errors.NotFound() from None

    def scope_queryset(self, queryset: QuerySet) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):
            return queryset
        return queryset.filter(knowledge_base=self.knowledge_base)

    def get_parsers(self) -> list[BaseParser]:
        """JSON everywhere (DEFAULT_PARSER_CLASSES), and multipart for the upload too. DRF
        builds the parsers before it sets ``action``, so decide by route: the collection route
        takes a body only for ``create``."""
        if getattr(self, "action_map", {}).get("post") == "create":
            return [JSONParser(), MultiPartParser()]
        return super().get_parsers()

    def get_serializer_class(self) -> Any:
        if self.action == "list":
            return serializers.DocumentSummarySerializer
        return serializers.DocumentSerializer

    @extend_schema(
        parameters=[_KB_PARAM],
        request={
            "application/json": serializers.DocumentInputSerializer,
            "multipart/form-data": serializers.DocumentInputSerializer,
        },
        responses={201: serializers.DocumentSerializer, 200: serializers.DocumentSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        knowledge_base = self.knowledge_base
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:  # refuse before reading the body
            raise DocumentTooLarge()
        data = serializers.DocumentInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if "file" in values:
            text = services.document_text_from_upload(values["file"], title=values.get("title"))
        else:
            text = services.document_text_from_json(
                title=values["title"], content=values["content"], fmt=values["format"]
            )
        document, created = services.document_create(knowledge_base=knowledge_base, text=text)
        return Response(
            serializers.DocumentSerializer(document).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )
