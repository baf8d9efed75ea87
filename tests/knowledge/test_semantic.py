"""Semantic retrieval (KNOWLEDGE_SEMANTIC): embeddings at ingestion, fused ranking, and an
answer to a paraphrase that shares no word with its passage."""

from __future__ import annotations

import pytest

from knowledge import embeddings
from knowledge.answerers import OfflineAnswerer
from knowledge.models import Chunk
from knowledge.retrieval import retrieve
from tests import factories
from tests.knowledge.conftest import load

pytestmark = pytest.mark.skipif(not embeddings.is_available(), reason="make install-semantic")

DOCS = {
    "Refunds": "# Refunds\n\nAfter a cancellation we reimburse the purchase within 14 days.",
    "Heater": "# Heater\n\nOutlet number one is reserved for the heater.",
    "Lights": "# Lights\n\nThe lamp dims slowly at sunset over thirty minutes.",
}


@pytest.fixture
def semantic_kb(tenant, settings):
    settings.KNOWLEDGE_SEMANTIC = True
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    load(kb, DOCS)
    return kb


def test_chunks_are_embedded_at_ingestion(semantic_kb):
    sizes = {
        len(bytes(e))
        for e in Chunk.objects.filter(knowledge_base=semantic_kb).values_list(
            "embedding", flat=True
        )
    }
    assert sizes == {embeddings.DIMENSION * 4}


def test_a_paraphrase_without_shared_words_is_retrieved_and_answered(semantic_kb, settings):
    question = "How long until I get my money back?"
    passages = retrieve(kb=semantic_kb, question=question)
    assert passages[0].title == "Refunds"
    assert passages[0].similarity > 0.3
    settings.KNOWLEDGE_SEMANTIC = False
    assert retrieve(kb=semantic_kb, question=question) == []  # no word in common


def test_semantic_retrieval_stays_inside_the_knowledge_base(semantic_kb, outsider, settings):
    foreign = factories.KnowledgeBaseFactory(organisation=outsider.org)
    load(foreign, {"Money": "# Money\n\nWe pay refunds back to your card within two days."})
    titles = {
        p.title for p in retrieve(kb=semantic_kb, question="When do I get a refund?", limit=10)
    }
    assert "Money" not in titles
    answer = OfflineAnswerer().answer(kb=semantic_kb, question="When do I get a refund?")
    assert all(c.title != "Money" for c in answer.citations)


def test_reindex_embeds_documents_ingested_before_semantic_was_on(tenant, settings):
    import io

    from django.core.management import call_command

    settings.KNOWLEDGE_SEMANTIC = False
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    load(kb, DOCS)
    assert not Chunk.objects.filter(knowledge_base=kb, embedding__isnull=False).exists()
    settings.KNOWLEDGE_SEMANTIC = True
    out = io.StringIO()
    call_command("reindex_knowledge", "--kb", str(kb.pk), stdout=out)
    assert out.getvalue().strip() == "ready=3"
    assert not Chunk.objects.filter(knowledge_base=kb, embedding__isnull=True).exists()
