"""The HeyGen Interactive Avatar client against the emulator, over real HTTP on loopback."""

from __future__ import annotations

import logging

import httpx
import pytest

from avatars.providers import errors
from avatars.providers.base import SessionRequest, Voice
from avatars.providers.heygen import HeyGenInteractive
from avatars.providers.http import RetryPolicy
from tests.emulators.heygen import HeyGenEmulator

KEY = "hg-trial-key-5f1e2d3c4b5a6978"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock):
    server = HeyGenEmulator(
        keys={KEY: "trial", "hg-enterprise-key-0000": "enterprise"}, clock=clock
    ).start()
    yield server
    server.stop()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)  # record the backoff instead of waiting it out


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(emulator, sleeps):
    heygen = HeyGenInteractive(
        api_key=KEY,
        base_url=emulator.base_url,
        timeout=httpx.Timeout(1.0),
        retry=RetryPolicy(max_retries=2, initial_delay=0.01),
        sleep=sleeps,
    )
    yield heygen
    heygen.close()


REQUEST = SessionRequest(
    avatar_id="Wayne_20240711",
    quality="high",
    voice=Voice(voice_id="v-123", rate=1.25, emotion="friendly"),
    language="en",
    knowledge_prompt="PERSONA: a guide",
    idle_timeout_seconds=90,
)


def test_create_sends_the_documented_body_and_returns_livekit_media(client, emulator):
    session = client.create(REQUEST)

    [call] = emulator.received("streaming.new")
    assert call["path"] == "/v1/streaming.new"
    assert call["headers"]["x-api-key"] == KEY
    assert call["json"] == {
        "avatar_id": "Wayne_20240711",
        "quality": "high",
        "version": "v2",
        "video_encoding": "H264",
        "voice": {"voice_id": "v-123", "rate": 1.25, "emotion": "Friendly"},
        "language": "en",
        "knowledge_base": "PERSONA: a guide",
        "activity_idle_timeout": 90,
    }
    assert session.media["kind"] == "livekit"
    assert session.media["url"].startswith("wss://")
    assert session.media["access_token"].count(".") == 2  # a JWT
    assert session.duration_limit_seconds == 600
    assert [s.session_id for s in client.list_active()] == [session.session_id]


def test_a_provider_knowledge_base_id_wins_over_the_prompt(client, emulator):
    client.create(
        SessionRequest(avatar_id="Wayne_20240711", knowledge_base_id="kb-9", knowledge_prompt="x")
    )
    body = emulator.received("streaming.new")[0]["json"]
    assert body["knowledge_base_id"] == "kb-9"
    assert "knowledge_base" not in body


def test_the_session_lifecycle(client, emulator):
    session = client.create(REQUEST)
    client.start(session.session_id)
    task = client.speak(session.session_id, "Hello there, welcome aboard.", "repeat")
    assert task.duration_ms == pytest.approx(4 / 2.5 * 1000)
    client.speak(session.session_id, "What do you sell?", "chat")
    client.interrupt(session.session_id)
    client.keep_alive(session.session_id)
    client.stop(session.session_id)

    [task_call, chat_call] = emulator.received("streaming.task")
    assert task_call["json"] == {
        "session_id": session.session_id,
        "text": "Hello there, welcome aboard.",
        "task_type": "repeat",
        "task_mode": "async",
    }
    assert chat_call["json"]["task_type"] == "chat"
    events = emulator.sessions[session.session_id].events
    first = [e for e in events if e.get("task_id") == task.task_id]
    assert [e["type"] for e in first][:2] == ["avatar_start_talking", "avatar_talking_message"]
    assert (
        "".join(e["message"] for e in first if e["type"] == "avatar_talking_message")
        == "Hello there, welcome aboard."
    )
    assert client.list_active() == []


def test_wrong_state_and_unknown_session_are_typed(client):
    session = client.create(REQUEST)
    with pytest.raises(errors.ProviderConflict, match="session state wrong: new"):
        client.speak(session.session_id, "too early")
    with pytest.raises(errors.ProviderNotFound):
        client.keep_alive("no-such-session")


def test_stop_is_idempotent(client):
    session = client.create(REQUEST)
    client.stop(session.session_id)
    client.stop(session.session_id)  # closed: fine
    client.stop("never-existed")  # unknown: fine


