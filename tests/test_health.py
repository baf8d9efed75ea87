"""GET /healthz checks the real dependencies that are configured."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db(transaction=True)
def test_healthy_when_every_dependency_answers():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok", "broker": "ok"},
    }
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db(transaction=True)
def test_a_dead_broker_is_503_naming_it(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["broker"] != "ok"
    assert (body["checks"]["database"], body["checks"]["channel_layer"]) == ("ok", "ok")


@pytest.mark.django_db(transaction=True)
def test_a_dead_channel_layer_is_503_naming_it(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"] != "ok"
    assert response.json()["checks"]["database"] == "ok"


def test_healthz_refuses_writes():
    response = Client().post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
