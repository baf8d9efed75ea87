"""Browser tests: Playwright (sync API) driving Debian's chromium against the app served by a
real daphne (``tests/e2e/servers.py`` says why a subprocess), plus a second web origin.

``make e2e-deps`` installs chromium; without ``/usr/bin/chromium`` (or Playwright) every test
here is skipped with the reason. Screenshots go to a temporary directory, or to
``$SYSTIMZ_SCREENSHOTS`` when set (``SYSTIMZ_SCREENSHOTS=docs/screenshots`` refreshes the
documentation's).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connections

from avatars.models import Avatar
from avatars.providers import local_tts
from tests import factories
from tests.e2e.servers import AppServer, OriginServer, database_url
from tests.emulators.heygen import HeyGenEmulator

CHROMIUM = Path("/usr/bin/chromium")
HAS_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
T = TypeVar("T")
HEYGEN_KEY = "hg-e2e-key-0123456789abcdef"

if HAS_PLAYWRIGHT:
    from playwright.sync_api import expect

    # Auto-waiting assertions wait on a condition, not a clock; on a loaded 2-core CI machine
    # a state can take longer than Playwright's 5 s default to arrive.
    expect.set_options(timeout=20_000)

if os.environ.get("SYSTIMZ_REQUIRE_BROWSER") == "1" and not (CHROMIUM.exists() and HAS_PLAYWRIGHT):
    raise RuntimeError("SYSTIMZ_REQUIRE_BROWSER=1 but chromium or playwright is missing")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and HAS_PLAYWRIGHT),
    reason="browser tests need Debian's chromium at /usr/bin/chromium (make e2e-deps) "
    "and playwright (requirements-dev.txt)",
)
needs_speech = pytest.mark.skipif(
    not local_tts.is_available(), reason="the local avatar needs requirements-tts.txt"
)


@pytest.fixture(scope="session")
def heygen() -> Iterator[HeyGenEmulator]:
    """HeyGen's API for the remote-provider tests (the app is pointed at it from the start)."""
    emulator = HeyGenEmulator(keys={HEYGEN_KEY: "enterprise"}).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def app_server(
    django_db_setup: None, heygen: HeyGenEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """The app on a free loopback port, against the test database pytest-django created
    (its log is in pytest's temporary directory, ``daphne*/daphne.log``)."""
    server = AppServer(
        database_url(connections["default"].settings_dict),
        log_path=tmp_path_factory.mktemp("daphne") / "daphne.log",
        extra_env={"HEYGEN_API_BASE": heygen.base_url},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def other_site() -> Iterator[OriginServer]:
    """Pages on ``http://localhost:<port>``: another origin and site than the app's."""
    server = OriginServer().start()
    yield server
    server.stop()


def orm(call: Callable[[], T]) -> T:
    """Run ORM code on another thread. While Playwright's sync API is in use it marks an asyncio
    loop as running in the test's thread between calls, and Django refuses synchronous ORM
    calls there (SynchronousOnlyOperation); the connection is closed after, so none is left
    open on the test database."""

    def run() -> T:
        try:
            return call()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def browser(world: World) -> Iterator[Any]:
    """Chromium for one test. Per test, and after ``world`` (so after ``transactional_db``):
    Playwright must have let go of the thread (see ``orm``) before the database is flushed in
    it at teardown, and ``world`` writes in it before."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--autoplay-policy=no-user-gesture-required"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (a new visitor each), closed after the test."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(viewport=viewport or DESKTOP)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    target = Path(os.environ.get("SYSTIMZ_SCREENSHOTS") or tmp_path)

    def take(page: Any, name: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take


@dataclass
class World:
    """An organisation with two published local avatars: ``guide`` answers from a knowledge
    base (the page sends chat), ``echo`` has none (the page has it repeat what it is told);
    and ``anna``, a HeyGen avatar with the same knowledge (None without encryption keys to
    store the organisation's HeyGen key)."""

    org_slug: str
    guide: Avatar
    echo: Avatar
    anna: Avatar | None

    def talk_path(self, avatar: Avatar) -> str:
        return f"/talk/{self.org_slug}/{avatar.slug}/"

    def embed_path(self, avatar: Avatar) -> str:
        return f"/talk/{self.org_slug}/{avatar.slug}/embed.js"

    def start_path(self, avatar: Avatar) -> str:
        return f"/talk/{self.org_slug}/{avatar.slug}/sessions"


@pytest.fixture
def world(transactional_db: None) -> World:
    from knowledge import services as knowledge_services

    org = factories.OrganisationFactory(slug="e2e-shop", name="E2E Shop")
    kb = factories.KnowledgeBaseFactory(organisation=org, name="Shop facts")
    text = knowledge_services.document_text_from_json(
        title="Hours",
        content="The shop opens at nine in the morning and closes at six in the evening.",
        fmt="text",
    )
    knowledge_services.document_create(knowledge_base=kb, text=text)
    voice = factories.VoicePresetFactory(organisation=org, rate=1.3)
    guide = factories.AvatarFactory(
        organisation=org,
        slug="guide",
        name="Shop Guide",
        voice_preset=voice,
        knowledge_base=kb,
        allowed_origins=[],
    )
    echo = factories.AvatarFactory(
        organisation=org, slug="echo", name="Echo", voice_preset=voice, allowed_origins=[]
    )
    anna = None
    if settings.ENCRYPTION_KEYS:
        factories.ProviderCredentialFactory(organisation=org, provider="heygen", api_key=HEYGEN_KEY)
        anna = factories.AvatarFactory(
            organisation=org,
            slug="anna",
            name="Anna",
            provider="heygen",
            provider_avatar_id="Anna_public_3_20240108",
            knowledge_base=kb,
            allowed_origins=[],
        )
    return World(org_slug=org.slug, guide=guide, echo=echo, anna=anna)
