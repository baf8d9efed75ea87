"""The talk page in a real browser with the local avatar: start, converse, interrupt, rejoin
after a reload, stop; the phone layout; what an unpublished avatar and a foreign site get."""

from __future__ import annotations

import re

import pytest

from sessions.models import AvatarSession, SessionEvent
from tests.e2e.conftest import PHONE, needs_browser, needs_speech, orm

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in requirements-dev.txt"
).expect
pytestmark = [pytest.mark.e2e, needs_browser, needs_speech]

LONG_TEXT = " ".join(
    ["This sentence goes on for quite a while, and then it goes on a little more."] * 8
)


def _state(page, state: str) -> None:
    expect(page.locator("body")).to_have_attribute("data-state", state)


def _start(page) -> None:
    page.get_by_test_id("start").click()
    _state(page, "active")


def _say(page, text: str) -> None:
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")


def _words(session_id: str) -> list[str]:
    """The avatar's word chunks as the server recorded them, in order."""
    return orm(
        lambda: list(
            SessionEvent.objects.filter(session_id=session_id, type="avatar_talking_message")
            .order_by("seq")
            .values_list("payload__message", flat=True)
        )
    )


def test_conversation_fills_the_transcript_word_by_word_while_the_avatar_speaks(
    page, app_server, world, screenshot
):
    page.goto(app_server.url(world.talk_path(world.guide)))
    _state(page, "idle")
    expect(page.get_by_role("log")).to_be_visible()
    expect(page.get_by_test_id("mic")).to_have_count(0)  # the local avatar takes text only
    page.get_by_test_id("quality").select_option("low")
    _start(page)
    expect(page.get_by_test_id("remaining")).to_have_text(re.compile(r"^\d+:\d\d left$"))

    _say(page, "When does the shop open?")
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator(".line.user")).to_have_text(re.compile("When does the shop open"))
    _state(page, "speaking")
    # The voice is heard: its chunks were fetched, decoded and scheduled, and the analyser that
    # moves the mouth measures sound.
    expect(page.locator("body")).to_have_attribute("data-audio", "playing")
    expect(transcript.locator(".line.avatar")).to_contain_text("nine")
    screenshot(page, "talk-desktop")
    _state(page, "active")

    session = orm(lambda: AvatarSession.objects.get())
    assert session.quality == "low"
    words = _words(str(session.pk))
    assert len(words) > 3
    line = transcript.locator(".line.avatar .text")
    expect(line).to_have_text("".join(words))
    assert "nine" in "".join(words)
    # One text node per word chunk: the line was filled in as the words were said.
    assert line.evaluate("node => node.childNodes.length") == len(words)
    assert int(page.locator("body").get_attribute("data-audio-chunks")) >= 1


def test_interrupt_silences_the_avatar_and_returns_to_active(page, app_server, world):
    page.goto(app_server.url(world.talk_path(world.echo)))
    _start(page)
    _say(page, LONG_TEXT)  # no knowledge base: the page has the avatar repeat it
    _state(page, "speaking")
    expect(page.locator("body")).to_have_attribute("data-audio", "playing")

    page.get_by_role("button", name="Interrupt").click()
    _state(page, "active")
    expect(page.locator("body")).to_have_attribute("data-audio", "silent")
    line = page.get_by_test_id("transcript").locator(".line.avatar")
    expect(line).to_have_class(re.compile(r"\binterrupted\b"))
    said = line.locator(".text").inner_text()
    assert 0 < len(said.split()) < len(LONG_TEXT.split())

    stop = orm(
        lambda: SessionEvent.objects.filter(type="avatar_stop_talking").order_by("seq").last()
    )
    assert stop is not None
    assert stop.payload["interrupted"] is True


def test_reload_rejoins_the_same_session_with_its_transcript(page, app_server, world):
    page.goto(app_server.url(world.talk_path(world.guide)))
    # Keyboard only: Start, then the message box has the focus.
    page.get_by_test_id("start").focus()
    page.keyboard.press("Enter")
    _state(page, "active")
    expect(page.get_by_test_id("input")).to_be_focused()
    page.keyboard.type("When does the shop close?")
    page.keyboard.press("Enter")
    _state(page, "speaking")
    _state(page, "active")
    session_id = page.locator("body").get_attribute("data-session-id")
    answer = page.get_by_test_id("transcript").locator(".line.avatar .text").inner_text()
    assert "six" in answer

    page.reload()
    _state(page, "active")
    expect(page.locator("body")).to_have_attribute("data-session-id", session_id)
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator(".line.user")).to_have_text(re.compile("When does the shop close"))
    expect(transcript.locator(".line.avatar .text")).to_have_text(answer)
    # What was said before the reload is shown, not spoken again.
    expect(page.locator("body")).to_have_attribute("data-audio-chunks", "0")
    assert orm(lambda: AvatarSession.objects.count()) == 1

    # The rejoined page converses on.
    _say(page, "When does the shop open?")
    _state(page, "speaking")
    _state(page, "active")
    expect(transcript.locator(".line.avatar")).to_have_count(2)
    assert orm(lambda: AvatarSession.objects.count()) == 1


