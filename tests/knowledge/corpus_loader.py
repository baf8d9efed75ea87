"""Loads the Lumora corpus (tests/knowledge/corpus) into a knowledge base, through the same
upload path a user's files take."""

from __future__ import annotations

from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge import services
from knowledge.models import KnowledgeBase

CORPUS = Path(__file__).parent / "corpus"
QUESTIONS = CORPUS / "questions.jsonl"
_TYPES = {".md": "text/markdown", ".txt": "text/plain", ".html": "text/html"}


def load_corpus(kb: KnowledgeBase) -> int:
    count = 0
    for path in sorted((CORPUS / "docs").iterdir()):
        upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type=_TYPES[path.suffix])
        # The file name is the document's name in questions.jsonl.
        text = services.document_text_from_upload(upload, title=path.stem)
        services.document_create(knowledge_base=kb, text=text)
        count += 1
    return count
