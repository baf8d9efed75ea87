"""T15 (reliability §4.2): a stuck WebSocket consumer.

Scale: ``SYSTIMZ_T15_CLIENTS`` (default 20) players listen to one session on the app under
daphne (private PostgreSQL and Redis, the HeyGen emulator); one more connects with a 4 KiB
receive buffer, asks for the stream, and never reads again. Two players forward 1,000-character
media-room words until ``SYSTIMZ_T15_EVENTS`` (default 250, about 0.3 MB per listener) are in
the log. The app's send bound is set to 128 KiB here (``WS_SEND_BUFFER_LIMIT_BYTES``; 1 MiB by
default) so that a few hundred events cross it on this slow machine.

What daphne and autobahn do (daphne 4.2.3, autobahn 26.10, Twisted 26.10), found here: ASGI's
``send`` never waits. Daphne passes each message to autobahn, which writes it to the Twisted
transport at once, and Twisted buffers whatever the kernel's send queue cannot take, without a
limit. Pings do not save it: daphne pings only sockets that have sent nothing for
``--ping-interval`` (20 s) and drops them ``--ping-timeout`` (30 s) later, by which time the
buffer holds everything sent in between; nothing else looks at it. With the relay's largest
events (about 1.3 KB) at a few hundred per second, that is megabytes per stuck socket, held for
as long as the socket lives (here a 1 MiB bound was crossed after roughly 900 such events). So
the app bounds it: ``systimz.asgi`` drops a socket whose unsent bytes (Twisted's buffer plus the
kernel's send queue, ``TIOCOUTQ``) pass the bound, with a reset (a close frame could not get
through the full buffer); a player reconnects and resumes from the log (drop-and-resync). The
consumer's channel-layer queue does not grow: its sends never wait, so it keeps up.

Pass criteria, asserted:
- the stuck socket is dropped by the server while events still flow (its listener count goes
  down in the database, without the client reading anything), and when it reads again it
  finds the connection reset;
- every other player receives every event once, in order: its log equals the server's by seq,
  on its first connection;
- daphne's RSS is sampled every 0.2 s (recorded: before and peak, next to the bytes the stuck
  socket was sent).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import faults
from tests.workers import wait_for

CLIENTS = int(faults.env_seconds("SYSTIMZ_T15_CLIENTS", 20))
EVENTS = int(faults.env_seconds("SYSTIMZ_T15_EVENTS", 250))
SEND_BOUND = 128 * 1024
MESSAGE_SIZE = 1000  # the relay's limit for a forwarded word (sessions.relay.MAX_CLIENT_MESSAGE)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.AppStack]:
    workdir = Path(tmp_path_factory.mktemp("t15"))
    with faults.app_stack(
        "fault_slow_consumer",
        workdir,
        plan="enterprise",
        extra_env={"WS_SEND_BUFFER_LIMIT_BYTES": str(SEND_BOUND)},
    ) as stack:
        yield stack


def _listeners(db: str, session_id: str) -> int:
    return faults.session_column(db, session_id, "listeners")


def _last_seq(db: str, session_id: str) -> int:
    return faults.session_column(db, session_id, "next_seq") - 1


def _drain(client: faults.WsClient) -> None:
    """Read until nothing more comes for 5 s (returns) or the connection ends (raises)."""
    while client.recv_json(5) is not None:
        pass


@faults.needs_servers
def test_a_stuck_consumer_is_dropped_and_the_others_get_every_event(
    stack: faults.AppStack, record_property: Any
) -> None:
    app, db = stack.app, stack.db
    assert app.server is not None
    port = app.server.port
    session = app.post("/api/v1/sessions/", {"avatar": "anna"})
    path = app.ws_path(session)
    players = [faults.ResumingListener(port, path).start() for _ in range(CLIENTS)]
    wait_for(lambda: _listeners(db, session["id"]) == CLIENTS, timeout=60, what="the players")
    drivers = [
        faults.EventDriver(port, path, interval=0.02, message_size=MESSAGE_SIZE).start(paused=True)
        for _ in range(2)
    ]
    connected = CLIENTS + len(drivers)
    wait_for(lambda: _listeners(db, session["id"]) == connected, timeout=30, what="the drivers")
    stuck = faults.WsClient(port, path, rcvbuf=4096)
    stuck.send_json({"type": "resume", "after": 0})
    wait_for(
        lambda: _listeners(db, session["id"]) == connected + 1, timeout=30, what="the stuck one"
    )
    rss_before = app.server.rss_kib()
    rss_peak = rss_before
    for driver in drivers:
        driver.go.set()
    dropped_at_seq = None
    try:
        deadline = time.monotonic() + 600
        while _last_seq(db, session["id"]) < EVENTS:
            rss_peak = max(rss_peak, app.server.rss_kib())
            if dropped_at_seq is None and _listeners(db, session["id"]) <= connected:
                dropped_at_seq = _last_seq(db, session["id"])
            assert time.monotonic() < deadline, "the drivers did not record the events"
            time.sleep(0.2)  # a sampling period, not synchronisation
    finally:
        for driver in drivers:
            driver.stop()
    faults.wait_for_quiet_log(db, session["id"])
    try:
        server = app.request("GET", f"/api/v1/sessions/{session['id']}/events/?after=0").json()
        for player in players:
            wait_for(
                lambda player=player: player.last_seq >= server[-1]["seq"],
                timeout=60,
                what="every player to get every event",
            )
    finally:
        for player in players:
            player.stop()

    # The stuck socket was dropped by the server while the events flowed...
    assert dropped_at_seq is not None, "the server kept the stuck socket"
    # ... and reading now, the client finds the reset after what the kernel had taken.
    with pytest.raises(faults.WsClosed):
        _drain(stuck)
    stuck.abort()
    # The others got everything, in order, once, on their first connection.
    assert [d.breaks for d in drivers] == [0, 0]  # so the one that left was the stuck one
    for player in players:
        assert player.connects == 1
        assert [e["seq"] for e in player.events] == [e["seq"] for e in server]
    sent_to_stuck_kib = sum(len(json.dumps(e)) for e in server) // 1024

    record_property("clients", CLIENTS)
    record_property("events", len(server))
    record_property("stuck_dropped_at_seq", dropped_at_seq)
    record_property("rss_before_kib", rss_before)
    record_property("rss_peak_kib", rss_peak)
    record_property("bytes_for_the_stuck_socket_kib", sent_to_stuck_kib)


class _Transport:
    """What ``systimz.ws_backpressure.unsent_bytes`` reads of a Twisted TCP transport."""

    def __init__(self, sock: socket.socket | None, buffered: int = 0) -> None:
        self.sock = sock
        self.dataBuffer = b"x" * buffered
        self.offset = 0
        self._tempDataLen = 0
        self.aborted = 0

    def fileno(self) -> int:
        if self.sock is None:
            raise AttributeError("no socket")
        return self.sock.fileno()

    def abortConnection(self) -> None:
        self.aborted += 1


class _Protocol:
    """The parts of daphne's ``WebSocketProtocol`` its ``serverSend`` touches."""

    STATE_CONNECTING, STATE_OPEN = 0, 1
    state = STATE_OPEN
    client_addr = ("127.0.0.1", 1)

    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self.sent: list[bytes] = []

    def sendMessage(self, payload: bytes, binary: bool = False) -> None:
        self.sent.append(payload)


