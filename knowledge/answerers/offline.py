"""The offline answerer: extractive, no model, no network.

It answers with the one or two consecutive sentences of the retrieved passages that best
cover the question, weighting each question word by its inverse document frequency in the
knowledge base (a word found nowhere weighs the most, so a question about something the
documents never mention cannot be "covered" by its common words). Words of the passage's
heading path count half. Below ``min_support`` it refuses with the fallback text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from knowledge.answerers.base import Answer, Citation, Turn
from knowledge.models import KnowledgeBase
from knowledge.retrieval import Passage, retrieve, term_stats
from knowledge.text import content_terms, search_words, split_sentences, ts_config

_MARKUP = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+|[*_`]{1,3}")
_SHORT_QUESTION_TERMS = 2  # below this, the previous question lends its words (follow-ups)


def clean_sentence(sentence: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub("", sentence)).strip()


@dataclass(frozen=True)
class _Candidate:
    score: float
    support: float
    passage: Passage
    sentences: tuple[str, ...]


class OfflineAnswerer:
    name = "offline"

    def __init__(
        self,
        *,
        min_support: float = 0.5,
        candidates: int = 8,
        max_sentences: int = 2,
    ) -> None:
        self.min_support = min_support
        self.candidates = candidates
        self.max_sentences = max_sentences

    def _weights(
        self, kb: KnowledgeBase, question: str, history: Sequence[Turn]
    ) -> tuple[dict[str, float], list[str]]:
        """Stem → weight for the question's words, and the words borrowed from history."""
        config = ts_config(kb.language)
        own = search_words(question, config)
        borrowed: list[str] = []
        if len(own) < _SHORT_QUESTION_TERMS:
            previous = next((t.text for t in reversed(history) if t.role == "user"), "")
            borrowed = [w for w in search_words(previous, config) if w not in own]
        stats = term_stats(kb=kb, words=own + borrowed)
        weights: dict[str, float] = {}
        for word, factor in [(w, 1.0) for w in own] + [(w, 0.5) for w in borrowed]:
            for stem in content_terms(word, config) or [word]:
                weights[stem] = max(weights.get(stem, 0.0), stats.idf(word) * factor)
        return weights, borrowed

    def _best(
        self, passages: list[Passage], weights: dict[str, float], config: str
    ) -> _Candidate | None:
        total = sum(weights.values())
        best: _Candidate | None = None
        for rank, passage in enumerate(passages):
            context = set(content_terms(passage.heading, config))
            sentences = [clean_sentence(s) for s in split_sentences(passage.text)]
            sentences = [s for s in sentences if s]
            for start in range(len(sentences)):
                for width in range(1, self.max_sentences + 1):
                    window = tuple(sentences[start : start + width])
                    if len(window) < width:
                        break
                    stems = set(content_terms(" ".join(window), config))
                    covered = sum(
                        weight if stem in stems else weight / 2 if stem in context else 0.0
                        for stem, weight in weights.items()
                    )
                    support = covered / total
                    # Prefer fewer sentences and better-ranked passages when support ties.
                    score = support - 0.03 * (width - 1) - 0.005 * rank
                    if best is None or score > best.score:
                        best = _Candidate(score, support, passage, window)
        return best

    def answer(
        self,
        *,
        kb: KnowledgeBase,
        question: str,
        history: Sequence[Turn] = (),
        on_delta: Callable[[str], None] | None = None,
    ) -> Answer:
        config = ts_config(kb.language)
        weights, borrowed = self._weights(kb, question, history)
        query = " ".join([question, *borrowed])  # borrowed words widen the search too
        passages = retrieve(kb=kb, question=query, limit=self.candidates) if weights else []
        best = self._best(passages, weights, config) if passages else None
        if best is None or best.support < self.min_support:
            support = best.support if best else 0.0
            return Answer(
                text=kb.fallback_text, answered=False, support=support, answerer=self.name
            )
        text = " ".join(best.sentences)
        if on_delta is not None:
            on_delta(text)
        citation = Citation(document=best.passage.document_id, title=best.passage.title, quote=text)
        return Answer(
            text=text, answered=True, citations=[citation], support=best.support, answerer=self.name
        )
