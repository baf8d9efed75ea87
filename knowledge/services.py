"""Writes for knowledge: documents in, chunks indexed, questions answered, gaps recorded."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from knowledge import semantic
from knowledge import text as textlib
from knowledge.answerers import Answer, AnswererError, OfflineAnswerer, Turn, answerer_for
from knowledge.chunking import chunk_document
from knowledge.errors import DocumentTooLarge, UnsupportedDocumentType
from knowledge.models import (
    Chunk,
    Document,
    DocumentFormat,
    DocumentStatus,
    GapReason,
    KnowledgeBase,
    UnansweredQuestion,
)
from systimz import errors

log = logging.getLogger("systimz.knowledge")

# A question answered with less support than this is still recorded as a gap.
LOW_SUPPORT = 0.7

_FORMAT_BY_SUFFIX = {
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
    ".html": DocumentFormat.HTML,
    ".htm": DocumentFormat.HTML,
    ".pdf": DocumentFormat.PDF,
}
_FORMAT_BY_CONTENT_TYPE = {
    "text/plain": DocumentFormat.TEXT,
    "text/markdown": DocumentFormat.MARKDOWN,
    "text/x-markdown": DocumentFormat.MARKDOWN,
    "text/html": DocumentFormat.HTML,
    "application/xhtml+xml": DocumentFormat.HTML,
    "application/pdf": DocumentFormat.PDF,
}


@dataclass(frozen=True)
class DocumentText:
    title: str | None
    content: str
    format: str


def _check_size(size: int) -> None:
    if size > settings.DOCUMENT_MAX_BYTES:
        raise DocumentTooLarge(
            f"The document has {size} bytes; the limit is {settings.DOCUMENT_MAX_BYTES}."
        )


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput(
            "The file is not UTF-8 text.", fields={"file": ["Not UTF-8 text."]}
        ) from None


def extract(raw: str | bytes, fmt: str) -> tuple[str, str | None]:
    """Normalised text and the title the document gives itself (if any)."""
    if fmt == DocumentFormat.PDF:
        if isinstance(raw, str):
            raise errors.InvalidInput(
                "Upload PDF documents as files.", fields={"format": ["PDF needs a file."]}
            )
        try:
            return textlib.pdf_to_text(raw), None
        except Exception as exc:
            raise errors.InvalidInput(
                "The PDF cannot be read.",
                fields={"file": [f"Unreadable PDF ({type(exc).__name__})."]},
            ) from exc
    content = raw if isinstance(raw, str) else _decode(raw)
    if fmt == DocumentFormat.HTML:
        return textlib.html_to_text(content)
    normalised = textlib.normalise_text(content)
    if fmt == DocumentFormat.TEXT:
        normalised = textlib.plain_text_structure(normalised)
    normalised = textlib.tables_to_sentences(normalised)
    return normalised, textlib.markdown_title(normalised)


def document_text_from_upload(upload: UploadedFile, *, title: str | None) -> DocumentText:
    """Read an uploaded file: 413 over the limit, 415 for a type we cannot read, 400 when
    it is not what it claims (not UTF-8, a broken PDF)."""
    _check_size(upload.size or 0)
    name = upload.name or "document"
    suffix = PurePath(name).suffix.lower()
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    fmt = _FORMAT_BY_SUFFIX.get(suffix) or _FORMAT_BY_CONTENT_TYPE.get(content_type)
    if fmt is None:
        raise UnsupportedDocumentType(
            f"Cannot read {name!r} ({content_type or 'unknown type'}): "
            "upload text (.txt), Markdown (.md), HTML (.html) or PDF (.pdf)."
        )
    raw = upload.read(settings.DOCUMENT_MAX_BYTES + 1)
    _check_size(len(raw))
    content, own_title = extract(raw, fmt)
    return DocumentText(
        title=title or own_title or PurePath(name).stem or name, content=content, format=fmt
    )


def document_text_from_json(*, title: str, content: str, fmt: str) -> DocumentText:
    _check_size(len(content.encode("utf-8")))
    text, _ = extract(content, fmt)
    return DocumentText(title=title, content=text, format=fmt)


def document_set_content(document: Document, content: str) -> Document:
    """Normalise ``content`` onto ``document`` with its size and hash (not saved)."""
    document.content = textlib.normalise_text(content)
    encoded = document.content.encode("utf-8")
    document.size_bytes = len(encoded)
    document.content_hash = hashlib.sha256(encoded).hexdigest()
    return document


def document_create(*, knowledge_base: KnowledgeBase, text: DocumentText) -> tuple[Document, bool]:
    """Add a document. Idempotent by content: the same normalised text again returns the
    existing document and ``created=False``. Small documents are chunked and indexed before
    this returns (``ready``); larger ones are ``pending`` until the ingestion task ran."""
    _check_size(len(text.content.encode("utf-8")))
    document = document_set_content(
        Document(
            organisation=knowledge_base.organisation,
            knowledge_base=knowledge_base,
            title=(text.title or "Untitled")[:300],
            format=text.format,
            status=DocumentStatus.PENDING,
        ),
        text.content,
    )
    if not document.content:
        raise errors.InvalidInput(
            "The document has no text.", fields={"content": ["The document has no text."]}
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
        if document.size_bytes <= settings.KNOWLEDGE_INLINE_INGEST_BYTES:
            document = document_ingest(document=document)
        else:
            from knowledge.tasks import ingest_document

            org_id, doc_id = str(document.organisation_id), str(document.pk)
            transaction.on_commit(lambda: ingest_document.delay(org_id, doc_id))
    log.info(
        "document.created org=%s kb=%s doc=%s bytes=%s status=%s",
        knowledge_base.organisation_id,
        knowledge_base.pk,
        document.pk,
        document.size_bytes,
        document.status,
    )
    return document, True


def document_ingest(*, document: Document) -> Document:
    """Chunk and index a document, replacing any chunks it had. Safe to run twice or
    concurrently (the row is locked); a failure marks the document ``failed`` with the
    reason instead of raising."""
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document.pk).first()
        if locked is None:
            return document  # deleted meanwhile: nothing to do
        kb = locked.knowledge_base
        try:
            with transaction.atomic():  # a savepoint: a failure here leaves the row writable
                drafts = _replace_chunks(locked, kb)
        except Exception as exc:
            log.exception("document.ingest_failed doc=%s", locked.pk)
            locked.status = DocumentStatus.FAILED
            locked.failure_reason = f"{type(exc).__name__}: {exc}"[:1000]
            locked.save(update_fields=["status", "failure_reason", "updated_at"])
            return locked
        locked.status, locked.failure_reason = DocumentStatus.READY, ""
        locked.chunk_count = len(drafts)
        locked.save(update_fields=["status", "failure_reason", "chunk_count", "updated_at"])
    return locked


def _replace_chunks(document: Document, kb: KnowledgeBase) -> list:
    drafts = chunk_document(document.content, title=document.title)
    Chunk.objects.filter(document=document).delete()
    config = textlib.ts_config(kb.language)
    vectors: list[bytes | None] = [None] * len(drafts)
    if semantic.enabled() and drafts:
        vectors = list(
            semantic.embed_texts([semantic.chunk_text(d.heading, d.text) for d in drafts])
        )
    Chunk.objects.bulk_create(
        [
            Chunk(
                organisation_id=document.organisation_id,
                knowledge_base_id=document.knowledge_base_id,
                document=document,
                position=draft.position,
                heading=draft.heading[:500],
                text=draft.text,
                ts_config=config,
                embedding=vector,
            )
            for draft, vector in zip(drafts, vectors, strict=True)
        ],
        batch_size=500,
    )
    return drafts


def gap_group_key(question: str, language: str | None) -> str:
    """Similar wordings share a key: their distinct content stems, sorted."""
    terms = sorted(set(textlib.content_terms(question, textlib.ts_config(language))))
    return " ".join(terms)[:300] or question.strip().lower()[:300]


def knowledge_ask(
    *,
    kb: KnowledgeBase,
    question: str,
    history: Sequence[Turn] = (),
    session_id: object | None = None,
    source: str = "console",
    record_gaps: bool = True,
) -> Answer:
    """Answer from the knowledge base only, with citations, or refuse with its fallback
    text. A configured LLM that fails falls back to the offline answerer. Refused and
    low-support questions are recorded as gaps (``record_gaps=False`` for evaluations)."""
    question = question.strip()
    try:
        answer = answerer_for(kb).answer(kb=kb, question=question, history=history)
    except AnswererError as exc:
        log.warning("knowledge.answerer_failed kb=%s error=%s; answering offline", kb.pk, exc)
        answer = OfflineAnswerer().answer(kb=kb, question=question, history=history)
    if record_gaps and (not answer.answered or answer.support < LOW_SUPPORT):
        UnansweredQuestion.objects.create(
            organisation=kb.organisation,
            knowledge_base=kb,
            question=question[:2000],
            group_key=gap_group_key(question, kb.language),
            reason=GapReason.REFUSED if not answer.answered else GapReason.LOW_SUPPORT,
            support=answer.support,
            session_id=session_id,
            source=source,
        )
    return answer
