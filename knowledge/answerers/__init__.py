"""Answerers: question + conversation + knowledge base → an answer with citations."""

from knowledge.answerers.base import Answer, Answerer, AnswererError, Citation, Turn
from knowledge.answerers.llm import LLMAnswerer
from knowledge.answerers.offline import OfflineAnswerer
from knowledge.models import KnowledgeBase


def answerer_for(kb: KnowledgeBase) -> Answerer:
    """The knowledge base's configured answerer: its LLM endpoint, else the offline one."""
    if kb.llm_endpoint_id is not None and kb.llm_endpoint is not None:
        return LLMAnswerer(kb.llm_endpoint)
    return OfflineAnswerer()


__all__ = [
    "Answer",
    "Answerer",
    "AnswererError",
    "Citation",
    "LLMAnswerer",
    "OfflineAnswerer",
    "Turn",
    "answerer_for",
]
