"""Reads for knowledge."""

from __future__ import annotations

from django.db.models import Count, Max, OuterRef, QuerySet, Subquery

from knowledge.models import KnowledgeBase, UnansweredQuestion


def gap_groups(*, kb: KnowledgeBase) -> QuerySet:
    """Unanswered questions of ``kb`` grouped by similar wording, most asked first: rows of
    ``{group_key, question (the latest wording), count, last_asked_at}``."""
    questions = UnansweredQuestion.objects.for_org(kb.organisation).filter(knowledge_base=kb)
    latest = questions.filter(group_key=OuterRef("group_key")).order_by("-created_at")
    return (
        questions.values("group_key")
        .annotate(
            count=Count("id"),
            last_asked_at=Max("created_at"),
            question=Subquery(latest.values("question")[:1]),
        )
        .order_by("-count", "-last_asked_at", "group_key")
    )
