"""The player's WebSocket relay, over the full ASGI application (channels.testing)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing

from avatars.providers import local_tts
from sessions.local_media import local_engine
from sessions.models import AvatarSession
from sessions.player import player_token
from sessions.services import append_event
from systimz.asgi import application
from tests import factories
from tests.emulators.heygen import HeyGenEmulator

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.ws,
    pytest.mark.anyio,
    pytest.mark.usefixtures("fresh_channel_layer"),
]
SITE = b"http://testserver"
WAIT = 30  # seconds: a bound on waiting for a frame, not a measurement
needs_tts = pytest.mark.skipif(not local_tts.is_available(), reason="requirements-tts.txt")


@pytest.fixture
def local_session(tenant) -> dict[str, Any]:
    factories.AvatarFactory(
        organisation=tenant.org, slug="guide", allowed_origins=["https://shop.example"]
    )
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "guide"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _path(session: dict[str, Any], token: str | None = None) -> str:
    token = session["player"]["token"] if token is None else token
    return f"{session['player']['websocket_url']}?token={token}"


async def _open(path: str, origin: bytes | None = SITE) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    return communicator


async def _until(communicator: WebsocketCommunicator, wanted: str, **match: Any) -> list[dict]:
    """Frames received up to and including the first of type ``wanted`` (matching ``match``)."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=WAIT)
        frames.append(frame)
        if frame["type"] == wanted and all(frame.get(k) == v for k, v in match.items()):
            return frames


async def _closed_with(communicator: WebsocketCommunicator) -> int:
    output = await communicator.receive_output(timeout=WAIT)
    assert output["type"] == "websocket.close", output
    return output.get("code")


# --- authentication and origin ---------------------------------------------------------------


@pytest.mark.parametrize("token", ["forged", "", "other", "expired"])
async def test_a_bad_token_is_accepted_only_to_be_closed_with_4401(
    tenant, local_session, token, monkeypatch
):
    if token == "other":
        other = await sync_to_async(
            lambda: tenant.client.post(
                "/api/v1/sessions/", {"avatar": "guide"}, format="json"
            ).json()
        )()
        token = other["player"]["token"]
    elif token == "expired":
        token = local_session["player"]["token"]
        later = time.time() + 7 * 3600  # past PLAYER_TOKEN_MAX_AGE_SECONDS (6 h)
        monkeypatch.setattr(signing.time, "time", lambda: later)
    communicator = await _open(_path(local_session, token))
    assert await _closed_with(communicator) == 4401
    assert await communicator.receive_nothing()


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (b"https://evil.example", False),
        (b"https://shop.example", True),  # the avatar's allowed origin
        (SITE, True),  # the site's own
        (None, True),  # not a browser
        (b"null", False),
    ],
)
async def test_origins_outside_the_allowed_list_are_refused_at_the_handshake(
    local_session, origin, accepted
):
    headers = [(b"host", b"testserver")] + ([(b"origin", origin)] if origin else [])
    communicator = WebsocketCommunicator(application, _path(local_session), headers=headers)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected is accepted
    await communicator.disconnect()


async def test_a_token_bound_to_a_page_origin_works_from_that_origin_only(local_session):
    session = await sync_to_async(AvatarSession.objects.get)(pk=local_session["id"])
    bound = player_token(session, origin="https://shop.example")
    path = _path(local_session, bound)
    refused = WebsocketCommunicator(application, path, headers=[(b"origin", SITE)])
    assert (await refused.connect(timeout=WAIT))[0] is False
    communicator = await _open(path, origin=b"https://shop.example")
    await communicator.disconnect()


# --- the stream ------------------------------------------------------------------------------


async def test_resume_sends_the_log_in_order_then_live_events(local_session):
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "resume", "after": 0})
    first = await _until(communicator, "session_state", status="active")
    assert [f["seq"] for f in first] == sorted({f["seq"] for f in first})
    assert first[0]["session_id"] == local_session["id"]
    assert first[0]["at"].endswith("Z")

    await sync_to_async(_append)(local_session["id"], "user_end_message")
    live = await communicator.receive_json_from(timeout=WAIT)
    assert (live["type"], live["seq"]) == ("user_end_message", first[-1]["seq"] + 1)
    await communicator.disconnect()


def _append(session_id: str, type_: str, **payload: Any) -> int:
    event = append_event(AvatarSession.objects.get(pk=session_id), type_, payload)
    assert event is not None
    return event.seq


