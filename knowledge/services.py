"""Writes for knowledge bases and documents."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from knowledge.errors import DocumentTooLarge, UnsupportedDocumentType
from knowledge.models import Document, DocumentFormat, DocumentStatus, KnowledgeBase
from systimz import errors

log = logging.getLogger("systimz.knowledge")

_FORMAT_BY_SUFFIX = {
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
}
_FORMAT_BY_CONTENT_TYPE = {
    "text/plain": DocumentFormat.TEXT,
    "text/markdown": DocumentFormat.MARKDOWN,
    "text/x-markdown": DocumentFormat.MARKDOWN,
}


@dataclass(frozen=True)
class DocumentText:
    title: str
    content: str
    format: str


def normalise_text(text: str) -> str:
    """Unix newlines, no BOM, no NUL, no trailing spaces on lines."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _check_size(size: int) -> None:
    if size > settings.DOCUMENT_MAX_BYTES:
        raise DocumentTooLarge(
            f"The document has {size} bytes; the limit is {settings.DOCUMENT_MAX_BYTES}."
        )


def document_text_from_upload(upload: UploadedFile, *, title: str | None) -> DocumentText:
    """Read an uploaded text or Markdown file; 413 over the limit, 415 for other types,
    400 when it is not UTF-8 text."""
    _check_size(upload.size or 0)
    name = upload.name or "document"
    suffix = PurePath(name).suffix.lower()
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    fmt = _FORMAT_BY_SUFFIX.get(suffix) or _FORMAT_BY_CONTENT_TYPE.get(content_type)
    if fmt is None:
        raise UnsupportedDocumentType(
            f"Cannot read {name!r} ({content_type or 'unknown type'}): "
            "upload a text (.txt) or Markdown (.md) file."
        )
    raw = upload.read(settings.DOCUMENT_MAX_BYTES + 1)
    _check_size(len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput(
            "The file is not UTF-8 text.", fields={"file": ["Not UTF-8 text."]}
        ) from None
    return DocumentText(title=title or PurePath(name).stem or name, content=text, format=fmt)


def document_set_content(document: Document, content: str) -> Document:
    """Normalise ``content`` onto ``document`` with its size and hash (not saved)."""
    document.content = normalise_text(content)
    encoded = document.content.encode("utf-8")
    document.size_bytes = len(encoded)
    document.content_hash = hashlib.sha256(encoded).hexdigest()
    return document


def document_create(*, knowledge_base: KnowledgeBase, text: DocumentText) -> tuple[Document, bool]:
    """Add a document to a knowledge base. Idempotent by content: the same normalised text
    uploaded again returns the existing document and ``created=False``."""
    _check_size(len(text.content.encode("utf-8")))
    document = document_set_content(
        Document(
            organisation=knowledge_base.organisation,
            knowledge_base=knowledge_base,
            title=text.title[:300],
            format=text.format,
            # Plain text and Markdown need no processing yet; retrieval indexing will set
            # pending → ready when it exists.
            status=DocumentStatus.READY,
        ),
        text.content,
    )
    if not document.content:
        raise errors.InvalidInput(
            "The document is empty.", fields={"content": ["The document has no text."]}
        )
    with transaction.atomic():
        # Lock the knowledge base so two identical uploads cannot both insert.
        KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base.pk).first()
        existing = Document.objects.for_org(knowledge_base.organisation).filter(
            knowledge_base=knowledge_base, content_hash=document.content_hash
        )
        if (found := existing.first()) is not None:
            return found, False
        document.save()
    log.info(
        "document.created org=%s kb=%s doc=%s bytes=%s",
        knowledge_base.organisation_id,
        knowledge_base.pk,
        document.pk,
        document.size_bytes,
    )
    return document, True
