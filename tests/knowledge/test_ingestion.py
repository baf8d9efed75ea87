from __future__ import annotations

from knowledge import services
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.prompt import provider_prompt
from knowledge.retrieval import retrieve
from knowledge.tasks import ingest_document
from tests import factories


def _big_text(paragraphs: int) -> str:
    return "\n\n".join(
        f"## Part {n}\n\n"
        + " ".join(f"Fact {n}.{m} is about widget number {n * 100 + m}." for m in range(40))
        for n in range(paragraphs)
    )


def test_large_documents_are_ingested_by_the_task_after_commit(
    tenant, settings, django_capture_on_commit_callbacks
):
    settings.KNOWLEDGE_INLINE_INGEST_BYTES = 1000
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    with django_capture_on_commit_callbacks() as callbacks:
        response = tenant.client.post(
            f"/api/v1/knowledge-bases/{kb.pk}/documents/",
            {"title": "Big", "content": _big_text(5)},
            format="json",
        )
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    assert len(callbacks) == 1
    doc = Document.objects.get(pk=response.json()["id"])
    assert retrieve(kb=kb, question="widget 307") == []

    assert ingest_document.apply(args=[str(tenant.org.pk), str(doc.pk)]).get() == "ready"
    first = list(Chunk.objects.filter(document=doc).values_list("position", "text"))
    assert ingest_document.apply(args=[str(tenant.org.pk), str(doc.pk)]).get() == "ready"  # twice
    assert list(Chunk.objects.filter(document=doc).values_list("position", "text")) == first
    doc.refresh_from_db()
    assert (doc.status, doc.chunk_count) == (DocumentStatus.READY, len(first))
    assert retrieve(kb=kb, question="widget 307")[0].document_id == doc.pk


def test_the_task_ignores_another_organisations_document(tenant, outsider):
    doc = Document.objects.for_org(outsider.org).first()
    assert ingest_document.apply(args=[str(tenant.org.pk), str(doc.pk)]).get() == "missing"


def test_a_failing_ingestion_marks_the_document_failed_with_the_reason(tenant, monkeypatch):
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    doc, _ = services.document_create(
        knowledge_base=kb,
        text=services.DocumentText(title="x", content="Some text.", format="text"),
    )

    def explode(*args, **kwargs):
        raise ValueError("chunker exploded")

    monkeypatch.setattr(services, "chunk_document", explode)
    doc = services.document_ingest(document=doc)
    assert (doc.status, doc.failure_reason) == ("failed", "ValueError: chunker exploded")
    assert Chunk.objects.filter(document=doc).count() == 1  # the old chunks stay searchable


def test_provider_prompt_has_persona_knowledge_and_instructions_within_the_limit(kettle_kb):
    full = provider_prompt(kettle_kb, max_chars=100_000)
    assert not full.truncated
    assert full.documents == 5
    assert full.prompt.startswith("PERSONA:")
    assert "KNOWLEDGE BASE:" in full.prompt
    assert "two years" in full.prompt
    assert full.prompt.rstrip().endswith("Answer briefly.")
    assert "I don't know that one." in full.prompt

    short = provider_prompt(kettle_kb, max_chars=700)
    assert short.truncated
    assert len(short.prompt) <= 700
    assert short.documents < 5
    assert short.prompt.rstrip().endswith("Answer briefly.")
