from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from knowledge.models import Document
from knowledge.services import document_ingest


class Command(BaseCommand):
    help = (
        "Chunk and index documents again (all, or one knowledge base's): after switching "
        "KNOWLEDGE_SEMANTIC on, or after a change to chunking. Safe to interrupt and repeat."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kb", help="Only this knowledge base (id).")

    def handle(self, *args: Any, kb: str | None, **options: Any) -> None:
        documents = Document.objects.order_by("created_at", "pk")
        if kb:
            documents = documents.filter(knowledge_base_id=kb)
        counts: dict[str, int] = {}
        for document in documents.iterator():
            status = document_ingest(document=document).status
            counts[status] = counts.get(status, 0) + 1
        self.stdout.write(" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no documents")