async def test_a_reconnecting_page_gets_what_it_missed_once_in_order(local_session):
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "resume", "after": 0})
    seen = await _until(communicator, "session_state", status="active")
    last = seen[-1]["seq"]
    await communicator.disconnect()

    missed = [
        await sync_to_async(_append)(local_session["id"], "user_talking_message", message=m)
        for m in ("one", "two", "three")
    ]
    again = await _open(_path(local_session))
    await again.send_json_to({"type": "resume", "after": last})
    frames = [await again.receive_json_from(timeout=WAIT) for _ in missed]
    assert [f["seq"] for f in frames] == missed
    assert [f["message"] for f in frames] == ["one", "two", "three"]
    assert await again.receive_nothing()
    await again.disconnect()


async def test_without_resume_the_stream_starts_at_connect(local_session):
    communicator = await _open(_path(local_session))
    seq = await sync_to_async(_append)(local_session["id"], "user_end_message")
    frame = await communicator.receive_json_from(timeout=WAIT)  # after the resume window
    assert (frame["type"], frame["seq"]) == ("user_end_message", seq)
    await communicator.disconnect()


async def test_a_gap_is_filled_from_the_log_before_later_events(local_session):
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "resume", "after": 0})
    seen = await _until(communicator, "session_state", status="active")
    # An event recorded without being published (lost between processes), then one that is.
    lost = await sync_to_async(_append_unpublished)(local_session["id"])
    later = await sync_to_async(_append)(local_session["id"], "user_end_message")
    frames = [await communicator.receive_json_from(timeout=WAIT) for _ in range(2)]
    assert [f["seq"] for f in frames] == [lost, later] == [seen[-1]["seq"] + 1, seen[-1]["seq"] + 2]
    await communicator.disconnect()


def _append_unpublished(session_id: str) -> int:
    from unittest import mock

    with mock.patch("sessions.services.publish_after_commit"):
        return _append(session_id, "user_talking_message", message="lost")


# --- client frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"type": "dance"}),
        json.dumps({"type": "resume", "after": -1}),
        json.dumps({"type": "resume", "after": "3"}),
        json.dumps({"type": "speak"}),
        json.dumps({"type": "speak", "text": "hi", "mode": "sing"}),
        json.dumps({"type": "speak", "text": "x" * 2001}),
        json.dumps({"type": "client_event", "event": {"type": "avatar_start_talking"}}),
    ],
)
async def test_a_bad_frame_gets_an_error_event_and_the_connection_stays_open(local_session, frame):
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "resume", "after": 0})
    await _until(communicator, "session_state", status="active")
    await communicator.send_to(text_data=frame)
    error = await communicator.receive_json_from(timeout=WAIT)
    assert error["type"] == "error"
    assert error["code"] == "invalid"
    assert error["message"]
    await communicator.send_json_to({"type": "keep_alive"})  # still open, still served
    await communicator.send_json_to({"type": "stop"})
    closed = await _until(communicator, "session_state", status="closed")
    assert closed[-1]["reason"] == "user"
    await communicator.disconnect()


async def test_actions_on_a_closed_session_are_conflict_errors(local_session):
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "stop"})
    await _until(communicator, "session_state", status="closed")
    await communicator.send_json_to({"type": "speak", "text": "Hello?"})
    error = await _until(communicator, "error")
    assert error[-1]["code"] == "conflict"
    await communicator.disconnect()


@needs_tts
async def test_speak_and_interrupt_through_the_socket_reach_every_listener(local_session):
    one = await _open(_path(local_session))
    two = await _open(_path(local_session))
    for communicator in (one, two):
        await communicator.send_json_to({"type": "resume", "after": 0})
        await _until(communicator, "session_state", status="active")
    await one.send_json_to({"type": "speak", "text": "Hello from the socket.", "mode": "repeat"})
    for communicator in (one, two):
        frames = await _until(communicator, "avatar_stop_talking")
        said = "".join(f["message"] for f in frames if f["type"] == "avatar_talking_message")
        assert said == "Hello from the socket."
        assert [f["seq"] for f in frames] == sorted({f["seq"] for f in frames})

    long_text = " ".join(["This goes on and on, for a good while longer."] * 10)
    await two.send_json_to({"type": "speak", "text": long_text})
    await _until(one, "avatar_talking_message")
    await one.send_json_to({"type": "interrupt"})
    stopped = (await _until(two, "avatar_stop_talking"))[-1]
    assert stopped["interrupted"] is True
    psid = await sync_to_async(
        lambda: AvatarSession.objects.get(pk=local_session["id"]).provider_session_id
    )()
    assert local_engine().wait_idle(psid, WAIT)
    for communicator in (one, two):
        await communicator.disconnect()


# --- media-room events and disconnects -------------------------------------------------------


