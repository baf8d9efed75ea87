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
_ENGLISH_STOP_WORDS = (
    """
    much many way anything something able possible long often soon far"""
    + """
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
)
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


_COMPOUNDS = re.compile(r"\b(wi)-(fi)\b|\b(e)-(mail)\b", re.I)


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits), accents kept; "wi-fi" and "e-mail" are one."""
    text = _COMPOUNDS.sub(lambda m: "".join(g for g in m.groups() if g), text.lower())
    return [w.replace("\u2019", "'") for w in _WORD.findall(text)]


def content_terms(text: str, config: str = "english") -> list[str]:
    """Stemmed words without stop words, in order, duplicates kept."""
    stop = _STOP_WORDS.get(config, frozenset())
    kept = [w for w in words(text) if (w not in stop and len(w) > 1) or w.isdigit()]
    stemmer = _stemmer(config)
    return stemmer.stemWords(kept) if stemmer else kept


# Words customers and documents use for the same thing. Matching treats a group as one word.
_ENGLISH_SYNONYMS = [
    "cost costs price prices pricing fee fees charge charges",
    "refund refunds reimbursement reimbursed",
    "cancel cancels cancellation cancelling",
    "ship ships shipping shipped delivery deliver delivered dispatch postage",
    "buy purchase purchased order ordered",
    "broken faulty defective damaged",
    "fix repair repairs",
    "phone telephone call",
    "email mail",
    "app application",
    "update updates upgrade upgrades",
    "replace replacement replacing swap",
    "warranty guarantee",
    "install installation setup",
    "login log sign signin",
]


@lru_cache(maxsize=8)
def synonym_groups(config: str) -> dict[str, frozenset[str]]:
    """Stem → the stems of its synonym group (English only)."""
    if config != "english":
        return {}
    groups: dict[str, frozenset[str]] = {}
    for line in _ENGLISH_SYNONYMS:
        stems = frozenset(content_terms(line, config))
        for stem in stems:
            groups[stem] = groups.get(stem, frozenset()) | stems
    return groups


@lru_cache(maxsize=8)
def synonym_words(config: str) -> dict[str, tuple[str, ...]]:
    """Word → the other words of its synonym group, for widening a search."""
    if config != "english":
        return {}
    groups: dict[str, tuple[str, ...]] = {}
    for line in _ENGLISH_SYNONYMS:
        members = line.split()
        for word in members:
            groups[word] = tuple(m for m in members if m != word)
    return groups


def stop_words(config: str) -> frozenset[str]:
    return _STOP_WORDS.get(config, frozenset())


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


_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables_to_sentences(text: str) -> str:
    """Markdown tables become one line per row, each cell named by its column:
    ``| Part | Price |`` over ``| pH probe | $39 |`` reads "Part: pH probe; Price: $39." so a
    row can be found, quoted and spoken on its own."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.startswith("|") and _TABLE_SEPARATOR.match(nxt):
            header = _cells(line)
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = _cells(lines[i])
                pairs = [f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=False) if c]
                out.append("; ".join(pairs) + ".")
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


_CAPS_HEADING = re.compile(r"^[A-Z0-9][A-Z0-9 &/,'()\-]{2,80}$")


def plain_text_structure(text: str) -> str:
    """Headings of a plain-text document as Markdown: a short first line without a full stop
    is its title, and a line in capitals standing alone is a section heading."""
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None:
        title = lines[first].strip()
        ends = (".", "!", "?", ":")
        if len(title) <= 100 and not title.endswith(ends) and not title.startswith("#"):
            lines[first] = f"# {title}"
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _CAPS_HEADING.match(stripped) and any(ch.isalpha() for ch in stripped):
            lines[i] = f"## {stripped.title()}"
    return "\n".join(lines)


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
    for table in body.find_all("table"):
        rows = [
            "| "
            + " | ".join(cell.get_text(" ", strip=True) for cell in row.find_all(["th", "td"]))
            + " |"
            for row in table.find_all("tr")
        ]
        if rows:
            rows.insert(1, "|" + "---|" * rows[0].count(" | ") + "---|")
        table.replace_with("\n\n" + "\n".join(rows) + "\n\n")
    for block in body.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    text = body.get_text("")
    if title is None:
        first = re.search(r"^#\s+(.+)$", text, re.M)
        title = first.group(1).strip() if first else None
    return tables_to_sentences(normalise_text(text)), title


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
