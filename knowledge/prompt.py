"""Prompt-style knowledge for providers whose own LLM answers (HeyGen, LiveAvatar).

Their "knowledge base" is a system prompt, not retrieval, so Systimz writes one from the
knowledge base: persona (the opening and the instructions), knowledge (the documents, chunk by
chunk, in order, until the size limit) and the rules for what is not in it. What does not fit
is left out, and ``truncated`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.models import Chunk, DocumentStatus, KnowledgeBase

_HEADER = """PERSONA:
{persona}

KNOWLEDGE BASE:
"""
_FOOTER = """

INSTRUCTIONS:
Answer only from the KNOWLEDGE BASE above. If it does not contain the answer, say: {fallback}
{instructions}"""


@dataclass(frozen=True)
class ProviderPrompt:
    opening: str
    prompt: str
    truncated: bool
    documents: int  # documents at least partly included


def provider_prompt(kb: KnowledgeBase, *, max_chars: int) -> ProviderPrompt:
    persona = kb.opening_text.strip() or f"You are the assistant for {kb.organisation.name}."
    header = _HEADER.format(persona=persona)
    footer = _FOOTER.format(fallback=kb.fallback_text.strip(), instructions=kb.instructions.strip())
    budget = max_chars - len(header) - len(footer)
    if budget <= 0:
        raise ValueError("max_chars leaves no room for knowledge")
    chunks = (
        Chunk.objects.for_org(kb.organisation)
        .filter(knowledge_base=kb, document__status=DocumentStatus.READY)
        .select_related("document")
        .order_by("document__created_at", "document_id", "position")
    )
    parts: list[str] = []
    used, truncated, documents, last_heading = 0, False, set(), None
    for chunk in chunks.iterator():
        block = (
            chunk.text if chunk.heading == last_heading else f"\n## {chunk.heading}\n{chunk.text}"
        )
        if used + len(block) + 1 > budget:
            truncated = True
            break
        parts.append(block)
        used += len(block) + 1
        documents.add(chunk.document_id)
        last_heading = chunk.heading
    prompt = header + "\n".join(parts).strip() + footer
    return ProviderPrompt(
        opening=kb.opening_text.strip(),
        prompt=prompt.strip(),
        truncated=truncated,
        documents=len(documents),
    )
