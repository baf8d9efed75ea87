"""T18 — WebSocket handshake security, and no token in access logs.

Pass criterion (reliability.md §4.2): a disallowed Origin is refused at the handshake; a
missing, bad, expired or other session's token is closed with 4401 before any event is sent;
no token appears in access logs.

Missing Origin, decided: allowed, with the token rule unchanged. Browsers always send Origin,
so a request without one is not a browser and cross-site WebSocket hijacking (what the Origin
check stops) needs a browser carrying the victim's ambient credentials; our credential is the
token in the URL, never ambient. A non-browser client (a kiosk, a server-side bridge) still
needs a valid token for that session: without one it is 4401 like everyone else
(``sessions.consumers.origin_allowed`` documents the same rule).

The access-log check starts the app under a real daphne (``tests.e2e.servers.AppServer``, whose
output file holds daphne's access log at its default verbosity), opens the WebSocket with
``?token=`` and fetches a ``/media/local/...?token=`` URL, then searches daphne's whole output.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.utils import timezone

from sessions.player import player_token
from sessions.services import session_admit
from systimz.asgi import application
from tests import factories

SITE = b"http://testserver"
ALLOWED = "https://shop.example"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.ws,
    pytest.mark.usefixtures("fresh_channel_layer"),
]


@pytest.fixture
def sessions(tenant) -> tuple[Any, Any]:
    avatar = factories.AvatarFactory(organisation=tenant.org, allowed_origins=[ALLOWED])
    return session_admit(org=tenant.org, avatar=avatar), session_admit(
        org=tenant.org, avatar=avatar
    )


def _handshake(path: str, origin: bytes | None) -> tuple[bool, list[dict[str, Any]]]:
    """Connect; return whether the handshake was accepted and everything the server sent
    until it closed (or went quiet)."""

    async def run() -> tuple[bool, list[dict[str, Any]]]:
        headers = [(b"host", b"testserver")]
        if origin is not None:
            headers.append((b"origin", origin))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect(timeout=10)
        sent: list[dict[str, Any]] = []
        if connected:
            while not await communicator.receive_nothing(timeout=0.3):
                message = await communicator.receive_output(timeout=5)
                sent.append(message)
                if message["type"] == "websocket.close":
                    break
        # The client's side of the close (the consumer waits for it before it ends).
        await communicator.disconnect(timeout=5)
        return connected, sent

    return async_to_sync(run)()


def _path(session: Any, token: str | None) -> str:
    query = "" if token is None else f"?token={token}"
    return f"/ws/sessions/{session.pk}/{query}"


CLOSED_4401 = [{"type": "websocket.close", "code": 4401}]


def test_origin_rules(sessions):
    """A disallowed Origin is refused before accept, whatever the token; the avatar's allowed
    origin opens (the control); no Origin opens only with the session's token."""
    session, _ = sessions
    good = _path(session, player_token(session))
    connected, sent = _handshake(good, b"https://evil.example")
    assert not connected
    assert not [m for m in sent if m["type"] == "websocket.send"]

    connected, sent = _handshake(good, ALLOWED.encode())
    assert connected
    assert {"type": "websocket.close", "code": 4401} not in sent

    assert _handshake(_path(session, None), None) == (True, CLOSED_4401)
    assert _handshake(_path(session, "not-a-token"), None) == (True, CLOSED_4401)
    connected, sent = _handshake(good, None)
    assert connected
    assert {"type": "websocket.close", "code": 4401} not in sent


def test_bad_tokens_are_4401_before_any_event(sessions):
    """Anonymous (no or empty token, from any origin), forged, expired, and another session's
    token: accepted only to be closed with 4401, nothing else sent."""
    session, other = sessions
    for origin in (SITE, ALLOWED.encode(), b"https://evil.example"):
        for path in (_path(session, None), _path(session, "")):
            assert _handshake(path, origin) == (True, CLOSED_4401), (origin, path)

    genuine = player_token(session)
    forged = genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB")
    assert _handshake(_path(session, forged), SITE) == (True, CLOSED_4401)
    assert _handshake(_path(session, player_token(other)), SITE) == (True, CLOSED_4401)

    later = timezone.now() + timedelta(seconds=settings.PLAYER_TOKEN_MAX_AGE_SECONDS + 5)
    with time_machine.travel(later, tick=True):
        assert _handshake(_path(session, genuine), SITE) == (True, CLOSED_4401)
    assert _handshake(_path(session, genuine), SITE)[0]  # control: before expiry it opens


# --- no token in access logs ------------------------------------------------------------------


@pytest.fixture
def app_server(tmp_path: Path, transactional_db: None) -> Iterator[Any]:
    from tests.e2e.servers import AppServer, database_url

    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith(
        "file:memorydb"
    ):
        pytest.skip("daphne needs a database file or PostgreSQL to share the test data")
    server = AppServer(
        database_url(connection.settings_dict), tmp_path / "daphne.log", {"LOG_LEVEL": "DEBUG"}
    ).start()
    try:
        yield server
    finally:
        server.stop()


def _ws_handshake(port: int, path: str, origin: str) -> bytes:
    """A raw RFC 6455 opening handshake against daphne (no client library is installed):
    send the upgrade, read the response head, close."""
    import base64
    import os
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head


def test_no_token_in_daphne_output(tenant, app_server):
    avatar = factories.AvatarFactory(organisation=tenant.org, slug="logged", allowed_origins=[])
    session = session_admit(org=tenant.org, avatar=avatar)
    token = player_token(session)
    head = _ws_handshake(
        app_server.port, f"/ws/sessions/{session.pk}/?token={token}", app_server.origin
    )
    assert head.startswith(b"HTTP/1.1 101"), head

    media = app_server.url(f"/media/local/{session.pk}/t-1/0.wav?token={token}")
    try:
        urllib.request.urlopen(media, timeout=15).close()  # noqa: S310 - loopback
    except urllib.error.HTTPError as exc:  # 404: no such chunk; it was still served and logged
        exc.close()
    app_server.stop()  # flush and close daphne's output

    output = app_server.log_path.read_text(errors="replace")
    assert f"/media/local/{session.pk}/" in output, "no access log line: the check would be void"
    assert f"/ws/sessions/{session.pk}/" in output
    assert token not in output
    assert token.split(":")[-1] not in output  # not even the signature part
