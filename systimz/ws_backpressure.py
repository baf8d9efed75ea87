"""Back-pressure for daphne's WebSockets.

What daphne buffers for one WebSocket is bounded here. Daphne hands every message to
autobahn, which writes it to the Twisted transport at once; a client that stops reading
makes that buffer (and the kernel's send queue) grow without limit, since ASGI's ``send``
never waits. So a socket with more than ``WS_SEND_BUFFER_LIMIT_BYTES`` unsent (1 MiB; the
variable of that name sets it, from 64 KiB) is dropped
(a reset: a close frame could not get through the full buffer either). The player then
reconnects and ``resume``s after its last seq, and the session's log fills the gap
(tests/reliability/test_fault_slow_consumer.py, T15).
"""

import fcntl
import logging
import struct
import termios
from typing import Any

log = logging.getLogger("systimz.sessions.relay")


def unsent_bytes(transport: Any) -> int:
    """Bytes written to ``transport`` and not yet taken by the peer: Twisted's own buffer plus
    the kernel's send queue (``TIOCOUTQ``). 0 for what this cannot measure."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    buffered += getattr(transport, "_tempDataLen", 0)
    try:
        queued = fcntl.ioctl(transport.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        buffered += struct.unpack("i", queued)[0]
    except (AttributeError, OSError, ValueError):
        pass
    return buffered


def bound_websocket_send_buffers(limit: int) -> None:
    """Make daphne drop a WebSocket whose unsent bytes pass ``limit`` instead of buffering
    for it forever (idempotent; a no-op without daphne)."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a runtime requirement
        return
    send = WebSocketProtocol.serverSend
    if getattr(send, "bounded", False):
        return

    def server_send(self: Any, content: Any, binary: bool = False) -> None:
        if getattr(self, "systimz_dropped", False):
            return
        if self.state == self.STATE_OPEN and unsent_bytes(self.transport) > limit:
            self.systimz_dropped = True
            log.warning("relay.slow_consumer_dropped client=%s", self.client_addr)
            self.transport.abortConnection()
            return
        send(self, content, binary)

    server_send.bounded = True  # type: ignore[attr-defined]
    WebSocketProtocol.serverSend = server_send
