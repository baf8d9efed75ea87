"""Scoring an answerer against a question set (``eval_knowledge`` and the CI test)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.models import Document, KnowledgeBase
from knowledge.services import knowledge_ask


@dataclass(frozen=True)
class Case:
    question: str
    answerable: bool
    expected_document: str | None = None  # a document id, title or file-name stem


@dataclass
class Report:
    answerable: int = 0
    unanswerable: int = 0
    answered_correctly: int = 0  # answerable, answered, expected document cited
    answered: int = 0  # answerable and answered at all
    cited_correctly: int = 0  # of those answered, citing the expected document
    refused_correctly: int = 0  # unanswerable and refused
    failures: list[dict[str, object]] = field(default_factory=list)

    @staticmethod
    def _rate(part: int, whole: int) -> float:
        return part / whole if whole else 1.0

    @property
    def answered_correctly_rate(self) -> float:
        return self._rate(self.answered_correctly, self.answerable)

    @property
    def cited_correctly_rate(self) -> float:
        return self._rate(self.cited_correctly, self.answered)

    @property
    def refused_correctly_rate(self) -> float:
        return self._rate(self.refused_correctly, self.unanswerable)

    def summary(self) -> dict[str, object]:
        return {
            "answerable": self.answerable,
            "unanswerable": self.unanswerable,
            "answered_correctly": round(self.answered_correctly_rate, 4),
            "cited_correctly": round(self.cited_correctly_rate, 4),
            "refused_correctly": round(self.refused_correctly_rate, 4),
        }


def load_cases(path: Path) -> list[Case]:
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            cases.append(
                Case(
                    question=str(row["question"]),
                    answerable=bool(row["answerable"]),
                    expected_document=row.get("expected_document"),
                )
            )
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    return cases


def _document_names(kb: KnowledgeBase) -> dict[str, set[str]]:
    """Document id → the names a question file may use for it (id, title, slug of title)."""
    names: dict[str, set[str]] = {}
    for doc in Document.objects.for_org(kb.organisation).filter(knowledge_base=kb):
        slug = "-".join(doc.title.lower().replace("&", " ").split())
        names[str(doc.pk)] = {str(doc.pk), doc.title.lower(), slug}
    return names


def evaluate(kb: KnowledgeBase, cases: Iterable[Case]) -> Report:
    """Ask every question (recording no gaps) and score the answers."""
    names = _document_names(kb)
    report = Report()
    for case in cases:
        answer = knowledge_ask(kb=kb, question=case.question, record_gaps=False)
        cited = {str(c.document) for c in answer.citations}
        if not case.answerable:
            report.unanswerable += 1
            if not answer.answered:
                report.refused_correctly += 1
            else:
                report.failures.append(
                    {"question": case.question, "problem": "answered", "answer": answer.text}
                )
            continue
        report.answerable += 1
        expected = (case.expected_document or "").lower()
        right = any(expected in names.get(doc, set()) for doc in cited)
        if answer.answered:
            report.answered += 1
            report.cited_correctly += right
        report.answered_correctly += answer.answered and right
        if not (answer.answered and right):
            report.failures.append(
                {
                    "question": case.question,
                    "problem": "wrong document" if answer.answered else "refused",
                    "expected": case.expected_document,
                    "support": round(answer.support, 3),
                    "answer": answer.text,
                }
            )
    return report
