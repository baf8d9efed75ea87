"""The OpenAPI schema describes every API route and the docs page serves without a CDN."""

from __future__ import annotations

from django.test import Client

from tests.api.routes import PUBLIC, api_routes


def test_schema_is_openapi3_and_covers_every_route(db):
    response = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An organisation's API key: `Authorization: Bearer stz_…`.",
    }
    paths = schema["paths"]
    for route in api_routes():
        if route.name in PUBLIC:
            continue
        prefix = "/api/v1/" + route.regex.removeprefix("^api/v1/").split("(")[0].split("/")[0]
        assert any(p.startswith(prefix) for p in paths), route.name


def test_docs_page_uses_local_assets(db):
    page = Client().get("/api/v1/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn." not in page
    assert "jsdelivr" not in page
