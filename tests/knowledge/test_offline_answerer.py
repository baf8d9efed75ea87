from __future__ import annotations

from knowledge.answerers import OfflineAnswerer, Turn


def _ask(kb, question, history=()):
    return OfflineAnswerer().answer(kb=kb, question=question, history=history)


def test_answers_with_the_supporting_sentence_and_cites_it(kettle_kb):
    answer = _ask(kettle_kb, "How long is the warranty?")
    assert answer.answered
    assert (
        answer.text == "Every Boilo kettle has a warranty of two years from the date of purchase."
    )
    [citation] = answer.citations
    assert citation.title == "Warranty"
    assert citation.quote == answer.text
    assert answer.support >= 0.5


def test_refuses_with_the_fallback_text_when_nothing_supports_an_answer(kettle_kb):
    for question in ("Does the kettle work with Zigbee?", "What is the capital of Peru?", "?"):
        answer = _ask(kettle_kb, question)
        assert not answer.answered, question
        assert answer.text == "I don't know that one."
        assert answer.citations == []


def test_common_words_alone_do_not_make_an_answer(kettle_kb):
    # "kettle" is everywhere; "bluetooth" nowhere: the rare word decides.
    assert not _ask(kettle_kb, "Does the kettle have bluetooth?").answered


def test_synonyms_and_typos(kettle_kb):
    price = _ask(kettle_kb, "What is the price of delivery inside the EU?")
    assert price.answered
    assert "4.95 euros" in price.text
    typo = _ask(kettle_kb, "how long is the warrenty")
    assert typo.answered
    assert typo.citations[0].title == "Warranty"


def test_a_short_follow_up_borrows_the_previous_question(kettle_kb):
    history = [Turn("user", "Where do orders ship from?"), Turn("avatar", "From Rotterdam.")]
    answer = _ask(kettle_kb, "And the cost?", history)
    assert answer.answered
    assert answer.citations[0].title == "Shipping"


def test_markdown_tables_answer_row_by_row(tenant):
    from tests import factories
    from tests.knowledge.conftest import load

    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    load(
        kb,
        {
            "Parts": (
                "# Parts\n\n| Part | Code | Price |\n|---|---|---|\n"
                "| Lid | L-1 | $9 |\n| Filter | F-2 | $4 |"
            )
        },
    )
    answer = _ask(kb, "How much does the filter cost?")
    assert answer.text == "Part: Filter; Code: F-2; Price: $4."
