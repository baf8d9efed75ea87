"""The embed: ``<script src=".../embed.js" async></script>`` on another site mounts the player
in a frame; only the avatar's allowed origins may frame it (CSP frame-ancestors)."""

from __future__ import annotations

import pytest

from sessions.models import AvatarSession
from tests.e2e.conftest import needs_browser, needs_speech, orm

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in requirements-dev.txt"
).expect
pytestmark = [pytest.mark.e2e, needs_browser, needs_speech]


def _shop_page(other_site, app_server, world) -> str:
    script = app_server.url(world.embed_path(world.guide))
    return other_site.serve(
        "/shop.html",
        "<!doctype html><html lang='en'><title>Shop</title><h1>Our shop</h1>"
        f'<script src="{script}" async></script>',
    )


def test_embed_converses_from_an_allowed_origin(page, app_server, other_site, world, screenshot):
    world.guide.allowed_origins = [other_site.origin]
    orm(world.guide.save)
    page.goto(_shop_page(other_site, app_server, world))

    frame = page.frame_locator("iframe.systimz-player")
    expect(frame.locator("body")).to_have_class("talk embedded")  # the compact layout
    frame.get_by_test_id("start").click()
    expect(frame.locator("body")).to_have_attribute("data-state", "active")
    frame.get_by_test_id("input").fill("When does the shop open?")
    frame.get_by_test_id("send").click()
    expect(frame.locator("body")).to_have_attribute("data-state", "speaking")
    expect(frame.get_by_test_id("transcript").locator(".line.avatar")).to_contain_text("nine")
    screenshot(page, "talk-embed")
    expect(frame.locator("body")).to_have_attribute("data-state", "active")
    assert orm(lambda: AvatarSession.objects.filter(status="active").count()) == 1


def test_embed_is_blocked_on_a_site_not_allowed(page, app_server, other_site, world):
    world.guide.allowed_origins = ["https://shop.example"]
    orm(world.guide.save)
    with page.expect_console_message(lambda m: "frame-ancestors" in m.text) as refusal:
        page.goto(_shop_page(other_site, app_server, world))
    assert app_server.origin in refusal.value.text  # chromium: "Framing '<app>' violates ..."
    expect(page.locator("iframe.systimz-player")).to_be_attached()
    expect(page.frame_locator("iframe.systimz-player").get_by_test_id("start")).to_have_count(0)
