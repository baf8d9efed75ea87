from __future__ import annotations

from knowledge import text
from tests.knowledge.pdf import make_pdf


def test_normalise_text():
    raw = "\ufeffTitle\r\n\r\n\r\n\r\nA  line\twith   spaces   \x07\r\nEnd"
    assert text.normalise_text(raw) == "Title\n\nA line with spaces\nEnd"


def test_html_keeps_headings_and_lists_and_drops_scripts_and_navigation():
    html = """<html><head><title>Returns policy</title><style>p{color:red}</style></head>
    <body><nav><a href="/">Home</a> | <a href="/shop">Shop</a></nav>
    <h1>Returns</h1><p>You may return items within <b>30 days</b>.</p>
    <h2>Exceptions</h2><ul><li>Opened filters</li><li>Gift cards</li></ul>
    <script>track('x')</script><footer>© Brightwater</footer></body></html>"""
    content, title = text.html_to_text(html)
    assert title == "Returns policy"
    assert content == (
        "# Returns\n\nYou may return items within 30 days.\n\n## Exceptions\n\n"
        "- Opened filters\n\n- Gift cards"
    )
    for noise in ("track(", "color:red", "Home", "Brightwater"):
        assert noise not in content


def test_pdf_text_of_every_page():
    data = make_pdf(["Warranty lasts two years.", "Batteries are covered for one year."])
    assert (
        text.pdf_to_text(data) == "Warranty lasts two years.\n\nBatteries are covered for one year."
    )


def test_sentences_respect_abbreviations_and_lines():
    paragraph = (
        "It costs approx. 20 USD, e.g. in Europe. Shipping is free! Is it fast? Yes.\n- A list item"
    )
    assert text.split_sentences(paragraph) == [
        "It costs approx. 20 USD, e.g. in Europe.",
        "Shipping is free!",
        "Is it fast?",
        "Yes.",
        "- A list item",
    ]


def test_content_terms_stem_and_drop_stop_words():
    assert text.content_terms("How do I get my refunds issued?") == ["refund", "issu"]
    assert text.content_terms("Wie lange dauern Rücksendungen?", "german") == [
        "wie",
        "lang",
        "dau",
        "rucksend",
    ]


def test_ts_config_from_language_tags():
    assert [text.ts_config(tag) for tag in ("en", "en-GB", "de-AT", "xx", None, "")] == [
        "english",
        "english",
        "german",
        "simple",
        "english",
        "english",
    ]
