"""Text handling for knowledge: extraction from uploads, normalisation, sentences, terms.

Pure functions, no database. Extraction turns every format into Markdown-flavoured plain
text (``#`` headings, blank lines between blocks) so the chunker sees one structure.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer
from bs4 import BeautifulSoup

# BCP 47 primary language → PostgreSQL text search configuration and Snowball stemmer.
LANGUAGES = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "hu": "hungarian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "nl": "dutch",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
}
DEFAULT_LANGUAGE = "en"

# Function words that carry no meaning for matching. English is the embedded default; other
# languages rely on PostgreSQL's own stop lists and on inverse document frequency.
_ENGLISH_STOP_WORDS = """
    a about above after again against all am an and any are aren as at be because been
    before being below between both but by can cannot could couldn did didn do does
    doesn doing don down during each few for from further get got had hadn has hasn have
    haven having he her here hers herself him himself his how i if in into is isn it its
    itself just let me more most mustn my myself no nor not of off on once only or other
    ought our ours ourselves out over own please same shan she should shouldn so some
    such tell than that the their theirs them themselves then there these they this
    those through to too under until up very was wasn we were weren what when where
    which while who whom why will with won would wouldn you your yours yourself
    yourselves s t ll d m re ve y know want need like also there's what's how's i'm
"""
_STOP_WORDS = {"english": frozenset(_ENGLISH_STOP_WORDS.split())}

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")
_ABBREVIATIONS = re.compile(r"\b(?:e\.g|i\.e|etc|vs|approx|incl|no|mr|mrs|ms|dr|st)\.$", re.I)


def ts_config(language: str | None) -> str:
    """The PostgreSQL text search configuration for a BCP 47 tag (``simple`` if unknown)."""
    primary = (language or DEFAULT_LANGUAGE).split("-")[0].lower()
    return LANGUAGES.get(primary, "simple")


@lru_cache(maxsize=32)
def _stemmer(config: str) -> snowballstemmer.stemmer | None:
    return snowballstemmer.stemmer(config) if config != "simple" else None


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits), accents kept."""
    return [w.replace("\u2019", "'") for w in _WORD.findall(text.lower())]


def content_terms(text: str, config: str = "english") -> list[str]:
    """Stemmed words without stop words, in order, duplicates kept."""
    stop = _STOP_WORDS.get(config, frozenset())
    kept = [w for w in words(text) if (w not in stop and len(w) > 1) or w.isdigit()]
    stemmer = _stemmer(config)
    return stemmer.stemWords(kept) if stemmer else kept


def search_words(text: str, config: str = "english") -> list[str]:
    """Distinct unstemmed content words, for building a full-text OR query."""
    stop = _STOP_WORDS.get(config, frozenset())
    return list(
        dict.fromkeys(w for w in words(text) if w not in stop and (len(w) > 1 or w.isdigit()))
    )


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph; list items and lines that end without punctuation stay whole."""
    sentences: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        pieces = _SENTENCE_END.split(line)
        buffer = ""
        for piece in pieces:
            buffer = f"{buffer} {piece}".strip() if buffer else piece.strip()
            if not _ABBREVIATIONS.search(buffer):
                sentences.append(buffer)
                buffer = ""
        if buffer:
            sentences.append(buffer)
    return sentences


def normalise_text(text: str) -> str:
    """NFC, Unix newlines, no BOM or control characters, no trailing spaces, at most one
    blank line in a row."""
    text = unicodedata.normalize("NFC", text.removeprefix("\ufeff"))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    lines = [re.sub(r" {2,}", " ", line).rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_SKIP_TAGS = ("script", "style", "noscript", "template", "nav", "footer", "header", "aside", "form")
_BLOCK_TAGS = {"p", "div", "section", "article", "main", "blockquote", "pre", "table", "tr", "br"}


def html_to_text(html: str) -> tuple[str, str | None]:
    """Readable text of an HTML page with headings as ``#`` lines; returns (text, title)."""
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(list(_SKIP_TAGS)):
        tag.decompose()
    body = soup.body or soup
    for level in range(1, 7):
        for heading in body.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for item in body.find_all("li"):
        item.replace_with(f"\n- {item.get_text(' ', strip=True)}\n")
    for block in body.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    text = body.get_text("")
    if title is None:
        first = re.search(r"^#\s+(.+)$", text, re.M)
        title = first.group(1).strip() if first else None
    return normalise_text(text), title


def pdf_to_text(data: bytes) -> str:
    """Text of every page of a PDF, pages separated by blank lines."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    return normalise_text("\n\n".join(page for page in pages if page))


def markdown_title(text: str) -> str | None:
    match = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
    return match.group(1).strip() if match else None


def join_nonempty(parts: Iterable[str | None], sep: str = " ") -> str:
    return sep.join(part for part in parts if part)
