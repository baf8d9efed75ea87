"""Latency of ``knowledge.services.knowledge_ask`` (offline answerer) over a ~10,000-chunk
knowledge base, on whichever database ``DATABASE_URL`` selects.

    python -m bench.knowledge_ask [--chunks 10000] [--questions 200] [--seed 1234] [--json]

It creates its own throwaway test database (as Django's test runner does: a temporary SQLite
file, or ``test_<name>_bench_<pid>`` on PostgreSQL) and drops it at the end; the development
database is never opened. The corpus is synthetic and deterministic (``random.Random(seed)``):
Markdown documents of ~700-character sections written from a generated vocabulary with a
Zipf-like word distribution, plus "planted facts" (one unique rare word each) that questions
ask about. Every document goes through ``document_text_from_json`` + ``document_create``, so
chunking and the full-text triggers run as in production.

Questions: ~70% about planted facts (expected: answered, citing the fact's document), ~30%
built around words the corpus does not contain (expected: refused). Each ``knowledge_ask`` call
is timed with ``time.perf_counter``; in the same run, interleaved with the questions, three
baselines are timed on the same database so results can be compared across machines as
ratios: a unique-index point lookup, ``Chunk.objects.filter(knowledge_base=kb,
position=0).count()``, and one full-text ``retrieve`` with a one-word question.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")

# Section target size (the chunker packs up to 700 characters per chunk).
SECTION_CHARS_MEAN = 650
SECTION_CHARS_SD = 170
SECTIONS_PER_DOC = (25, 60)  # ~20-45 KB per document, below the 256 KB inline-ingest limit
FACT_PROBABILITY = 0.2  # chance that a section holds a planted fact
FACT_SHARE = 0.7  # share of questions about planted facts
WARMUP_QUESTIONS = 10

# Generated words never collide across these three families: their letters differ at the
# start of the word (stemming only touches the end), and the absent family shares almost no
# letters with the others, so the answerer's typo correction cannot map one onto another.
_VOCAB_ONSETS = "b d f g k l m n p r s t v br dr gr kr pl st tr".split()  # noqa: SIM905
_VOCAB_VOWELS = "a e i o u a e i o".split()  # noqa: SIM905
_VOCAB_CODAS = ["", "", "", "n", "r", "l", "s", "m", "k"]
_ABSENT_ONSETS = "j w x ch sh wh jh".split()  # noqa: SIM905
_ABSENT_VOWELS = "au ei ou oi y".split()  # noqa: SIM905

# English function words (all on the answerer's stop list), weighted by repetition.
_FUNCTION_WORDS = (  # noqa: SIM905
    "the the the a a of of to to and and in in for with on is is are be by when if after "
    "before from at or each this that it its only than then can should will into while "
    "between over under both such any all no not these those which"
).split()
_COMMON_HEADINGS = [
    "Overview",
    "Requirements",
    "Installation",
    "Configuration",
    "Maintenance",
    "Troubleshooting",
    "Safety",
    "Specifications",
    "Limits",
    "Frequently asked questions",
    "Known issues",
    "Glossary",
]
_FACT_QUESTIONS = [
    "What is the {p} {a} for {b} {c}?",
    "How many {d} is the {p} {a}?",
    "Tell me about the {p} {a} for {c}.",
    "what's the {p} {a}",
]
_ABSENT_QUESTIONS = [
    "What is the {x} {a} for {b}?",
    "How do I {x} the {y}?",
    "Does the {x} work with {a} {b}?",
    "Where can I find the {x} {y} settings?",
]


# --- Corpus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    word: str  # the planted rare word, unique in the corpus
    a: str
    b: str
    c: str
    d: str
    doc_index: int


@dataclass
class Corpus:
    texts: list = field(default_factory=list)  # knowledge.services.DocumentText
    facts: list[Fact] = field(default_factory=list)
    predicted_chunks: int = 0
    vocabulary: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    chars: int = 0


class Generator:
    def __init__(self, rng: random.Random, vocabulary_size: int) -> None:
        from knowledge.text import stop_words

        self.rng = rng
        stop = stop_words("english")
        assert all(w in stop for w in _FUNCTION_WORDS), "function words must be stop words"
        self.stop = stop
        self.vocabulary = self._words(
            vocabulary_size, _VOCAB_ONSETS, _VOCAB_VOWELS, _VOCAB_CODAS, (2, 3)
        )
        # Zipf-like: the rank-r word is drawn with weight 1 / r^1.05.
        weights = [1.0 / (rank**1.05) for rank in range(1, len(self.vocabulary) + 1)]
        self._cum = list(_accumulate(weights))
        self._taken: set[str] = set(self.vocabulary)
        self.absent = self._words(400, _ABSENT_ONSETS, _ABSENT_VOWELS, ["", "x", "z"], (2, 3))

    def _words(self, n, onsets, vowels, codas, syllables) -> list[str]:
        words: dict[str, None] = {}
        while len(words) < n:
            word = "".join(
                self.rng.choice(onsets) + self.rng.choice(vowels) + self.rng.choice(codas)
                for _ in range(self.rng.randint(*syllables))
            )
            if len(word) >= 5 and word not in self.stop:
                words[word] = None
        return list(words)

    def word(self) -> str:
        return self.rng.choices(self.vocabulary, cum_weights=self._cum)[0]

    def specific_word(self) -> str:
        """A less common word (rank 100+), as the specific nouns of a fact."""
        return self.rng.choice(self.vocabulary[100:])

    def common_word(self) -> str:
        return self.rng.choice(self.vocabulary[20:500])

    def planted_word(self) -> str:
        while True:
            word = "z" + "".join(
                self.rng.choice(_VOCAB_VOWELS) + self.rng.choice(_VOCAB_ONSETS)
                for _ in range(self.rng.randint(2, 3))
            )
            word += self.rng.choice(_VOCAB_VOWELS) + "x"
            if word not in self._taken:
                self._taken.add(word)
                return word

    def sentence(self) -> str:
        tokens: list[str] = []
        length = self.rng.randint(7, 16)
        while len(tokens) < length:
            previous_function = bool(tokens) and tokens[-1] in _FUNCTION_WORDS
            roll = self.rng.random()
            if roll < 0.04:
                tokens.append(str(self.rng.choice([2, 3, 5, 10, 12, 24, 30, 48, 60, 90, 100])))
            elif not previous_function and roll < 0.45:
                tokens.append(self.rng.choice(_FUNCTION_WORDS))
            else:
                tokens.append(self.word())
        text = " ".join(tokens)
        return text[0].upper() + text[1:] + "."

    def heading(self) -> str:
        if self.rng.random() < 0.25:
            return self.rng.choice(_COMMON_HEADINGS)
        words = [self.word() for _ in range(self.rng.randint(1, 3))]
        return " ".join(words).capitalize()

    def fact(self, doc_index: int) -> tuple[Fact, str]:
        fact = Fact(
            word=self.planted_word(),
            a=self.specific_word(),
            b=self.specific_word(),
            c=self.specific_word(),
            d=self.specific_word(),
            doc_index=doc_index,
        )
        number = self.rng.choice([2, 4, 7, 15, 25, 40, 120, 365])
        sentence = f"The {fact.word} {fact.a} for {fact.b} {fact.c} is {number} {fact.d}."
        return fact, sentence

    def section(self, doc_index: int, facts: list[Fact]) -> str:
        level = "###" if self.rng.random() < 0.2 else "##"
        target = max(250, int(self.rng.gauss(SECTION_CHARS_MEAN, SECTION_CHARS_SD)))
        sentences: list[str] = []
        size = 0
        while size < target:
            sentences.append(self.sentence())
            size += len(sentences[-1]) + 1
        if self.rng.random() < FACT_PROBABILITY:
            fact, sentence = self.fact(doc_index)
            facts.append(fact)
            sentences.insert(self.rng.randint(0, len(sentences)), sentence)
        blocks: list[str] = []
        i = 0
        while i < len(sentences):
            if self.rng.random() < 0.15:  # a short bullet list
                items = sentences[i : i + self.rng.randint(2, 4)]
                blocks.append("\n".join(f"- {item}" for item in items))
                i += len(items)
            else:
                paragraph = sentences[i : i + self.rng.randint(2, 5)]
                blocks.append(" ".join(paragraph))
                i += len(paragraph)
        return f"{level} {self.heading()}\n\n" + "\n\n".join(blocks)

    def document(self, doc_index: int, facts: list[Fact]) -> tuple[str, str]:
        title = f"{self.word().capitalize()} {self.word()} guide {doc_index + 1}"
        sections = [
            self.section(doc_index, facts) for _ in range(self.rng.randint(*SECTIONS_PER_DOC))
        ]
        intro = " ".join(self.sentence() for _ in range(self.rng.randint(2, 4)))
        return title, f"# {title}\n\n{intro}\n\n" + "\n\n".join(sections) + "\n"


def _accumulate(values: list[float]):
    total = 0.0
    for value in values:
        total += value
        yield total


def build_corpus(*, seed: int, target_chunks: int, vocabulary_size: int = 3000) -> Corpus:
    """Documents until the chunker (run here on the same text) predicts ``target_chunks``."""
    from knowledge.chunking import chunk_document
    from knowledge.services import document_text_from_json

    gen = Generator(random.Random(seed), vocabulary_size)
    corpus = Corpus(vocabulary=gen.vocabulary, absent=gen.absent)
    while corpus.predicted_chunks < target_chunks:
        title, markdown = gen.document(len(corpus.texts), corpus.facts)
        text = document_text_from_json(title=title, content=markdown, fmt="markdown")
        corpus.texts.append(text)
        corpus.predicted_chunks += len(chunk_document(text.content, title=text.title))
        corpus.chars += len(text.content)
    return corpus


@dataclass(frozen=True)
class Question:
    text: str
    kind: str  # "fact" or "absent"
    fact: Fact | None = None


def build_questions(corpus: Corpus, *, n: int, seed: int) -> list[Question]:
    rng = random.Random(seed + 1)
    n_fact = round(n * FACT_SHARE)
    facts = (
        rng.sample(corpus.facts, n_fact)
        if len(corpus.facts) >= n_fact
        else [rng.choice(corpus.facts) for _ in range(n_fact)]
    )
    questions = [
        Question(
            rng.choice(_FACT_QUESTIONS).format(p=f.word, a=f.a, b=f.b, c=f.c, d=f.d), "fact", f
        )
        for f in facts
    ]
    common = corpus.vocabulary[20:500]
    for _ in range(n - n_fact):
        x, y = rng.sample(corpus.absent, 2)
        a, b = rng.sample(common, 2)
        questions.append(
            Question(rng.choice(_ABSENT_QUESTIONS).format(x=x, y=y, a=a, b=b), "absent")
        )
    rng.shuffle(questions)
    return questions


# --- Measuring -------------------------------------------------------------------------------


def summarise(samples_s: list[float]) -> dict[str, float | int]:
    ms = sorted(s * 1000 for s in samples_s)
    if len(ms) == 1:
        p50 = p95 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return {
        "n": len(ms),
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
    }


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def machine_info() -> dict[str, object]:
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    import django

    return {
        "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "platform": platform.platform(),
    }


def engine_info() -> dict[str, str]:
    from django.db import connection

    if connection.vendor == "sqlite":
        return {"engine": "sqlite", "version": connection.Database.sqlite_version}
    if connection.vendor == "postgresql":
        major, rest = divmod(connection.pg_version, 10000)
        return {"engine": "postgresql", "version": f"{major}.{rest}"}
    return {"engine": connection.vendor, "version": "?"}


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, object]:
    from knowledge.models import Chunk, Document, DocumentStatus
    from knowledge.retrieval import retrieve
    from knowledge.services import document_create, knowledge_ask
    from tests.factories import KnowledgeBaseFactory, OrganisationFactory

    # Corpus and questions first (pure Python, no database).
    gen_seconds, corpus = timed(lambda: build_corpus(seed=args.seed, target_chunks=args.chunks))
    questions = build_questions(corpus, n=args.questions, seed=args.seed)
    log(
        f"generated {len(corpus.texts)} documents ({corpus.predicted_chunks} chunks predicted, "
        f"{len(corpus.facts)} planted facts) in {gen_seconds:.1f} s"
    )

    org = OrganisationFactory(slug="bench", name="Bench")
    kb = KnowledgeBaseFactory(organisation=org, name="Bench knowledge")

    # Ingestion: one document_create per document, as the API does (each its own transaction).
    doc_ids: list[object] = []
    statuses: set[str] = set()
    started = time.perf_counter()
    for i, text in enumerate(corpus.texts):
        document, created = document_create(knowledge_base=kb, text=text)
        assert created, f"document {i} was a duplicate"
        doc_ids.append(document.pk)
        statuses.add(document.status)
        if (i + 1) % 50 == 0:
            log(f"  ingested {i + 1}/{len(corpus.texts)} documents")
    ingest_seconds = time.perf_counter() - started
    chunks = Chunk.objects.filter(knowledge_base=kb).count()
    ready = Document.objects.filter(knowledge_base=kb, status=DocumentStatus.READY).count()
    assert ready == len(doc_ids), f"only {ready}/{len(doc_ids)} documents ready ({statuses})"
    log(f"ingested {chunks} chunks in {ingest_seconds:.1f} s")

    # Baselines, each a fixed cheap query on the same database.
    brng = random.Random(args.seed + 2)
    probe_doc = doc_ids[len(doc_ids) // 2]
    baselines: dict[str, Callable[[], object]] = {
        "point lookup": lambda: Chunk.objects.filter(document_id=probe_doc, position=0).count(),
        "kb count pos=0": lambda: Chunk.objects.filter(knowledge_base=kb, position=0).count(),
        "retrieve 1 word": lambda: retrieve(
            kb=kb, question=brng.choice(corpus.vocabulary[:1000]), limit=8
        ),
    }

    def ask(question: Question):
        return knowledge_ask(kb=kb, question=question.text, record_gaps=False)

    for question in questions[:WARMUP_QUESTIONS]:  # warm caches and connections; not timed
        ask(question)
        for fn in baselines.values():
            fn()

    ask_times: dict[str, list[float]] = {"all": [], "fact": [], "absent": []}
    base_times: dict[str, list[float]] = {name: [] for name in baselines}
    right = answered_facts = refused = 0
    misses: list[dict[str, object]] = []  # the first few sanity failures, for the JSON report
    for i, question in enumerate(questions):
        for name, fn in baselines.items():
            base_times[name].append(timed(fn)[0])
        seconds, answer = timed(lambda q=question: ask(q))
        ask_times["all"].append(seconds)
        ask_times[question.kind].append(seconds)
        if question.kind == "fact":
            cited = {c.document for c in answer.citations}
            ok = answer.answered and doc_ids[question.fact.doc_index] in cited
            answered_facts += answer.answered
            right += ok
        else:
            ok = not answer.answered
            refused += ok
        if not ok and len(misses) < 10:
            misses.append(
                {
                    "question": question.text,
                    "kind": question.kind,
                    "answered": answer.answered,
                    "support": round(answer.support, 3),
                    "answer": answer.text[:200],
                }
            )
        if (i + 1) % 50 == 0:
            log(f"  asked {i + 1}/{len(questions)} questions")

    n_fact = len(ask_times["fact"])
    n_absent = len(ask_times["absent"])
    ask_summary = {kind: summarise(times) for kind, times in ask_times.items() if times}
    base_summary = {name: summarise(times) for name, times in base_times.items()}
    p50 = ask_summary["all"]["p50_ms"]
    return {
        "benchmark": "knowledge_ask",
        "database": engine_info(),
        "machine": machine_info(),
        "seed": args.seed,
        "corpus": {
            "documents": len(corpus.texts),
            "chunks_target": args.chunks,
            "chunks": chunks,
            "chunks_predicted": corpus.predicted_chunks,
            "planted_facts": len(corpus.facts),
            "vocabulary": len(corpus.vocabulary),
            "characters": corpus.chars,
            "generation_s": round(gen_seconds, 3),
        },
        "ingestion": {
            "seconds": round(ingest_seconds, 3),
            "chunks_per_s": round(chunks / ingest_seconds, 1),
            "documents_per_s": round(len(doc_ids) / ingest_seconds, 2),
        },
        "questions": {"total": len(questions), "fact": n_fact, "absent": n_absent},
        "ask": ask_summary,
        "baseline": base_summary,
        "ratio_ask_p50_to_baseline_p50": {
            name: round(p50 / s["p50_ms"], 1) if s["p50_ms"] else None
            for name, s in base_summary.items()
        },
        "sanity": {
            "fact_answered": answered_facts,
            "fact_right_document": right,
            "fact_right_document_rate": round(right / n_fact, 4) if n_fact else None,
            "absent_refused": refused,
            "absent_refused_rate": round(refused / n_absent, 4) if n_absent else None,
            "misses": misses,
        },
    }


def render(report: dict) -> str:
    db, machine, corpus = report["database"], report["machine"], report["corpus"]
    ing, ask, base = report["ingestion"], report["ask"], report["baseline"]
    sanity, questions = report["sanity"], report["questions"]
    lines = [
        f"knowledge_ask benchmark: {db['engine']} {db['version']}, seed {report['seed']}",
        f"machine: {machine['cpus']} CPUs, {machine['mem_gib']} GiB RAM, "
        f"Python {machine['python']}, Django {machine['django']}",
        f"corpus: {corpus['documents']} documents, {corpus['chunks']:,} chunks "
        f"(target {corpus['chunks_target']:,}), {corpus['planted_facts']:,} planted facts, "
        f"{corpus['characters'] / 1e6:.1f} M characters, vocabulary {corpus['vocabulary']:,}",
        f"ingestion: {corpus['documents']} x document_create in {ing['seconds']:.1f} s = "
        f"{ing['chunks_per_s']:,.0f} chunks/s ({ing['documents_per_s']:.1f} documents/s)",
        "",
        f"{'latency (ms)':<34}{'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'mean':>9}{'max':>9}",
    ]

    def row(label: str, s: dict) -> str:
        return (
            f"{label:<34}{s['n']:>5}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
            f"{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )

    lines.append(row("knowledge_ask, all questions", ask["all"]))
    if "fact" in ask:
        lines.append(row("  planted-fact questions", ask["fact"]))
    if "absent" in ask:
        lines.append(row("  absent-word questions", ask["absent"]))
    for name, s in base.items():
        lines.append(row(f"baseline: {name}", s))
    ratios = report["ratio_ask_p50_to_baseline_p50"]
    lines += [
        "",
        "ask p50 / baseline p50: " + ", ".join(f"{n} {r}x" for n, r in ratios.items()),
    ]
    if questions["fact"]:
        lines.append(
            f"sanity: planted-fact questions answered citing the right document "
            f"{sanity['fact_right_document']}/{questions['fact']} "
            f"({sanity['fact_right_document_rate']:.1%})"
        )
    if questions["absent"]:
        lines.append(
            f"sanity: absent-word questions refused {sanity['absent_refused']}/"
            f"{questions['absent']} ({sanity['absent_refused_rate']:.1%})"
        )
    return "\n".join(lines)


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return number

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge_ask", description=__doc__)
    parser.add_argument("--chunks", type=_bounded(50, 200_000), default=10_000)
    parser.add_argument("--questions", type=_bounded(1, 10_000), default=200)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import django

    django.setup()
    from django.db import connections
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    # Per-document INFO lines would drown the output; warnings still show.
    logging.getLogger("systimz").setLevel(logging.WARNING)

    # A private test database name, so neither the development database nor a test database
    # of a concurrent pytest run is touched (Django would clobber an existing test_<name>).
    settings_dict = connections["default"].settings_dict
    tmpdir = None
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        tmpdir = tempfile.mkdtemp(prefix="systimz-bench-")
        settings_dict["TEST"]["NAME"] = os.path.join(tmpdir, "bench.sqlite3")
    else:
        settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_bench_{os.getpid()}"

    setup_test_environment(debug=False)
    started = time.perf_counter()
    old_config = setup_databases(
        verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set()
    )
    log(
        f"test database {connections['default'].settings_dict['NAME']} ready "
        f"in {time.perf_counter() - started:.1f} s"
    )
    try:
        report = run(args, log)
    finally:
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    if args.json:
        print(json.dumps(report, sort_keys=False))
    else:
        print(render(report))
    return 0 if math.isfinite(report["ask"]["all"]["p50_ms"]) else 1


if __name__ == "__main__":
    sys.exit(main())