def test_the_send_bound_counts_the_kernel_queue_and_drops_past_it() -> None:
    """The bound behind T15, without a server: the kernel's send queue is counted, a socket
    under the bound is sent to, one past it is reset once and then sent nothing."""
    from daphne.ws_protocol import WebSocketProtocol
    from django.conf import settings

    from systimz import ws_backpressure

    ws_backpressure.bound_websocket_send_buffers(settings.WS_SEND_BUFFER_LIMIT_BYTES)

    with socket.create_server(("127.0.0.1", 0)) as server:
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(server.getsockname())
        writer, _ = server.accept()
        with reader, writer:
            assert ws_backpressure.unsent_bytes(_Transport(writer)) == 0
            writer.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    writer.send(b"x" * 65536)  # nobody reads: the kernel queue fills
            assert ws_backpressure.unsent_bytes(_Transport(writer)) > 0

    calm = _Protocol(_Transport(None, buffered=10))
    WebSocketProtocol.serverSend(calm, "hello")
    assert calm.sent == [b"hello"]
    assert calm.transport.aborted == 0

    stuck = _Protocol(_Transport(None, buffered=settings.WS_SEND_BUFFER_LIMIT_BYTES + 1))
    WebSocketProtocol.serverSend(stuck, "one")
    WebSocketProtocol.serverSend(stuck, "two")
    assert stuck.sent == []
    assert stuck.transport.aborted == 1
