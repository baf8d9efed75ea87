from __future__ import annotations

import pytest

from knowledge.models import LLMEndpoint, UnansweredQuestion


def _ask(tenant, kb, question, **extra):
    return tenant.client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/ask", {"question": question, **extra}, format="json"
    )


def test_ask_answers_with_citations_in_the_contracts_shape(tenant, kettle_kb):
    response = _ask(tenant, kettle_kb, "How long is the warranty?")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"answer", "answered", "citations"}
    assert body["answered"] is True
    [citation] = body["citations"]
    assert set(citation) == {"document", "title", "quote"}
    assert citation["title"] == "Warranty"
    assert "two years" in body["answer"]
    assert not UnansweredQuestion.objects.exists()


def test_ask_with_and_without_trailing_slash(tenant, kettle_kb):
    url = f"/api/v1/knowledge-bases/{kettle_kb.pk}/ask/"
    assert tenant.client.post(url, {"question": "warranty?"}, format="json").status_code == 200


def test_refusals_become_gaps_grouped_by_similar_wording(tenant, kettle_kb):
    for question in (
        "Does it work with Zigbee?",
        "does it work with zigbee",
        "Does it WORK with Zigbee??",
        "Can I pay with bitcoin?",
    ):
        body = _ask(tenant, kettle_kb, question).json()
        assert body == {
            "answer": "I don't know that one.",
            "answered": False,
            "citations": [],
            "support": body["support"],
            "answerer": "offline",
        }
    gaps = tenant.client.get(f"/api/v1/knowledge-bases/{kettle_kb.pk}/gaps/").json()
    assert gaps["count"] == 2
    first, second = gaps["results"]
    assert (first["count"], first["question"]) == (3, "Does it WORK with Zigbee??")
    assert (second["count"], second["question"]) == (1, "Can I pay with bitcoin?")
    assert UnansweredQuestion.objects.filter(source="console", reason="refused").count() == 4


def test_gaps_of_one_knowledge_base_only(tenant, kettle_kb):
    from tests import factories

    other = factories.KnowledgeBaseFactory(organisation=tenant.org)
    _ask(tenant, other, "zigbee?")
    assert tenant.client.get(f"/api/v1/knowledge-bases/{kettle_kb.pk}/gaps/").json()["count"] == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"question": "ok", "history": [{"role": "robot", "text": "x"}]}, "history"),
        ({"question": "ok", "history": "nope"}, "history"),
    ],
)
def test_ask_validation(tenant, kettle_kb, data, field):
    response = tenant.client.post(
        f"/api/v1/knowledge-bases/{kettle_kb.pk}/ask", data, format="json"
    )
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_llm_endpoints_store_the_key_encrypted_and_never_show_it(tenant, settings):
    settings.LLM_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    secret = "sk-live-0123456789abcdef"
    response = tenant.client.post(
        "/api/v1/llm-endpoints/",
        {
            "name": "local",
            "base_url": "http://127.0.0.1:11434/v1/",
            "model": "m",
            "api_key": secret,
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["last4"] == "cdef"
    assert body["base_url"] == "http://127.0.0.1:11434/v1"
    assert secret not in response.content.decode()
    endpoint = LLMEndpoint.objects.get(pk=body["id"])
    assert secret not in endpoint.encrypted_api_key
    assert endpoint.reveal_api_key() == secret
    kb = tenant.client.post(
        "/api/v1/knowledge-bases/", {"name": "LLM KB", "llm_endpoint": body["id"]}, format="json"
    )
    assert kb.json()["llm_endpoint"] == body["id"]


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1",
        "ftp://x.example/v1",
        "https://u:p@x.example/v1",
        "https://x.example/v1?k=1",
    ],
)
def test_llm_endpoint_urls_must_be_https(tenant, url, settings):
    settings.LLM_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    response = tenant.client.post(
        "/api/v1/llm-endpoints/",
        {"name": "x", "base_url": url, "model": "m", "api_key": "k" * 10},
        format="json",
    )
    assert response.status_code == 400
    assert "base_url" in response.json()["error"]["fields"]
