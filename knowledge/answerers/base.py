"""What every answerer takes and gives."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from knowledge.models import KnowledgeBase


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "avatar"]
    text: str


@dataclass(frozen=True)
class Citation:
    document: uuid.UUID
    title: str
    quote: str


@dataclass(frozen=True)
class Answer:
    text: str
    answered: bool
    citations: list[Citation] = field(default_factory=list)
    support: float = 0.0  # 0..1, how much of the question the cited passages cover
    answerer: str = "offline"


class AnswererError(Exception):
    """The answerer could not produce an answer (endpoint down, malformed reply, ...)."""


class Answerer(Protocol):
    name: str

    def answer(
        self,
        *,
        kb: KnowledgeBase,
        question: str,
        history: Sequence[Turn] = (),
        on_delta: Callable[[str], None] | None = None,
    ) -> Answer:
        """Answer ``question`` from ``kb`` only. Refusal is an Answer with ``answered=False``
        and the knowledge base's fallback text; failure to answer at all raises
        :class:`AnswererError`."""
        ...
