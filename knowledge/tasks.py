"""Celery shells for knowledge: take ids, load inside the organisation, call one service."""

from __future__ import annotations

from celery import shared_task

from knowledge import services
from knowledge.models import Document


@shared_task(name="knowledge.ingest_document", acks_late=True, time_limit=600, soft_time_limit=540)
def ingest_document(org_id: str, document_id: str) -> str:
    """Chunk and index one document; safe to deliver twice."""
    document = Document.objects.filter(organisation_id=org_id, pk=document_id).first()
    if document is None:
        return "missing"
    return services.document_ingest(document=document).status
