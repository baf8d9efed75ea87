"""Splitting a document into retrievable chunks.

A chunk never crosses a heading: each section (the text under one Markdown heading) is packed
into chunks of whole sentences up to ``target_chars``; the next chunk repeats the last
``overlap_sentences`` sentences of the previous one, so an answer that straddles the cut is
still found whole in one of them. A sentence longer than ``max_chars`` is cut at word
boundaries. Each chunk carries its heading path ("Title > Section > Subsection", joined with a
right-pointing angle quote), which is
indexed with it: a passage reading "within 30 days" is found by "returns" through its heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.text import split_sentences

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
HEADING_SEPARATOR = " \u203a "


@dataclass(frozen=True)
class ChunkDraft:
    position: int
    heading: str
    text: str


@dataclass
class _Section:
    path: list[str]
    lines: list[str]


def _sections(text: str, title: str) -> list[_Section]:
    stack: list[tuple[int, str]] = []
    sections = [_Section(path=[title], lines=[])]
    for line in text.split("\n"):
        match = _HEADING.match(line.strip())
        if not match:
            sections[-1].lines.append(line)
            continue
        level, name = len(match.group(1)), match.group(2).strip()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        path = [title] + [n for _, n in stack if n.casefold() != title.casefold()]
        sections.append(_Section(path=path, lines=[]))
    return [s for s in sections if any(line.strip() for line in s.lines)]


def _split_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces, current = [], ""
    for word in sentence.split():
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return [p[:max_chars] for p in pieces]


def _section_sentences(lines: list[str], max_chars: int) -> list[str]:
    paragraphs = "\n".join(lines).split("\n\n")
    sentences: list[str] = []
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            sentences.extend(_split_long(sentence, max_chars))
    return sentences


def chunk_document(
    text: str,
    *,
    title: str,
    target_chars: int = 700,
    max_chars: int = 1000,
    overlap_sentences: int = 1,
) -> list[ChunkDraft]:
    """The chunks of ``text`` in document order. Deterministic: the same text gives the same
    chunks."""
    if not 0 < target_chars <= max_chars:
        raise ValueError("need 0 < target_chars <= max_chars")
    drafts: list[ChunkDraft] = []
    for section in _sections(text, title):
        heading = HEADING_SEPARATOR.join(section.path)
        sentences = _section_sentences(section.lines, max_chars)
        current: list[str] = []
        fresh = 0  # sentences in `current` not carried over from the previous chunk
        for sentence in sentences:
            size = sum(len(s) + 1 for s in current) + len(sentence)
            if current and fresh and size > target_chars:
                drafts.append(ChunkDraft(len(drafts), heading, " ".join(current)))
                carried = current[-overlap_sentences:] if overlap_sentences else []
                while carried and sum(len(s) + 1 for s in carried) + len(sentence) > max_chars:
                    carried = carried[1:]
                current, fresh = list(carried), 0
            current.append(sentence)
            fresh += 1
        if fresh:
            drafts.append(ChunkDraft(len(drafts), heading, " ".join(current)))
    return drafts
