"""The offline answerer: extractive, no model, no network.

It answers with the one or two consecutive sentences of the retrieved passages that best
cover the question, weighting each question word by its inverse document frequency in the
knowledge base (a word found nowhere weighs the most, so a question about something the
documents never mention cannot be "covered" by its common words). Words of the passage's
heading path count half. Below ``min_support`` it refuses with the fallback text.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from knowledge.answerers.base import Answer, Citation, Turn
from knowledge.models import Document, KnowledgeBase
from knowledge.retrieval import Passage, TermStats, retrieve, term_stats
from knowledge.text import (
    content_terms,
    search_words,
    split_sentences,
    stop_words,
    synonym_groups,
    synonym_words,
    ts_config,
)

_MARKUP = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+|[*_`]{1,3}")
_SHORT_QUESTION_TERMS = 2
# Questions that ask for a quantity, a duration or a time; their answer holds a number.
_WANTS_NUMBER = re.compile(
    r"\b(how (long|much|many|often|far|old|big|heavy|soon|quickly)|when|what time|which year)\b",
    re.I,
)
_NUMBER = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|once|twice)\b", re.I
)  # below this, the previous question lends its words (follow-ups)


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
        idf_power: float = 2.0,
        heading_factor: float = 0.75,
        semantic_weight: float = 0.5,
        semantic_floor: float = 0.5,
    ) -> None:
        self.min_support = min_support
        self.candidates = candidates
        self.max_sentences = max_sentences
        # Squaring the idf lets the rare, specific words of a question decide: a question
        # about "Zigbee" is not answered by a sentence that shares only "Lumora" and "work".
        self.idf_power = idf_power
        # A word found only in the passage's heading path counts this much.
        self.heading_factor = heading_factor
        # With semantic retrieval: a passage's cosine above the floor adds to the support of
        # its sentences (paraphrases share meaning, not words).
        self.semantic_weight = semantic_weight
        self.semantic_floor = semantic_floor

    def _question_words(
        self, kb: KnowledgeBase, question: str, history: Sequence[Turn]
    ) -> list[tuple[str, float]]:
        """The question's content words with a factor: 1 for its own, 0.5 for words a short
        follow-up borrows from the previous question."""
        config = ts_config(kb.language)
        own = search_words(question, config)
        if len(own) >= _SHORT_QUESTION_TERMS:
            return [(w, 1.0) for w in own]
        previous = next((t.text for t in reversed(history) if t.role == "user"), "")
        borrowed = [w for w in search_words(previous, config) if w not in own]
        return [(w, 1.0) for w in own] + [(w, 0.5) for w in borrowed]

    def _correct_typos(
        self, kb: KnowledgeBase, words: list[tuple[str, float]], stats: TermStats
    ) -> list[tuple[str, float]]:
        """A word no chunk contains is looked up among the words of the passages its
        neighbours retrieve, the document titles and the stop words: "warrenty" becomes
        "warranty", "wat" is dropped as "what". Costs nothing when every word is known."""
        unknown = [w for w, _ in words if not stats.frequencies.get(w) and not w.isdigit()]
        if not unknown:
            return words
        config = ts_config(kb.language)
        stop = stop_words(config)
        query = " ".join(_with_synonyms([w for w, _ in words], config))
        passages = retrieve(kb=kb, question=query, limit=self.candidates)
        titles = Document.objects.for_org(kb.organisation).filter(knowledge_base=kb)
        vocabulary = {w for p in passages for w in search_words(f"{p.heading} {p.text}", config)}
        vocabulary |= {
            w for t in titles.values_list("title", flat=True) for w in search_words(t, config)
        }
        corrected: list[tuple[str, float]] = []
        for word, factor in words:
            if word not in unknown:
                corrected.append((word, factor))
                continue
            pool = sorted(vocabulary | stop) if len(word) >= 5 else sorted(stop)
            match = difflib.get_close_matches(word, pool, n=1, cutoff=0.8)
            if not match:
                corrected.append((word, factor))
            elif match[0] not in stop:
                corrected.append((match[0], factor))
        return corrected

    def _weights(
        self, kb: KnowledgeBase, words: list[tuple[str, float]], stats: TermStats
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(stem → weight) for scoring sentences and (word → weight) for ranking passages."""
        config = ts_config(kb.language)
        missing = [w for w, _ in words if w not in stats.frequencies]
        if missing:
            stats = stats.merged(term_stats(kb=kb, words=missing))
        stems: dict[str, float] = {}
        by_word: dict[str, float] = {}
        for word, factor in words:
            weight = stats.idf(word) ** self.idf_power * factor
            by_word[word] = max(by_word.get(word, 0.0), weight)
            for stem in content_terms(word, config) or [word]:
                stems[stem] = max(stems.get(stem, 0.0), weight)
        return stems, by_word

    def _best(
        self,
        passages: list[Passage],
        weights: dict[str, float],
        config: str,
        wants_number: bool = False,
    ) -> _Candidate | None:
        total = sum(weights.values())
        synonyms = synonym_groups(config)
        top_score = max(p.score for p in passages) or 1.0
        best: _Candidate | None = None
        for rank, passage in enumerate(passages):
            # The engine's rank of the whole passage breaks near-ties between sentences.
            retrieval = 0.1 * passage.score / top_score
            meaning = self.semantic_weight * max(
                0.0, (passage.similarity or 0.0) - self.semantic_floor
            )
            context = set(content_terms(passage.heading, config))
            sentences = [clean_sentence(s) for s in split_sentences(passage.text)]
            sentences = [s for s in sentences if s]
            for start in range(len(sentences)):
                for width in range(1, self.max_sentences + 1):
                    window = tuple(sentences[start : start + width])
                    if len(window) < width:
                        break
                    stems = set(content_terms(" ".join(window), config))
                    covered = 0.0
                    for stem, weight in weights.items():
                        group = synonyms.get(stem, {stem})
                        if not stems.isdisjoint(group):
                            covered += weight
                        elif not context.isdisjoint(group):
                            covered += weight * self.heading_factor
                    support = min(1.0, covered / total + meaning)
                    # Prefer fewer sentences and better-ranked passages when support ties.
                    score = support + retrieval - 0.03 * (width - 1) - 0.005 * rank
                    if wants_number and _NUMBER.search(" ".join(window)):
                        score += 0.05
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
        words = self._question_words(kb, question, history)
        best = None
        if words:
            stats = term_stats(kb=kb, words=[w for w, _ in words])
            words = self._correct_typos(kb, words, stats)
        if words:
            weights, word_weights = self._weights(kb, words, stats)
            query_words = _with_synonyms([w for w, _ in words], config)
            # Passages rank by plain idf (squared, one rare word would drown the rest);
            # synonyms rank like the word they stand for.
            ranking = {
                w: (word_weights.get(w) or _group_weight(w, word_weights, config))
                ** (1 / self.idf_power)
                for w in query_words
            }
            passages = retrieve(
                kb=kb, question=" ".join(query_words), limit=self.candidates, weights=ranking
            )
            wants_number = bool(_WANTS_NUMBER.search(question))
            best = self._best(passages, weights, config, wants_number) if passages else None
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


def _group_weight(word: str, word_weights: dict[str, float], config: str) -> float:
    members = synonym_words(config).get(word, ())
    return max((word_weights.get(m, 0.0) for m in members), default=0.0)


def _with_synonyms(words: list[str], config: str) -> list[str]:
    """The words plus the other members of their synonym groups, for retrieval."""
    groups = synonym_words(config)
    extra = [synonym for word in words for synonym in groups.get(word, ())]
    return list(dict.fromkeys([*words, *extra]))