def test_the_trial_cap_is_the_providers_concurrency_error(client, emulator):
    for _ in range(3):
        client.create(REQUEST)
    with pytest.raises(errors.ProviderConcurrencyLimit) as info:
        client.create(REQUEST)
    assert info.value.code == 10007
    assert len(emulator.received("streaming.new")) == 4  # refused, not retried


def test_an_unknown_avatar_is_an_invalid_request(client):
    with pytest.raises(errors.ProviderInvalidRequest, match="avatar not found"):
        client.create(SessionRequest(avatar_id="Nobody"))


def test_a_bad_key_is_an_auth_error(emulator):
    bad = HeyGenInteractive(api_key="wrong-key-000000", base_url=emulator.base_url)
    with pytest.raises(errors.ProviderAuthError):
        bad.list_active()


def test_idle_timeout_and_duration_limit_close_sessions(client, clock):
    session = client.create(REQUEST)
    client.start(session.session_id)
    clock.now += 60
    client.keep_alive(session.session_id)  # resets the idle timer (90 s)
    clock.now += 60
    client.keep_alive(session.session_id)
    clock.now += 91
    with pytest.raises(errors.ProviderConflict, match="closed"):
        client.keep_alive(session.session_id)


def test_rate_limits_are_retried_after_the_providers_delay(client, emulator, sleeps):
    session = client.create(REQUEST)
    emulator.fail_next("streaming.keep_alive", "rate_limited", retry_after=1.5)
    client.start(session.session_id)
    client.keep_alive(session.session_id)
    assert len(emulator.received("streaming.keep_alive")) == 2
    assert sleeps == [1.5]


def test_server_errors_on_idempotent_calls_are_retried_until_they_land(client, emulator, sleeps):
    session = client.create(REQUEST)
    emulator.fail_next("streaming.stop", "status", status=503, times=2)
    client.stop(session.session_id)
    assert len(emulator.received("streaming.stop")) == 3
    assert len(sleeps) == 2
    assert client.list_active() == []


def test_retries_are_bounded(client, emulator):
    session = client.create(REQUEST)
    emulator.fail_next("streaming.stop", "status", status=500, times=5)
    with pytest.raises(errors.ProviderUnavailable):
        client.stop(session.session_id)
    assert len(emulator.received("streaming.stop")) == 3  # 1 + max_retries


@pytest.mark.parametrize(
    ("kind", "options", "error"),
    [
        ("status", {"status": 500}, errors.ProviderUnavailable),
        ("status", {"status": 502, "body": "<html>bad gateway</html>"}, errors.ProviderUnavailable),
        ("unauthorized", {}, errors.ProviderAuthError),
        ("malformed", {}, errors.ProviderBadResponse),
        ("hang", {"seconds": 3}, errors.ProviderTimeout),
        ("lost", {}, errors.ProviderUnavailable),
    ],
)
def test_a_create_is_never_blindly_resent(client, emulator, kind, options, error):
    emulator.fail_next("streaming.new", kind, **options)
    with pytest.raises(error):
        client.create(REQUEST)
    assert len(emulator.received("streaming.new")) == 1


def test_a_lost_create_answer_leaves_a_session_that_listing_finds(client, emulator):
    emulator.fail_next("streaming.new", "lost")
    with pytest.raises(errors.ProviderUnavailable) as info:
        client.create(REQUEST)
    assert info.value.connected
    [orphan] = client.list_active()
    assert orphan.session_id in emulator.sessions


def test_a_create_that_never_connected_is_retried(emulator, sleeps):
    dead = HeyGenInteractive(
        api_key=KEY,
        base_url="http://127.0.0.1:9",  # nothing listens on the discard port
        retry=RetryPolicy(max_retries=2, initial_delay=0.01),
        sleep=sleeps,
    )
    with pytest.raises(errors.ProviderUnavailable) as info:
        dead.create(REQUEST)
    assert not info.value.connected
    assert len(sleeps) == 2


def test_the_key_never_reaches_logs_or_errors(client, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.fail_next("streaming.new", "unauthorized")
    with pytest.raises(errors.ProviderAuthError) as info:
        client.create(REQUEST)
    session = client.create(REQUEST)
    client.stop(session.session_id)
    assert KEY not in caplog.text
    assert KEY not in str(info.value)
    assert "provider.call provider=heygen operation=create status=200" in caplog.text
