"""Full-text retrieval over a knowledge base's chunks, in the database's own engine.

One selector, two back-ends: PostgreSQL ranks with ``ts_rank_cd`` over the trigger-kept
``search_vector`` (GIN index; the knowledge base's language picks the text search
configuration), SQLite with FTS5's ``bm25``. Both take the question's content words as an OR
query, so a question need not contain every word of the passage. Every query is scoped by
organisation *and* knowledge base.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from django.db import connection

from knowledge import semantic
from knowledge.models import Chunk, KnowledgeBase
from knowledge.text import search_words, ts_config

MAX_QUERY_WORDS = 32


@dataclass(frozen=True)
class Passage:
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    heading: str
    text: str
    score: float  # higher is better; comparable within one result list only
    similarity: float | None = None  # cosine to the question, with semantic retrieval


def _db_id(value: uuid.UUID) -> object:
    # Django keeps UUIDs as 32 hex characters on SQLite and as uuid on PostgreSQL.
    return value.hex if connection.vendor == "sqlite" else value


def _query_words(question: str, config: str) -> list[str]:
    cleaned = []
    for word in search_words(question, config):
        cleaned.extend(part for part in word.replace("\u2019", "'").split("'") if part)
    return list(dict.fromkeys(cleaned))[:MAX_QUERY_WORDS]


def _postgres_rank(words: list[str], config: str, weights: dict[str, float] | None) -> tuple:
    """``ts_rank_cd`` gives a rare word no more weight than a common one; with ``weights``
    the rank is the weighted sum of each word's own rank, so the rare word decides."""
    if not weights:
        return "ts_rank_cd(c.search_vector, q, 32)", []
    terms, params = [], []
    for word in words:
        terms.append("ts_rank_cd(c.search_vector, to_tsquery(%s::regconfig, %s), 32) * %s")
        params += [config, word, float(weights.get(word, 1.0))]
    return " + ".join(terms), params


def _ranked_ids(
    kb: KnowledgeBase,
    words: list[str],
    config: str,
    limit: int,
    weights: dict[str, float] | None = None,
) -> list[tuple]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rank, rank_params = _postgres_rank(words, config, weights)
            cursor.execute(
                f"""
                SELECT c.id, {rank} AS rank
                FROM knowledge_chunk c, to_tsquery(%s::regconfig, %s) q
                WHERE c.organisation_id = %s AND c.knowledge_base_id = %s
                  AND c.search_vector @@ q
                ORDER BY rank DESC, c.heading, c.position
                LIMIT %s
                """,  # noqa: S608 - the rank expression is ours; every value is a parameter
                [*rank_params, config, " | ".join(words), kb.organisation_id, kb.pk, limit],
            )
            return [(row[0], float(row[1])) for row in cursor.fetchall()]
        cursor.execute(
            """
            SELECT chunk_id, bm25(knowledge_chunk_fts, 2.0, 1.0) AS score
            FROM knowledge_chunk_fts
            WHERE knowledge_chunk_fts MATCH %s
              AND organisation_id = %s AND knowledge_base_id = %s
            ORDER BY score, heading, text
            LIMIT %s
            """,
            [
                "{heading text} : (" + " OR ".join(f'"{w}"' for w in words) + ")",
                _db_id(kb.organisation_id),
                _db_id(kb.pk),
                limit,
            ],
        )
        # bm25 is lower-is-better and negative; flip it so higher is better everywhere.
        return [(uuid.UUID(str(row[0])), -float(row[1])) for row in cursor.fetchall()]


RRF_K = 60


def _fuse(
    lexical: list[tuple], neighbours: list[tuple[uuid.UUID, float]], limit: int
) -> tuple[list[tuple], dict[uuid.UUID, float]]:
    """Reciprocal rank fusion of the full-text and the semantic rankings."""
    fused: dict[uuid.UUID, float] = {}
    for ranking in (lexical, neighbours):
        for position, (chunk_id, _) in enumerate(ranking):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + position + 1)
    similarity = dict(neighbours)
    lexical_rank = {chunk_id: position for position, (chunk_id, _) in enumerate(lexical)}
    # Ties (frequent with rank fusion) break by meaning, then by the full-text rank: the same
    # question over the same documents always gives the same passages.
    order = sorted(
        fused.items(),
        key=lambda item: (
            -item[1],
            -similarity.get(item[0], -1.0),
            lexical_rank.get(item[0], len(lexical)),
        ),
    )[:limit]
    return order, similarity


def retrieve(
    *, kb: KnowledgeBase, question: str, limit: int = 8, weights: dict[str, float] | None = None
) -> list[Passage]:
    """The best-matching passages of ``kb`` for ``question``, best first. ``weights``
    (word → weight, e.g. from inverse document frequencies) sharpens PostgreSQL's ranking;
    SQLite's bm25 weighs rare words by itself."""
    config = ts_config(kb.language)
    words = _query_words(question, config)
    if not words and not semantic.enabled():
        return []
    ranked = [] if not words else _ranked_ids(kb, words, config, limit, weights)
    similarities: dict[uuid.UUID, float] = {}
    if semantic.enabled():
        neighbours = semantic.nearest(kb=kb, question=question, limit=limit * 2)
        ranked, similarities = _fuse(ranked, neighbours, limit)
    if not ranked:
        return []
    chunks = (
        Chunk.objects.for_org(kb.organisation)
        .select_related("document")
        .in_bulk([chunk_id for chunk_id, _ in ranked])
    )
    return [
        Passage(
            chunk_id=chunk.pk,
            document_id=chunk.document_id,
            title=chunk.document.title,
            heading=chunk.heading,
            text=chunk.text,
            score=score,
            similarity=similarities.get(chunk_id),
        )
        for chunk_id, score in ranked
        if (chunk := chunks.get(chunk_id)) is not None
    ]


@dataclass(frozen=True)
class TermStats:
    chunks: int
    frequencies: dict[str, int]  # word -> number of chunks containing it

    def merged(self, other: TermStats) -> TermStats:
        return TermStats(chunks=self.chunks, frequencies={**self.frequencies, **other.frequencies})

    def idf(self, word: str) -> float:
        """Smoothed inverse document frequency: a word no chunk contains weighs the most."""
        return math.log((self.chunks + 1) / (self.frequencies.get(word, 0) + 0.5)) + 1.0


def term_stats(*, kb: KnowledgeBase, words: list[str]) -> TermStats:
    """How many chunks of ``kb`` contain each word (after the engine's own stemming)."""
    config = ts_config(kb.language)
    total = Chunk.objects.for_org(kb.organisation).filter(knowledge_base=kb).count()
    frequencies: dict[str, int] = {}
    with connection.cursor() as cursor:
        for word in dict.fromkeys(words):
            if connection.vendor == "postgresql":
                cursor.execute(
                    """
                    SELECT count(*) FROM knowledge_chunk c, to_tsquery(%s::regconfig, %s) q
                    WHERE c.organisation_id = %s AND c.knowledge_base_id = %s
                      AND c.search_vector @@ q
                    """,
                    [config, word, kb.organisation_id, kb.pk],
                )
            else:
                cursor.execute(
                    """
                    SELECT count(*) FROM knowledge_chunk_fts
                    WHERE knowledge_chunk_fts MATCH %s
                      AND organisation_id = %s AND knowledge_base_id = %s
                    """,
                    [f'{{heading text}} : "{word}"', _db_id(kb.organisation_id), _db_id(kb.pk)],
                )
            frequencies[word] = int(cursor.fetchone()[0])
    return TermStats(chunks=total, frequencies=frequencies)
