"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne).

Two things about daphne are fixed first: its access log masks tokens in query strings
(systimz/access_log.py), and what it buffers for one WebSocket is bounded
(systimz/ws_backpressure.py).
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the routing imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from sessions.routing import websocket_urlpatterns  # noqa: E402
from systimz.access_log import install_daphne_redaction  # noqa: E402
from systimz.ws_backpressure import bound_websocket_send_buffers  # noqa: E402

install_daphne_redaction()
bound_websocket_send_buffers(settings.WS_SEND_BUFFER_LIMIT_BYTES)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origin checks and token authentication are per session (the relay); the router
        # refuses unknown paths.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
