"""The built-in local avatar end to end: REST start, speak, the audio the player fetches and
the events timed from it, interrupt and stop cutting speech."""

from __future__ import annotations

import io
import wave
from datetime import datetime

import pytest

from avatars.providers import local_tts
from sessions.local_media import local_engine
from sessions.models import AvatarSession
from tests import factories

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not local_tts.is_available(), reason="requirements-tts.txt not installed"),
]
WAIT = 60.0  # seconds a speaker may take to finish (a bound, not a measurement)


@pytest.fixture
def local_avatar(tenant):
    voice = factories.VoicePresetFactory(
        organisation=tenant.org, voice_id="joe", rate=1.2, emotion="friendly"
    )
    return factories.AvatarFactory(organisation=tenant.org, slug="guide", voice_preset=voice)


def _start(tenant) -> dict:
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "guide"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _speak(tenant, session_id: str, text: str) -> str:
    response = tenant.client.post(
        f"/api/v1/sessions/{session_id}/speak", {"text": text, "mode": "repeat"}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def _wait_quiet(session_id: str) -> None:
    psid = AvatarSession.objects.get(pk=session_id).provider_session_id
    assert local_engine().wait_idle(psid, WAIT)


def _events(tenant, session_id: str, task_id: str) -> list[dict]:
    """The avatar's events for one task, in order."""
    body = tenant.client.get(f"/api/v1/sessions/{session_id}/events/", {"after": 0}).json()
    events = body["results"] if isinstance(body, dict) else body
    return [e for e in events if e["type"] != "task" and e.get("task_id") == task_id]


def _audio(client, session: dict, task_id: str) -> list[tuple[dict, bytes, int]]:
    """Every chunk the player would fetch: (headers, pcm, sample rate), until the last."""
    chunks = []
    for index in range(100):
        url = f"{session['media']['audio_url']}{task_id}/{index}.wav"
        response = client.get(url, {"token": session["player"]["token"]})
        if response.status_code == 404:
            break
        assert response.status_code == 200
        assert response["Content-Type"] == "audio/wav"
        with wave.open(io.BytesIO(response.content)) as wav:
            chunks.append((response, wav.readframes(wav.getnframes()), wav.getframerate()))
        if response["X-Chunk-Last"] == "1":
            break
    return chunks


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["at"]).timestamp() * 1000


def test_speak_produces_audio_and_events_timed_from_it(tenant, local_avatar):
    session = _start(tenant)
    assert session["provider"] == "local"
    assert session["media"]["kind"] == "local"
    assert session["media"]["audio_url"] == f"/media/local/{session['id']}/"
    assert (session["media"]["rate"], session["media"]["emotion"]) == (1.2, "friendly")
    text = "Hello, and welcome. I am the local avatar, speaking from this very machine."
    task_id = _speak(tenant, session["id"], text)
    _wait_quiet(session["id"])

    events = _events(tenant, session["id"], task_id)
    kinds = [e["type"] for e in events]
    words = [e for e in events if e["type"] == "avatar_talking_message"]
    assert kinds == [
        "avatar_start_talking",
        *["avatar_talking_message"] * len(text.split()),
        "avatar_end_message",
        "avatar_stop_talking",
    ]
    assert "".join(e["message"] for e in words) == text  # HeyGen's clients join with ""
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    chunks = _audio(tenant.client, session, task_id)
    assert chunks
    assert chunks[-1][0]["X-Chunk-Last"] == "1"
    rate = chunks[0][2]
    audio_ms = sum(len(pcm) for _, pcm, _ in chunks) / 2 / rate * 1000
    stop = events[-1]
    assert stop["duration_ms"] == pytest.approx(audio_ms, abs=1.0)
    assert all(w["end_ms"] <= audio_ms + 1 for w in words)
    # Timed from the audio: no word is announced before it is heard, nor the stop before the
    # audio has had time to play.
    start_at = _at(events[0])
    for word in words:
        assert _at(word) - start_at >= word["start_ms"] - 2
    assert _at(stop) - start_at >= audio_ms - 2

    detail = tenant.client.get(f"/api/v1/sessions/{session['id']}/").json()
    assert detail["transcript"][-1]["text"] == text
    assert detail["transcript"][-1]["duration_ms"] == stop["duration_ms"]


