"""T22 — deploy configuration gate and HTTP header probe.

Pass criterion (reliability.md §4.2): ``manage.py check --deploy --fail-level WARNING`` under
production settings exits 0 — that is ``tests/test_settings.py::
test_check_deploy_is_clean_under_production_settings`` and is not repeated here — and responses
carry HSTS, a CSP with ``frame-ancestors``, ``nosniff``, and Secure/HttpOnly/SameSite cookies.

The probe runs the app under a real daphne (``tests.e2e.servers.AppServer``) with production
settings: ``DEBUG=0``, secrets set, ``ALLOWED_HOSTS=127.0.0.1``, ``SECURE_PROXY_SSL_HEADER=1``
and every request sending ``X-Forwarded-Proto: https`` as the TLS-terminating proxy would.
Static files are collected into a temporary directory first (``production_settings``), since
production serves them from the manifest.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests import factories
from tests.e2e.servers import BASE_DIR, AppServer, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "t22-" + "k" * 40 + "-production-secret-key-0123456789",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_PROXY_SSL_HEADER": "1",
    "DJANGO_SETTINGS_MODULE": "tests.security.production_settings",
    "LOG_LEVEL": "WARNING",
}
HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    env = {**_env(root), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return root


def _env(static_root: Path) -> dict[str, str]:
    import os

    return {
        **{k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "DATABASE_URL")},
        **PRODUCTION,
        "SYSTIMZ_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "SYSTIMZ_TEST_STATIC_ROOT": str(static_root),
    }


@pytest.fixture
def server(static_root: Path, tmp_path: Path, transactional_db: None) -> Iterator[AppServer]:
    if connection.vendor == "sqlite" and "memory" in str(connection.settings_dict["NAME"]):
        pytest.skip("daphne needs a database file or PostgreSQL to share the test data")
    extra = {**PRODUCTION, "SYSTIMZ_TEST_STATIC_ROOT": str(static_root)}
    app = AppServer(database_url(connection.settings_dict), tmp_path / "daphne.log", extra)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def _request(server: AppServer, path: str, method: str = "GET", **headers: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        server.url(path), method=method, headers={**HTTPS, **headers}
    )
    try:
        return urllib.request.urlopen(request, timeout=20)  # noqa: S310 - loopback
    except urllib.error.HTTPError as exc:
        return exc


def _cookies(response: Any) -> dict[str, Any]:
    jar: dict[str, Any] = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        cookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            jar[name] = (morsel, header)
    return jar


def test_security_headers_and_cookies_under_production(tenant, server):
    avatar = factories.AvatarFactory(
        organisation=tenant.org,
        slug="probe",
        published=True,
        allowed_origins=["https://shop.example"],
    )
    page_path = f"/talk/{tenant.org.slug}/{avatar.slug}/"

    # Every response: HSTS and nosniff.
    for path in ("/healthz", "/api/v1/organisation/", page_path, "/admin/login/"):
        response = _request(server, path)
        assert response.status < 500, (path, response.status, server.log_tail())
        hsts = response.headers.get("Strict-Transport-Security", "")
        assert "max-age=" in hsts, path
        assert int(hsts.split("max-age=")[1].split(";")[0]) > 0, path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path

    # The talk page: a CSP whose frame-ancestors names the site and the avatar's origins.
    page = _request(server, page_path)
    assert page.status == 200, server.log_tail()
    csp = page.headers.get("Content-Security-Policy", "")
    ancestors = next(d for d in csp.split(";") if d.strip().startswith("frame-ancestors"))
    assert "https://shop.example" in ancestors
    assert "*" not in ancestors.split()
    # Elsewhere framing is refused outright.
    login = _request(server, "/admin/login/")
    assert "frame-ancestors 'none'" in login.headers.get("Content-Security-Policy", "")

    # Admin login page: the CSRF cookie; a failed login POST would set the session cookie
    # only on success, so check the session cookie's flags through Django's settings below.
    csrf_morsel, csrf_header = _cookies(login)["csrftoken"]
    assert csrf_morsel["secure"], csrf_header
    assert csrf_morsel["samesite"].lower() in ("lax", "strict"), csrf_header

    # Talk visitor cookie, on a session start from the page's own (https) origin.
    start = _request(
        server,
        f"/talk/{tenant.org.slug}/{avatar.slug}/sessions",
        method="POST",
        Origin="https://shop.example",
        **{"Content-Type": "application/json"},
    )
    assert start.status in (200, 201), (start.status, start.read()[:300], server.log_tail())
    [(visitor, visitor_header)] = [
        value for name, value in _cookies(start).items() if name != "csrftoken"
    ]
    assert visitor["secure"], visitor_header
    assert visitor["httponly"], visitor_header
    assert visitor["samesite"] == "None", visitor_header
    assert start.headers.get("Strict-Transport-Security")


def test_session_cookie_flags_after_an_admin_login(server, settings):
    """The admin session cookie itself: Secure, HttpOnly, SameSite, set by a real login."""
    import re

    from django.contrib.auth import get_user_model

    # The server verifies with the production hasher, not the tests' fast one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    get_user_model().objects.create_superuser("t22", "t22@example.com", "t22-pass-Word-9")
    login = _request(server, "/admin/login/")
    csrf_morsel, _ = _cookies(login)["csrftoken"]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', login.read()).group(1)
    body = f"username=t22&password=t22-pass-Word-9&csrfmiddlewaretoken={token.decode()}".encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(  # noqa: S310 - loopback
        server.url("/admin/login/?next=/admin/"),
        data=body,
        method="POST",
        headers={
            **HTTPS,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf_morsel.value}",
            "Referer": f"https://127.0.0.1:{server.port}/admin/login/",
            "Origin": f"https://127.0.0.1:{server.port}",
        },
    )
    try:
        response = urllib.request.build_opener(NoRedirect).open(request, timeout=20)
    except urllib.error.HTTPError as exc:
        response = exc
    assert response.status == 302, (response.status, server.log_tail())
    session, header = _cookies(response)["sessionid"]
    assert session["secure"], header
    assert session["httponly"], header
    assert session["samesite"].lower() in ("lax", "strict"), header
