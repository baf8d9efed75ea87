"""WebSocket routes. The session relay arrives with the real-time work."""

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []
