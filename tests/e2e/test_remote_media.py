"""The talk page with a remote provider (HeyGen, emulated): no real LiveKit room can be joined
here, so the page's LiveKit bundle is swapped for a stand-in (the page imports it only for
remote providers), or refused, to see what the page does around the room: it joins with the
session's media, forwards the room's data messages to the server, which records them and
relays them back into the transcript, and switches the microphone; without the bundle it
says so and still takes text."""

from __future__ import annotations

import re

import pytest

from sessions.models import AvatarSession, SessionEvent
from tests.e2e.conftest import needs_browser, orm

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in requirements-dev.txt"
).expect
pytestmark = [pytest.mark.e2e, needs_browser]

BUNDLE = "**/static/player/vendor/livekit.esm.js"

# What sessions/static/player/remote-media.js uses of livekit-client, recording what the page
# does in window.__livekit; `receive(event)` plays a data message from the avatar.
FAKE_LIVEKIT = """
export const RoomEvent = {
  TrackSubscribed: "trackSubscribed", TrackUnsubscribed: "trackUnsubscribed",
  DataReceived: "dataReceived", AudioPlaybackStatusChanged: "audioPlaybackChanged",
  ConnectionStateChanged: "connectionStateChanged", Disconnected: "disconnected",
};
export const ConnectionState = { Connected: "connected", Disconnected: "disconnected" };
export class Room {
  constructor() {
    this.handlers = {};
    this.state = "disconnected";
    this.canPlaybackAudio = true;
    const record = window.__livekit = { connected: null, microphone: false, room: this };
    record.receive = (event) =>
      this.emit(RoomEvent.DataReceived, new TextEncoder().encode(JSON.stringify(event)));
    this.localParticipant = {
      setMicrophoneEnabled: async (on) => { record.microphone = on; },
      publishData: async () => {},
    };
  }
  on(name, handler) { (this.handlers[name] ||= []).push(handler); return this; }
  emit(name, ...args) { for (const handler of this.handlers[name] || []) handler(...args); }
  async connect(url, token) {
    window.__livekit.connected = [url, token];
    this.state = "connected";
    this.emit(RoomEvent.ConnectionStateChanged, this.state);
  }
  async disconnect() { this.state = "disconnected"; this.emit(RoomEvent.Disconnected); }
  async startAudio() {}
}
"""


@pytest.fixture
def anna(world):
    if world.anna is None:
        pytest.skip("storing a HeyGen key needs SYSTIMZ_ENCRYPTION_KEYS (make .env)")
    return world.anna


def _state(page, state: str) -> None:
    expect(page.locator("body")).to_have_attribute("data-state", state)


def test_the_media_room_is_joined_and_its_events_fill_the_transcript(
    page, app_server, heygen, world, anna
):
    page.route(
        BUNDLE, lambda route: route.fulfill(content_type="text/javascript", body=FAKE_LIVEKIT)
    )
    page.goto(app_server.url(world.talk_path(anna)))
    expect(page.locator("video")).to_be_attached()
    expect(page.locator("canvas")).to_have_count(0)
    page.get_by_test_id("start").click()
    _state(page, "active")

    session = orm(lambda: AvatarSession.objects.get())
    url, token = page.evaluate("window.__livekit.connected")
    assert (url, token) == (session.media["url"], session.media["access_token"])
    mic = page.get_by_test_id("mic")
    expect(mic).to_have_attribute("aria-pressed", "false")
    mic.click()
    expect(mic).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.__livekit.microphone") is True

    said = [
        {"type": "avatar_start_talking", "task_id": "t-1"},
        {"type": "avatar_talking_message", "task_id": "t-1", "message": "Hello"},
        {"type": "avatar_talking_message", "message": " from"},  # untagged chunks happen
        {"type": "avatar_talking_message", "task_id": "t-1", "message": " the room."},
        {"type": "stream_ready"},  # not one the record keeps
    ]
    page.evaluate("events => events.forEach(e => window.__livekit.receive(e))", said)
    _state(page, "speaking")
    line = page.get_by_test_id("transcript").locator(".line.avatar")
    expect(line.locator(".text")).to_have_text("Hello from the room.")
    page.evaluate(
        "e => window.__livekit.receive(e)",
        {"type": "avatar_stop_talking", "task_id": "t-1", "duration_ms": 1500},
    )
    _state(page, "active")
    expect(line).to_have_count(1)

    recorded = orm(
        lambda: list(
            SessionEvent.objects.filter(session=session, payload__source="media_room")
            .order_by("seq")
            .values_list("type", flat=True)
        )
    )
    assert recorded == [
        "avatar_start_talking",
        *["avatar_talking_message"] * 3,
        "avatar_stop_talking",
    ]


def test_without_the_player_assets_the_page_says_so_and_still_takes_text(
    page, app_server, heygen, world, anna
):
    page.route(BUNDLE, lambda route: route.fulfill(status=404, body="not built"))
    page.goto(app_server.url(world.talk_path(anna)))
    page.get_by_test_id("start").click()
    _state(page, "active")
    expect(page.get_by_test_id("media-note")).to_have_text(
        "Video needs the player assets (make assets)"
    )
    expect(page.get_by_test_id("mic")).to_be_hidden()

    page.get_by_test_id("input").fill("When does the shop open?")
    page.get_by_test_id("send").click()
    # Systimz answers the chat from the knowledge base (the question is in the record) and
    # has HeyGen say the answer.
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator(".line.user")).to_have_text(re.compile("When does the shop open"))
    page.get_by_test_id("stop").click()  # frames are handled in order: the speak is done
    _state(page, "ended")
    session = orm(lambda: AvatarSession.objects.get())
    task = next(
        r["json"]
        for r in heygen.received("streaming.task")
        if r["json"]["session_id"] == session.provider_session_id
    )
    assert "nine" in task["text"]
    assert any(
        r["json"]["session_id"] == session.provider_session_id
        for r in heygen.received("streaming.stop")
    )
