"""The LLM back-end against a local OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import logging

import pytest

from knowledge.answerers import LLMAnswerer, Turn
from knowledge.models import KnowledgeBase
from knowledge.services import knowledge_ask
from tests import factories
from tests.fakes.openai_server import FakeLLM

KEY = "sk-llm-test-3f9a8b7c6d5e4f3a"


@pytest.fixture
def fake_llm():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm_kb(kettle_kb: KnowledgeBase, fake_llm: FakeLLM) -> KnowledgeBase:
    endpoint = factories.LLMEndpointFactory(
        organisation=kettle_kb.organisation,
        base_url=fake_llm.base_url,
        api_key=KEY,
        model="tiny-test",
        timeout_seconds=1.0,
    )
    kettle_kb.llm_endpoint = endpoint
    kettle_kb.save()
    return kettle_kb


def _passage_titles(request_json) -> list[str]:
    user = request_json["messages"][-1]["content"]
    return [
        line.split("] ", 1)[1].split(" \u2014 ")[0]
        for line in user.splitlines()
        if line.startswith("[")
    ]


def test_streams_an_answer_and_keeps_only_citations_of_given_passages(llm_kb, fake_llm):
    fake_llm.reply("The warranty lasts two years [1]. It also covers oceans [9].")
    deltas: list[str] = []

    answer = LLMAnswerer(llm_kb.llm_endpoint).answer(
        kb=llm_kb, question="How long is the warranty?", on_delta=deltas.append
    )

    assert answer.answered
    assert answer.answerer == "llm"
    assert answer.text == "The warranty lasts two years. It also covers oceans."
    assert "".join(deltas) == "The warranty lasts two years [1]. It also covers oceans [9]."
    given = _passage_titles(fake_llm.requests[0]["json"])
    assert [c.title for c in answer.citations] == [given[0]]
    assert given[0] == "Warranty"
    assert answer.support == 0.5  # one of the two cited numbers was a passage


def test_what_the_endpoint_receives(llm_kb, fake_llm):
    fake_llm.reply("Two years [1].")
    LLMAnswerer(llm_kb.llm_endpoint).answer(
        kb=llm_kb,
        question="How long is the warranty?",
        history=[Turn("user", "Hi"), Turn("avatar", "Hello!")],
    )
    [request] = fake_llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["json"]
    assert (body["model"], body["stream"], body["temperature"]) == ("tiny-test", True, 0)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "Answer briefly." in body["messages"][0]["content"]  # the knowledge base's instructions
    assert "NO_ANSWER" in body["messages"][0]["content"]
    assert "Question: How long is the warranty?" in body["messages"][-1]["content"]


@pytest.mark.parametrize("reply", ["NO_ANSWER", "Two years, I believe.", "See [7]."])
def test_no_answer_or_no_valid_citation_is_a_refusal(llm_kb, fake_llm, reply):
    fake_llm.reply(reply)
    answer = LLMAnswerer(llm_kb.llm_endpoint).answer(
        kb=llm_kb, question="How long is the warranty?"
    )
    assert not answer.answered
    assert answer.text == llm_kb.fallback_text
    assert answer.citations == []


def test_a_server_that_ignores_streaming_is_understood(llm_kb, fake_llm):
    fake_llm.reply("Every four weeks [1].", mode="json")
    answer = LLMAnswerer(llm_kb.llm_endpoint).answer(
        kb=llm_kb, question="How often should I descale?"
    )
    assert (answer.answered, answer.text) == (True, "Every four weeks.")


@pytest.mark.parametrize(
    ("mode", "status"), [("status", 500), ("status", 401), ("malformed", 200), ("hang", 200)]
)
def test_a_failing_endpoint_falls_back_to_the_offline_answerer(
    llm_kb, fake_llm, caplog, mode, status
):
    caplog.set_level(logging.INFO)
    fake_llm.reply("unused", mode=mode, status=status, delay=5.0)

    answer = knowledge_ask(kb=llm_kb, question="How long is the warranty?")

    assert answer.answerer == "offline"
    assert answer.answered
    assert answer.citations[0].title == "Warranty"
    assert len(fake_llm.requests) == 1
    assert "answerer_failed" in caplog.text
    assert KEY not in caplog.text


def test_no_passage_means_no_call(llm_kb, fake_llm):
    answer = LLMAnswerer(llm_kb.llm_endpoint).answer(kb=llm_kb, question="zigbee?")
    assert not answer.answered
    assert fake_llm.requests == []