def test_voice_rate_changes_the_speech_rate(tenant, local_avatar):
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    durations = {}
    for rate in (0.7, 1.4):
        local_avatar.voice_preset.rate = rate
        local_avatar.voice_preset.save()
        session = _start(tenant)
        task_id = _speak(tenant, session["id"], text)
        _wait_quiet(session["id"])
        durations[rate] = _events(tenant, session["id"], task_id)[-1]["duration_ms"]
        tenant.client.post(f"/api/v1/sessions/{session['id']}/stop")
    assert durations[0.7] > 1.5 * durations[1.4]


def test_interrupt_cuts_speech_and_drops_the_queue(tenant, local_avatar):
    session = _start(tenant)
    long_text = " ".join(["This sentence goes on for quite a while, and then some more."] * 8)
    first = _speak(tenant, session["id"], long_text)
    queued = _speak(tenant, session["id"], "You should never hear this.")
    psid = AvatarSession.objects.get(pk=session["id"]).provider_session_id
    engine = local_engine()
    # Wait until speech is under way, from the log: the first words have been said.
    for _ in range(int(WAIT / 0.05)):
        if any(
            e["type"] == "avatar_talking_message" for e in _events(tenant, session["id"], first)
        ):
            break
        assert not engine.wait_idle(psid, 0.05), "the speech ended before it was interrupted"
    assert tenant.client.post(f"/api/v1/sessions/{session['id']}/interrupt").status_code == 200
    _wait_quiet(session["id"])

    events = _events(tenant, session["id"], first)
    assert events[-1]["type"] == "avatar_stop_talking"
    assert events[-1]["interrupted"] is True
    assert "avatar_end_message" not in [e["type"] for e in events]
    spoken = [e for e in events if e["type"] == "avatar_talking_message"]
    assert 0 < len(spoken) < len(long_text.split())
    assert _events(tenant, session["id"], queued) == []  # dropped, never begun

    after = _speak(tenant, session["id"], "Back again.")  # speaks normally after a cut
    _wait_quiet(session["id"])
    assert _events(tenant, session["id"], after)[-1]["type"] == "avatar_stop_talking"


def test_stop_ends_speech_and_nothing_follows_the_close(tenant, local_avatar):
    session = _start(tenant)
    _speak(tenant, session["id"], " ".join(["A long announcement that keeps going."] * 10))
    assert tenant.client.post(f"/api/v1/sessions/{session['id']}/stop").status_code == 200
    _wait_quiet(session["id"])
    body = tenant.client.get(f"/api/v1/sessions/{session['id']}/events/", {"after": 0}).json()
    events = body["results"] if isinstance(body, dict) else body
    closing = [e for e in events if e["type"] == "session_state" and e["status"] == "closed"]
    assert len(closing) == 1
    assert [e for e in events if e["seq"] > closing[0]["seq"]] == []


def test_audio_needs_the_sessions_own_token(tenant, local_avatar):
    one, other = _start(tenant), _start(tenant)
    task_id = _speak(tenant, one["id"], "Only for my player.")
    _wait_quiet(one["id"])
    url = f"{one['media']['audio_url']}{task_id}/0.wav"
    assert tenant.client.get(url, {"token": one["player"]["token"]}).status_code == 200
    for token in (other["player"]["token"], "forged", ""):
        response = tenant.client.get(url, {"token": token})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_chat_is_answered_by_systimz_and_spoken_by_the_local_voice(tenant, local_avatar):
    from knowledge import services as knowledge_services

    kb = factories.KnowledgeBaseFactory(organisation=tenant.org)
    text = knowledge_services.document_text_from_json(
        title="Hours",
        content="The shop opens at nine in the morning and closes at six in the evening.",
        fmt="text",
    )
    knowledge_services.document_create(knowledge_base=kb, text=text)
    local_avatar.knowledge_base = kb
    local_avatar.save()
    session = _start(tenant)
    response = tenant.client.post(
        f"/api/v1/sessions/{session['id']}/speak",
        {"text": "When does the shop open?", "mode": "chat"},
        format="json",
    )
    assert response.status_code == 202
    _wait_quiet(session["id"])
    events = _events(tenant, session["id"], response.json()["task_id"])
    said = "".join(e["message"] for e in events if e["type"] == "avatar_talking_message")
    assert "nine" in said
