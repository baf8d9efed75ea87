"""WebSocket routes: the player's relay (``sessions.consumers``)."""

from django.urls import URLPattern, path

from sessions.consumers import SessionConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/sessions/<uuid:session_id>/", SessionConsumer.as_asgi()),
]
