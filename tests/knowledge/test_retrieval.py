from __future__ import annotations

import pytest
from django.db import connection

from knowledge.models import Chunk, Document
from knowledge.retrieval import retrieve, term_stats
from tests import factories
from tests.knowledge.conftest import load


def _titles(passages):
    return [p.title for p in passages]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How long is the warranty?", "Warranty"),
        ("How often should I descale with vinegar?", "Descaling"),
        ("What does delivery cost in the EU?", "Shipping"),
        ("Which temperature for green tea?", "Temperature settings"),
        ("What is the maximum fill level in litres?", "Safety"),
    ],
)
def test_the_document_that_answers_ranks_first(kettle_kb, question, expected):
    assert _titles(retrieve(kb=kettle_kb, question=question))[0] == expected


def test_heading_words_find_a_passage_that_lacks_them(kettle_kb):
    # "Exclusions" is only a heading; the passage under it says "not covered".
    top = retrieve(kb=kettle_kb, question="exclusions")[0]
    assert top.title == "Warranty"
    assert "Limescale" in top.text


def test_nothing_matches_nothing(kettle_kb):
    assert retrieve(kb=kettle_kb, question="zigbee bluetooth") == []
    assert retrieve(kb=kettle_kb, question="what is it?") == []  # only stop words


def test_another_organisations_chunks_are_never_retrieved(kettle_kb, outsider):
    foreign = factories.KnowledgeBaseFactory(organisation=outsider.org)
    load(foreign, {"Zigbee": "# Zigbee\n\nThe kettle pairs with Zigbee hubs."})
    assert retrieve(kb=kettle_kb, question="zigbee hubs") == []
    assert _titles(retrieve(kb=foreign, question="zigbee hubs")) == ["Zigbee"]


def test_another_knowledge_base_of_the_same_organisation_is_separate(kettle_kb, tenant):
    other = factories.KnowledgeBaseFactory(organisation=tenant.org)
    load(other, {"Zigbee": "# Zigbee\n\nThe kettle pairs with Zigbee hubs."})
    assert retrieve(kb=kettle_kb, question="zigbee") == []


def test_the_index_follows_deletes_and_edits(kettle_kb):
    assert retrieve(kb=kettle_kb, question="Rotterdam")
    Document.objects.filter(knowledge_base=kettle_kb, title="Shipping").delete()
    assert retrieve(kb=kettle_kb, question="Rotterdam") == []
    chunk = Chunk.objects.filter(knowledge_base=kettle_kb).first()
    chunk.text = "Now about Antwerp harbour."
    chunk.save()
    assert [p.chunk_id for p in retrieve(kb=kettle_kb, question="Antwerp")] == [chunk.pk]


def test_term_stats_count_chunks_containing_each_word(kettle_kb):
    stats = term_stats(kb=kettle_kb, words=["kettle", "rotterdam", "zigbee"])
    assert stats.frequencies["rotterdam"] == 1
    assert stats.frequencies["zigbee"] == 0
    assert stats.frequencies["kettle"] >= 3
    assert stats.idf("zigbee") > stats.idf("rotterdam") > stats.idf("kettle")


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="language-aware stemming is PostgreSQL's"
)
def test_a_german_knowledge_base_stems_german(tenant):
    kb = factories.KnowledgeBaseFactory(organisation=tenant.org, language="de")
    load(
        kb, {"Rückgabe": "# Rückgabe\n\nRücksendungen sind innerhalb von dreißig Tagen kostenlos."}
    )
    assert _titles(retrieve(kb=kb, question="Ist die Rücksendung kostenlos?")) == ["Rückgabe"]