@pytest.fixture
def heygen_session(tenant, settings) -> AsyncIterator[dict[str, Any]]:
    emulator = HeyGenEmulator(keys={"hg-key-1234567890": "enterprise"}).start()
    settings.HEYGEN_API_BASE = emulator.base_url
    factories.ProviderCredentialFactory(
        organisation=tenant.org, provider="heygen", api_key="hg-key-1234567890", plan="enterprise"
    )
    factories.AvatarFactory(
        organisation=tenant.org,
        slug="anna",
        provider="heygen",
        provider_avatar_id="Anna_public_3_20240108",
    )
    response = tenant.client.post("/api/v1/sessions/", {"avatar": "anna"}, format="json")
    assert response.status_code == 201, response.content
    yield response.json()
    emulator.stop()


async def test_forwarded_media_room_events_are_normalised_recorded_and_relayed(heygen_session):
    sender = await _open(_path(heygen_session))
    listener = await _open(_path(heygen_session))
    for communicator in (sender, listener):
        await communicator.send_json_to({"type": "resume", "after": 0})
        await _until(communicator, "session_state", status="active")
    forwarded = [
        {"type": "avatar_start_talking", "task_id": "t-1"},
        {"type": "avatar_talking_message", "task_id": "t-1", "message": "Hi"},
        {"event_type": "avatar.speak_ended", "source_event_id": "t-1"},  # LiveAvatar's name
        {"type": "stream_ready"},  # not part of the record: ignored
        {"type": "avatar_stop_talking", "task_id": "t-1", "duration_ms": 820.5},
    ]
    for event in forwarded:
        await sender.send_json_to({"type": "client_event", "event": event})
    frames = await _until(listener, "avatar_stop_talking", duration_ms=820.5)
    assert [(f["type"], f.get("task_id")) for f in frames] == [
        ("avatar_start_talking", "t-1"),
        ("avatar_talking_message", "t-1"),
        ("avatar_stop_talking", "t-1"),
        ("avatar_stop_talking", "t-1"),
    ]
    assert frames[1]["message"] == "Hi"
    await sender.send_json_to(
        {"type": "client_event", "event": {"type": "avatar_talking_message", "message": "x" * 5000}}
    )
    assert (await _until(sender, "error"))[-1]["code"] == "invalid"
    for communicator in (sender, listener):
        await communicator.disconnect()


async def test_the_last_player_leaving_starts_the_disconnect_grace(local_session):
    def state() -> tuple[int, bool]:
        session = AvatarSession.objects.get(pk=local_session["id"])
        return session.listeners, session.disconnected_at is not None

    one = await _open(_path(local_session))
    two = await _open(_path(local_session))
    assert await sync_to_async(state)() == (2, False)
    await one.disconnect()
    assert await sync_to_async(state)() == (1, False)
    await two.disconnect()
    assert await sync_to_async(state)() == (0, True)
    back = await _open(_path(local_session))  # a reload within the grace period
    assert await sync_to_async(state)() == (1, False)
    await back.disconnect()


async def test_events_recorded_by_another_process_reach_the_socket(local_session):
    """The reaper closes sessions from the Celery worker: with the in-memory layer (one
    process) the socket reads the log too; with Redis the event comes through the layer."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        pytest.skip("the Redis layer carries events between processes")
    communicator = await _open(_path(local_session))
    await communicator.send_json_to({"type": "resume", "after": 0})
    await _until(communicator, "session_state", status="active")
    seq = await sync_to_async(_append_unpublished)(local_session["id"])  # nothing published
    frame = await communicator.receive_json_from(timeout=WAIT)
    assert (frame["type"], frame["seq"]) == ("user_talking_message", seq)
    await communicator.disconnect()


async def test_two_players_forwarding_the_same_room_record_it_once(heygen_session):
    one = await _open(_path(heygen_session))
    two = await _open(_path(heygen_session))
    for communicator in (one, two):
        await communicator.send_json_to({"type": "resume", "after": 0})
        await _until(communicator, "session_state", status="active")
    event = {"type": "avatar_start_talking", "task_id": "t-9"}
    await one.send_json_to({"type": "client_event", "event": event})
    await _until(two, "avatar_start_talking", task_id="t-9")
    await two.send_json_to({"type": "client_event", "event": event})  # the same, seen by tab two
    await one.send_json_to({"type": "keep_alive"})
    await one.disconnect()  # the forwarder leaves: the other tab takes over
    await two.send_json_to({"type": "client_event", "event": {**event, "task_id": "t-10"}})
    await _until(two, "avatar_start_talking", task_id="t-10")
    recorded = await sync_to_async(
        lambda: list(
            AvatarSession.objects.get(pk=heygen_session["id"])
            .events.filter(type="avatar_start_talking")
            .values_list("payload__task_id", flat=True)
        )
    )()
    assert recorded == ["t-9", "t-10"]
    await two.disconnect()