def test_a_second_tab_rejoins_the_conversation_instead_of_starting_another(page, app_server, world):
    url = app_server.url(world.talk_path(world.guide))
    page.goto(url)
    _start(page)
    _say(page, "When does the shop open?")
    _state(page, "speaking")
    _state(page, "active")
    session_id = page.locator("body").get_attribute("data-session-id")

    second = page.context.new_page()  # same visitor cookie, its own sessionStorage
    second.goto(url)
    _state(second, "idle")
    _start(second)  # the start endpoint answers 200 with the visitor's live session
    expect(second.locator("body")).to_have_attribute("data-session-id", session_id)
    expect(second.get_by_test_id("transcript").locator(".line.avatar")).to_contain_text("nine")
    expect(second.locator("body")).to_have_attribute("data-audio-chunks", "0")
    assert orm(lambda: AvatarSession.objects.count()) == 1


def test_a_dropped_connection_reconnects_and_resumes(page, app_server, world):
    sockets = []

    def through(socket) -> None:  # the page's relay socket, passed through to the app
        socket.connect_to_server()
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/ws/sessions/"), through)
    page.goto(app_server.url(world.talk_path(world.guide)))
    _start(page)
    _say(page, "When does the shop open?")
    _state(page, "speaking")
    _state(page, "active")

    sockets[-1].close(code=1011, reason="the network went away")
    _state(page, "reconnecting")
    _state(page, "active")
    assert len(sockets) == 2
    _say(page, "When does the shop close?")
    _state(page, "speaking")
    _state(page, "active")
    transcript = page.get_by_test_id("transcript")
    expect(transcript.locator(".line.user")).to_have_count(2)  # resumed, nothing twice
    expect(transcript.locator(".line.avatar")).to_have_count(2)
    assert orm(lambda: AvatarSession.objects.count()) == 1


def test_a_refused_token_ends_the_conversation_and_offers_a_new_one(page, app_server, world):
    page.goto(app_server.url(world.talk_path(world.guide)))
    _start(page)
    # Once the first event is in (the page stores its seq and token on each one)...
    page.wait_for_function(
        """() => Object.keys(sessionStorage).some(
            (k) => JSON.parse(sessionStorage.getItem(k)).lastSeq >= 1)"""
    )
    page.evaluate(
        """() => {
            const key = Object.keys(sessionStorage).find((k) => k.startsWith("systimz.talk."));
            const record = JSON.parse(sessionStorage.getItem(key));
            sessionStorage.setItem(key, JSON.stringify({...record, token: "forged"}));
        }"""
    )
    page.reload()  # rejoins with the forged token: the relay closes with 4401
    _state(page, "ended")
    expect(page.get_by_test_id("status")).to_contain_text("can no longer be rejoined")
    assert page.evaluate("Object.keys(sessionStorage).length") == 0
    _start(page)  # this visitor's live session, with a fresh token
    expect(page.locator("body")).to_have_attribute(
        "data-session-id", orm(lambda: str(AvatarSession.objects.get().pk))
    )


def test_stop_ends_the_conversation_with_the_reason_in_words(page, app_server, world):
    page.goto(app_server.url(world.talk_path(world.guide)))
    _start(page)
    page.get_by_test_id("stop").click()
    _state(page, "ended")
    expect(page.get_by_test_id("status")).to_contain_text("You ended the conversation")
    expect(page.get_by_test_id("start")).to_have_text("Start a new conversation")
    session = orm(lambda: AvatarSession.objects.get())
    assert (session.status, session.close_reason) == ("closed", "user")

    page.reload()  # nothing left to rejoin
    _state(page, "idle")


def test_phone_layout_stacks_and_stays_usable(new_page, app_server, world, screenshot):
    page = new_page(viewport=PHONE)
    page.goto(app_server.url(world.talk_path(world.guide)))
    _start(page)
    _say(page, "When does the shop open?")
    _state(page, "speaking")
    expect(page.get_by_test_id("transcript")).to_contain_text("nine")
    screenshot(page, "talk-phone")
    _state(page, "active")
    # One column, nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    stage = page.locator(".stage").bounding_box()
    conversation = page.locator(".conversation").bounding_box()
    assert conversation["y"] >= stage["y"] + stage["height"]
    for testid in ("input", "send", "interrupt", "stop"):
        box = page.get_by_test_id(testid).bounding_box()
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]


def test_unpublished_and_unknown_avatars_are_404(page, app_server, world):
    world.echo.published = False
    orm(world.echo.save)
    assert page.goto(app_server.url(world.talk_path(world.echo))).status == 404
    assert page.goto(app_server.url(f"/talk/{world.org_slug}/nobody/")).status == 404


def test_a_start_from_another_site_is_refused(page, app_server, other_site, world):
    page.goto(other_site.serve("/blank.html", "<!doctype html><title>Elsewhere</title>"))
    start_url = app_server.url(world.start_path(world.guide))
    # As the talk page sends it (JSON, with credentials): the browser's preflight gets no CORS
    # permission, so the start never leaves the browser.
    outcome = page.evaluate(
        """async (url) => {
            try {
                const response = await fetch(url, {
                    method: "POST", credentials: "include",
                    headers: {"Content-Type": "application/json"}, body: "{}",
                });
                return `answered ${response.status}`;
            } catch (error) {
                return "refused";
            }
        }""",
        start_url,
    )
    assert outcome == "refused"
    # A simple request does reach the server, which refuses the foreign Origin itself.
    with page.expect_response(lambda r: r.url == start_url and r.request.method == "POST") as got:
        page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', body: '{}'}).catch(() => null)",
            start_url,
        )
    assert got.value.status == 403
    assert orm(lambda: AvatarSession.objects.count()) == 0
