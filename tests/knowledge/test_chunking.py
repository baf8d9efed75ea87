from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from knowledge.chunking import HEADING_SEPARATOR, chunk_document


def _sentence(n: int, size: int = 60) -> str:
    body = f"Sentence {n} " + "word " * ((size - 14) // 5)
    return body.strip() + "."


def test_chunks_never_cross_headings_and_carry_the_heading_path():
    doc = (
        "# Guide\n\nIntro sentence.\n\n## Setup\n\nPlug it in.\n\n"
        "### Wi-Fi\n\nPress pair.\n\n## Care\n\nRinse it."
    )
    chunks = chunk_document(doc, title="Guide")
    assert [(c.heading, c.text) for c in chunks] == [
        ("Guide", "Intro sentence."),
        (f"Guide{HEADING_SEPARATOR}Setup", "Plug it in."),
        (f"Guide{HEADING_SEPARATOR}Setup{HEADING_SEPARATOR}Wi-Fi", "Press pair."),
        (f"Guide{HEADING_SEPARATOR}Care", "Rinse it."),
    ]
    assert [c.position for c in chunks] == [0, 1, 2, 3]


def test_long_sections_split_at_sentences_with_one_sentence_of_overlap():
    doc = " ".join(_sentence(n) for n in range(30))
    chunks = chunk_document(doc, title="T", target_chars=300, max_chars=400)
    assert len(chunks) > 5
    for before, after in itertools.pairwise(chunks):
        last_sentence = before.text.rsplit(". ", 1)[-1]
        assert after.text.startswith(last_sentence.removesuffix("."))
    for chunk in chunks:
        assert len(chunk.text) <= 400
        assert chunk.text.endswith(".")


def test_a_sentence_longer_than_max_is_cut_at_words():
    giant = "word " * 500
    chunks = chunk_document(giant, title="T", target_chars=200, max_chars=250)
    assert all(len(c.text) <= 250 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == giant.split()


def test_empty_sections_make_no_chunks():
    assert chunk_document("# Only a heading\n\n## Another", title="x") == []


@settings(max_examples=60, deadline=None)
@given(
    paragraphs=st.lists(
        st.lists(st.integers(min_value=5, max_value=300), min_size=1, max_size=12),
        min_size=1,
        max_size=8,
    ),
    target=st.integers(min_value=100, max_value=800),
)
def test_every_sentence_lands_in_a_chunk_in_order(paragraphs, target):
    counter = 0
    blocks = []
    for sizes in paragraphs:
        sentences = []
        for size in sizes:
            sentences.append(_sentence(counter, size))
            counter += 1
        blocks.append("## Section\n\n" + " ".join(sentences))
    chunks = chunk_document(
        "\n\n".join(blocks), title="Doc", target_chars=target, max_chars=target + 400
    )
    seen = [int(w) for c in chunks for w in c.text.replace(".", " ").split() if w.isdigit()]
    # Overlap repeats a sentence; removing consecutive repeats gives every sentence once, in order.
    deduped = [n for i, n in enumerate(seen) if i == 0 or n != seen[i - 1]]
    assert sorted(set(seen)) == list(range(counter))
    assert deduped == sorted(deduped)
    assert all(len(c.text) <= target + 400 for c in chunks)
