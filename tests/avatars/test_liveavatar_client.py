"""The LiveAvatar client against the emulator, over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import logging
import uuid

import httpx
import pytest

from avatars.providers import errors
from avatars.providers.base import SessionRequest, Voice
from avatars.providers.http import RetryPolicy
from avatars.providers.liveavatar import LiveAvatar, parse_envelope
from tests.emulators.liveavatar import (
    DEFAULT_AVATARS,
    ERR_AVATAR_NOT_FOUND,
    ERR_CONCURRENCY,
    LiveAvatarEmulator,
)

KEY = "la-trial-key-9c8b7a6f5e4d3c2b"
ENTERPRISE = "la-enterprise-key-0000"
AVATAR = DEFAULT_AVATARS[0]
CONTEXT = "5b2a1c3d-0e9f-4a8b-9c7d-6e5f4a3b2c1d"


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
    server = LiveAvatarEmulator(keys={KEY: "trial", ENTERPRISE: "enterprise"}, clock=clock).start()
    yield server
    server.stop()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)  # record the backoff instead of waiting it out


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(base_url: str, sleeps: Sleeps, key: str = KEY, **options) -> LiveAvatar:
    return LiveAvatar(
        api_key=key,
        base_url=base_url,
        timeout=httpx.Timeout(1.0),
        retry=RetryPolicy(max_retries=2, initial_delay=0.01),
        sleep=sleeps,
        **options,
    )


@pytest.fixture
def client(emulator, sleeps):
    # An injected transport: the short-lived start client borrows it and must not close it.
    transport = httpx.HTTPTransport()
    liveavatar = make_client(emulator.base_url, sleeps, transport=transport)
    yield liveavatar
    liveavatar.close()
    transport.close()


REQUEST = SessionRequest(
    avatar_id=AVATAR,
    quality="high",
    voice=Voice(voice_id="v-123", rate=1.1, emotion="friendly"),
    language="en",
    knowledge_base_id=CONTEXT,
    knowledge_prompt="PERSONA: a guide",
    idle_timeout_seconds=90,
    max_duration_seconds=300,
)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- create: what is sent, what comes back ---------------------------------------------------


def test_create_mints_a_token_with_the_key_then_starts_with_the_session_token(client, emulator):
    session = client.create(REQUEST)

    [token] = emulator.received("sessions/token")
    assert (token["method"], token["path"]) == ("POST", "/v1/sessions/token")
    assert token["headers"]["x-api-key"] == KEY
    assert "authorization" not in token["headers"]
    assert token["json"] == {
        "avatar_id": AVATAR,
        "mode": "FULL",
        "video_settings": {"quality": "high", "encoding": "H264"},
        "avatar_persona": {
            "voice_id": "v-123",
            "voice_settings": {"speed": 1.1},
            "language": "en",
            "context_id": CONTEXT,
        },
        "max_session_duration": 300,
    }  # no emotion, idle timeout or inline prompt: LiveAvatar has no place for them
    [start] = emulator.received("sessions/start")
    assert (start["method"], start["path"]) == ("POST", "/v1/sessions/start")
    assert start["headers"]["authorization"] == f"Bearer {session.extra['session_token']}"
    assert "x-api-key" not in start["headers"]  # the key does not travel with the start
    assert start["json"] == {"session_id": session.session_id}

    assert session.media["kind"] == "livekit"
    assert session.media["url"].startswith("wss://")
    assert jwt_claims(session.media["access_token"])["video"]["room"] == session.session_id
    assert session.duration_limit_seconds == 300
    assert session.extra["ws_url"].startswith("wss://")
    assert jwt_claims(session.extra["session_token"])["start_session_data"] == {"mode": "FULL"}
    assert emulator.sessions[session.session_id].status == "started"
    assert [s.session_id for s in client.list_active()] == [session.session_id]


@pytest.mark.parametrize("quality", ["high", "medium", "low"])
def test_our_quality_is_liveavatars_video_quality(client, emulator, quality):
    client.create(SessionRequest(avatar_id=AVATAR, quality=quality))
    assert emulator.received("sessions/token")[0]["json"]["video_settings"]["quality"] == quality


@pytest.mark.parametrize(("rate", "speed"), [(0.5, 0.8), (1.0, 1.0), (1.5, 1.2)])
def test_the_voice_rate_is_clamped_to_liveavatars_speed_range(client, emulator, rate, speed):
    client.create(SessionRequest(avatar_id=AVATAR, voice=Voice(voice_id="v-1", rate=rate)))
    persona = emulator.received("sessions/token")[0]["json"]["avatar_persona"]
    assert persona == {"voice_id": "v-1", "voice_settings": {"speed": speed}}


def test_a_bare_request_sends_only_what_it_has(client, emulator):
    session = client.create(SessionRequest(avatar_id=AVATAR))
    assert emulator.received("sessions/token")[0]["json"] == {
        "avatar_id": AVATAR,
        "mode": "FULL",
        "video_settings": {"quality": "medium", "encoding": "H264"},
    }
    assert session.duration_limit_seconds == 600  # the trial plan's longest session


def test_a_duration_past_the_plan_is_cut_to_what_the_provider_grants(client):
    session = client.create(SessionRequest(avatar_id=AVATAR, max_duration_seconds=5000))
    assert session.duration_limit_seconds == 600


def test_the_interactivity_type_is_a_client_option(emulator, sleeps):
    ptt = make_client(emulator.base_url, sleeps, interactivity_type="PUSH_TO_TALK")
    ptt.create(SessionRequest(avatar_id=AVATAR))
    assert emulator.received("sessions/token")[0]["json"]["interactivity_type"] == "PUSH_TO_TALK"


# --- the rest of the lifecycle ----------------------------------------------------------------


def test_start_is_a_no_op_because_create_started_the_session(client, emulator):
    session = client.create(REQUEST)
    sent = len(emulator.requests)
    client.start(session.session_id)
    assert len(emulator.requests) == sent


def test_speak_and_interrupt_are_refused_because_they_go_over_the_media_room(client, emulator):
    session = client.create(REQUEST)
    sent = len(emulator.requests)
    with pytest.raises(errors.ProviderInvalidRequest, match="data channel"):
        client.speak(session.session_id, "Hello", "repeat")
    with pytest.raises(errors.ProviderInvalidRequest, match="interrupt"):
        client.interrupt(session.session_id)
    assert len(emulator.requests) == sent


def test_the_session_lifecycle(client, emulator):
    session = client.create(REQUEST)
    client.start(session.session_id)
    client.keep_alive(session.session_id)
    client.stop(session.session_id)

    [keep] = emulator.received("sessions/keep-alive")
    assert keep["path"] == "/v1/sessions/keep-alive"
    assert keep["headers"]["x-api-key"] == KEY
    assert keep["json"] == {"session_id": session.session_id}
    [stop] = emulator.received("sessions/stop")
    assert stop["path"] == "/v1/sessions/stop"
    assert stop["headers"]["x-api-key"] == KEY
    assert stop["json"] == {"session_id": session.session_id, "reason": "USER_CLOSED"}
    assert emulator.sessions[session.session_id].stop_reason == "USER_CLOSED"
    assert client.list_active() == []
    [listing, *_] = emulator.received("sessions")
    assert listing["method"] == "GET"
    assert listing["headers"]["x-api-key"] == KEY
    assert listing["query"] == {"type": "active", "page": "1", "page_size": "100"}


def test_stop_is_idempotent(client, emulator):
    session = client.create(REQUEST)
    client.stop(session.session_id)
    client.stop(session.session_id)  # already stopped: fine
    client.stop(str(uuid.uuid4()))  # unknown: fine
    assert len(emulator.received("sessions/stop")) == 3  # each answered, none retried


def test_wrong_state_and_unknown_session_are_typed(client):
    session = client.create(REQUEST)
    client.stop(session.session_id)
    with pytest.raises(errors.ProviderConflict, match="session state wrong: stopped"):
        client.keep_alive(session.session_id)
    with pytest.raises(errors.ProviderNotFound):
        client.keep_alive(str(uuid.uuid4()))
    with pytest.raises(errors.ProviderInvalidRequest, match="UUID"):
        client.keep_alive("not-a-uuid")  # FastAPI's 422


def test_keep_alive_holds_off_the_idle_timeout(client, emulator, clock):
    session = client.create(REQUEST)
    for _ in range(2):
        clock.now += 100
        client.keep_alive(session.session_id)  # the emulator's idle timeout is 120 s
    clock.now += 121
    with pytest.raises(errors.ProviderConflict, match="stopped"):
        client.keep_alive(session.session_id)
    assert emulator.sessions[session.session_id].stop_reason == "IDLE_TIMEOUT"


def test_the_session_ends_at_its_max_duration(client, emulator, clock):
    session = client.create(REQUEST)  # 300 s
    for _ in range(3):
        clock.now += 100
        client.keep_alive(session.session_id)
    clock.now += 1
    with pytest.raises(errors.ProviderConflict):
        client.keep_alive(session.session_id)
    assert emulator.sessions[session.session_id].stop_reason == "MAX_DURATION_REACHED"
    assert client.list_active() == []


# --- provider refusals ------------------------------------------------------------------------


def test_the_trial_cap_is_the_providers_concurrency_error_and_is_not_retried(
    client, emulator, sleeps
):
    first, *_ = [client.create(REQUEST) for _ in range(3)]
    with pytest.raises(errors.ProviderConcurrencyLimit) as info:
        client.create(REQUEST)
    assert (info.value.status, info.value.code) == (429, ERR_CONCURRENCY)
    assert len(emulator.received("sessions/token")) == 4
    assert len(emulator.received("sessions/start")) == 3
    assert sleeps == []
    client.stop(first.session_id)
    client.create(REQUEST)  # a stop frees the slot


def test_an_unknown_avatar_is_an_invalid_request(client):
    with pytest.raises(errors.ProviderInvalidRequest, match="avatar not found") as info:
        client.create(SessionRequest(avatar_id=str(uuid.uuid4())))
    assert (info.value.status, info.value.code) == (404, ERR_AVATAR_NOT_FOUND)


def test_a_bad_key_is_an_auth_error(emulator, sleeps):
    bad = make_client(emulator.base_url, sleeps, key="wrong-key-000000")
    with pytest.raises(errors.ProviderAuthError):
        bad.list_active()
    with pytest.raises(errors.ProviderAuthError):
        bad.create(REQUEST)
    assert emulator.received("sessions/start") == []
    assert sleeps == []


# --- listing ----------------------------------------------------------------------------------


def test_list_active_follows_every_page(clock, sleeps):
    server = LiveAvatarEmulator(keys={ENTERPRISE: "enterprise"}, clock=clock, page_size_limit=2)
    server.start()
    try:
        liveavatar = make_client(server.base_url, sleeps, key=ENTERPRISE)
        created = [liveavatar.create(SessionRequest(avatar_id=AVATAR)) for _ in range(6)]
        liveavatar.stop(created[0].session_id)
        listed = liveavatar.list_active()
        assert [s.session_id for s in listed] == [s.session_id for s in created[1:]]
        assert {s.status for s in listed} == {"active"}
        assert all(s.created_at is not None and s.created_at.tzinfo for s in listed)
        assert [r["query"]["page"] for r in server.received("sessions")] == ["1", "2", "3"]
    finally:
        server.stop()


def test_list_active_reads_other_plausible_page_shapes(client, emulator):
    first = {"sessions": [{"session_id": "a", "status": "started", "created_at": 1.8e9}]}
    second = {"sessions": [{"session_id": "a"}, {"session_id": "b"}]}  # "a" shifted along
    for page in (first, second):
        body = {"code": 1000, "data": {**page, "total_pages": 2}, "message": "success"}
        emulator.fail_next("sessions", "status", status=200, body=body)
    listed = client.list_active()
    assert [(s.session_id, s.status) for s in listed] == [("a", "started"), ("b", "active")]
    assert listed[0].created_at is not None
    assert len(emulator.received("sessions")) == 2


# --- retries ----------------------------------------------------------------------------------


def test_rate_limits_on_keep_alive_are_retried_after_the_providers_delay(client, emulator, sleeps):
    session = client.create(REQUEST)
    emulator.fail_next("sessions/keep-alive", "rate_limited", retry_after=1.5)
    client.keep_alive(session.session_id)
    assert len(emulator.received("sessions/keep-alive")) == 2
    assert sleeps == [1.5]


def test_server_errors_on_stop_are_retried_until_they_land(client, emulator, sleeps):
    session = client.create(REQUEST)
    emulator.fail_next("sessions/stop", "status", status=503, times=2)
    client.stop(session.session_id)
    assert len(emulator.received("sessions/stop")) == 3
    assert len(sleeps) == 2
    assert client.list_active() == []


def test_retries_are_bounded(client, emulator):
    session = client.create(REQUEST)
    emulator.fail_next("sessions/stop", "status", status=500, times=5)
    with pytest.raises(errors.ProviderUnavailable):
        client.stop(session.session_id)
    assert len(emulator.received("sessions/stop")) == 3  # 1 + max_retries


FAULTS = [
    ("status", {"status": 500}, errors.ProviderUnavailable),
    ("status", {"status": 502, "body": "<html>bad gateway</html>"}, errors.ProviderUnavailable),
    ("unauthorized", {}, errors.ProviderAuthError),
    ("rate_limited", {"retry_after": 0.5}, errors.ProviderRateLimited),
    ("malformed", {}, errors.ProviderBadResponse),
    ("hang", {"seconds": 3}, errors.ProviderTimeout),
    ("lost", {}, errors.ProviderUnavailable),
]


@pytest.mark.parametrize(("kind", "options", "error"), FAULTS)
def test_a_token_call_is_never_blindly_resent(client, emulator, kind, options, error):
    emulator.fail_next("sessions/token", kind, **options)
    with pytest.raises(error):
        client.create(REQUEST)
    assert len(emulator.received("sessions/token")) == 1
    assert emulator.received("sessions/start") == []


@pytest.mark.parametrize(("kind", "options", "error"), FAULTS)
def test_a_start_call_is_never_blindly_resent(client, emulator, kind, options, error):
    emulator.fail_next("sessions/start", kind, **options)
    with pytest.raises(error):
        client.create(REQUEST)
    assert len(emulator.received("sessions/token")) == 1
    assert len(emulator.received("sessions/start")) == 1


def test_a_lost_token_answer_leaves_a_minted_session_that_listing_finds(client, emulator):
    emulator.fail_next("sessions/token", "lost")
    with pytest.raises(errors.ProviderUnavailable) as info:
        client.create(REQUEST)
    assert info.value.connected
    [orphan] = client.list_active()
    assert emulator.sessions[orphan.session_id].status == "minted"


def test_a_lost_start_answer_leaves_a_started_session_that_listing_finds(client, emulator):
    emulator.fail_next("sessions/start", "lost")
    with pytest.raises(errors.ProviderUnavailable) as info:
        client.create(REQUEST)
    assert info.value.connected
    assert emulator.received("sessions/stop") == []  # left for the reconciler
    [orphan] = client.list_active()
    assert emulator.sessions[orphan.session_id].status == "started"
    client.stop(orphan.session_id)  # what the reconciler does
    assert client.list_active() == []


def test_a_start_the_provider_refused_stops_the_minted_session(client, emulator):
    refusal = {"code": 4090, "message": "session state wrong: started"}
    emulator.fail_next("sessions/start", "status", status=409, body=refusal)
    with pytest.raises(errors.ProviderConflict):
        client.create(REQUEST)
    [stop] = emulator.received("sessions/stop")
    assert stop["json"]["session_id"] in emulator.sessions  # the one just minted
    assert emulator.active() == []


def test_a_create_that_never_connected_is_retried(sleeps):
    dead = make_client("http://127.0.0.1:9", sleeps)  # nothing listens on the discard port
    with pytest.raises(errors.ProviderUnavailable) as info:
        dead.create(REQUEST)
    assert not info.value.connected
    assert len(sleeps) == 2


# --- the envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [100, 1000, "1000", None])
def test_both_documented_success_codes_are_success(code):
    assert parse_envelope(200, {}, {"code": code, "data": {"x": 1}, "message": "ok"}) == {"x": 1}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, {"code": 1, "message": "Concurrent session limit reached"}, "ConcurrencyLimit"),
        (400, {"message": "You have reached your concurrency limit"}, "ConcurrencyLimit"),
        (429, {"message": "Too many requests"}, "RateLimited"),
        (503, None, "Unavailable"),
        (401, {"detail": "Not authenticated"}, "AuthError"),
        (403, {"message": "Forbidden"}, "AuthError"),
        (404, {"message": "Avatar not found"}, "InvalidRequest"),
        (404, {"detail": "Session not found"}, "NotFound"),
        (409, {"message": "conflict"}, "Conflict"),
        (400, {"message": "Session already stopped"}, "Conflict"),
        (200, {"code": 4090, "message": "session state wrong: stopped"}, "Conflict"),
        (422, {"detail": [{"msg": "Input should be a valid UUID"}]}, "InvalidRequest"),
        (400, {"code": 4000, "message": "bad value"}, "InvalidRequest"),
        (402, {"message": "Payment required"}, "Error"),
    ],
)
def test_failures_map_to_typed_errors(status, body, error):
    with pytest.raises(errors.ProviderError) as info:
        parse_envelope(status, {"retry-after": "2"}, body)
    assert type(info.value) is getattr(errors, f"Provider{error}")
    assert info.value.status == status
    if error == "RateLimited":
        assert info.value.retry_after == 2


def test_the_key_never_reaches_logs_or_errors(client, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    emulator.fail_next("sessions/token", "unauthorized")
    with pytest.raises(errors.ProviderAuthError) as info:
        client.create(REQUEST)
    session = client.create(REQUEST)
    client.keep_alive(session.session_id)
    client.stop(session.session_id)
    assert KEY not in caplog.text
    assert session.extra["session_token"] not in caplog.text
    assert KEY not in str(info.value)
    assert "provider.call provider=liveavatar operation=create_token status=200" in caplog.text
    assert "provider.call provider=liveavatar operation=create_start status=200" in caplog.text


# --- the emulator's own checks ----------------------------------------------------------------


def test_the_emulator_checks_which_credential_each_call_carries(client, emulator):
    session = client.create(REQUEST)
    bearer = {"Authorization": f"Bearer {session.extra['session_token']}"}
    with httpx.Client(base_url=emulator.base_url) as http:
        minted_with_token = http.post(
            "/v1/sessions/token", json={"avatar_id": AVATAR}, headers=bearer
        )
        started_with_key = http.post(
            "/v1/sessions/start",
            json={"session_id": session.session_id},
            headers={"X-API-KEY": KEY},
        )
        kept_with_token = http.post("/v1/sessions/keep-alive", json={}, headers=bearer)
        listed_without_type = http.get("/v1/sessions", headers={"X-API-KEY": KEY})
    assert minted_with_token.status_code == 403
    assert started_with_key.status_code == 401
    assert kept_with_token.json()["code"] == 1000  # session-token calls answer the SDK's code
    assert listed_without_type.status_code == 422
