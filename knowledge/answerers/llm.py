"""An OpenAI-compatible chat-completions back-end, told to answer only from the passages.

The passages retrieved for the question are numbered and given to the model with the
knowledge base's instructions; the model must cite them as ``[n]`` or reply ``NO_ANSWER``.
Citations are checked against the passages actually given: a number that was not given is
dropped, and an answer left with no valid citation is treated as unsupported (refused).
Streams the reply (``stream: true``) and reports each delta to ``on_delta``; a server that
ignores streaming and answers with one JSON body is understood too.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence

import httpx

from knowledge.answerers.base import Answer, AnswererError, Citation, Turn
from knowledge.models import KnowledgeBase, LLMEndpoint
from knowledge.retrieval import Passage, retrieve
from systimz.log import redact

log = logging.getLogger("systimz.knowledge.llm")

NO_ANSWER = "NO_ANSWER"
_CITATION = re.compile(r"\[(\d{1,2})\]")
MAX_PASSAGE_CHARS = 1500
MAX_HISTORY_TURNS = 6

SYSTEM_RULES = f"""You answer questions for an organisation's customers.
Use ONLY the numbered passages in the user's message. Do not use any other knowledge.
After every sentence, cite the passage(s) it comes from as [1], [2], ...
If the passages do not contain the answer, reply with exactly {NO_ANSWER} and nothing else.
Answer in at most three sentences, in the language of the question."""


def _messages(
    kb: KnowledgeBase, question: str, history: Sequence[Turn], passages: list[Passage]
) -> list[dict[str, str]]:
    system = SYSTEM_RULES
    if kb.instructions.strip():
        system += (
            "\n\nThe organisation's instructions (they never override the rules above):\n"
            + kb.instructions.strip()
        )
    numbered = "\n\n".join(
        f"[{n}] {p.title} — {p.heading}\n{p.text[:MAX_PASSAGE_CHARS]}"
        for n, p in enumerate(passages, start=1)
    )
    messages = [{"role": "system", "content": system}]
    for turn in list(history)[-MAX_HISTORY_TURNS:]:
        messages.append(
            {"role": "user" if turn.role == "user" else "assistant", "content": turn.text}
        )
    messages.append({"role": "user", "content": f"Passages:\n\n{numbered}\n\nQuestion: {question}"})
    return messages


def _stream_deltas(response: httpx.Response) -> Iterator[str]:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        body = json.loads(response.read())
        yield body["choices"][0]["message"]["content"] or ""
        return
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        choices = event.get("choices") or []
        if choices:
            delta = choices[0].get("delta") or {}
            if isinstance(delta.get("content"), str):
                yield delta["content"]


class LLMAnswerer:
    name = "llm"

    def __init__(
        self,
        endpoint: LLMEndpoint,
        *,
        candidates: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.candidates = candidates
        self.transport = transport

    def _complete(
        self, messages: list[dict[str, str]], on_delta: Callable[[str], None] | None
    ) -> str:
        endpoint = self.endpoint
        timeout = httpx.Timeout(
            endpoint.timeout_seconds, connect=min(5.0, endpoint.timeout_seconds)
        )
        url = endpoint.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {endpoint.reveal_api_key()}"}
        payload = {"model": endpoint.model, "messages": messages, "stream": True, "temperature": 0}
        started = time.monotonic()
        parts: list[str] = []
        try:
            with (
                httpx.Client(
                    timeout=timeout, follow_redirects=False, transport=self.transport
                ) as client,
                client.stream("POST", url, json=payload, headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise AnswererError(f"the LLM endpoint answered HTTP {response.status_code}")
                for delta in _stream_deltas(response):
                    parts.append(delta)
                    if on_delta is not None:
                        on_delta(delta)
        except httpx.TimeoutException as exc:
            raise AnswererError("the LLM endpoint timed out") from exc
        except httpx.HTTPError as exc:
            raise AnswererError(f"the LLM endpoint failed: {redact(str(exc))}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AnswererError("the LLM endpoint sent a malformed reply") from exc
        finally:
            log.info(
                "llm.call endpoint=%s model=%s ms=%d",
                endpoint.pk,
                endpoint.model,
                (time.monotonic() - started) * 1000,
            )
        return "".join(parts).strip()

    def answer(
        self,
        *,
        kb: KnowledgeBase,
        question: str,
        history: Sequence[Turn] = (),
        on_delta: Callable[[str], None] | None = None,
    ) -> Answer:
        passages = retrieve(kb=kb, question=question, limit=self.candidates)
        if not passages:
            return Answer(text=kb.fallback_text, answered=False, answerer=self.name)
        reply = self._complete(_messages(kb, question, history, passages), on_delta)
        cited = sorted({int(n) for n in _CITATION.findall(reply)})
        valid = [n for n in cited if 1 <= n <= len(passages)]
        if NO_ANSWER in reply or not valid:
            return Answer(text=kb.fallback_text, answered=False, answerer=self.name)
        # Markers are for checking, not for speaking: the citations travel beside the text.
        text = _CITATION.sub("", reply)
        text = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
        citations, seen = [], set()
        for n in valid:
            passage = passages[n - 1]
            if passage.chunk_id in seen:
                continue
            seen.add(passage.chunk_id)
            citations.append(
                Citation(
                    document=passage.document_id, title=passage.title, quote=passage.text[:300]
                )
            )
        support = len(valid) / max(1, len(cited))
        return Answer(
            text=text, answered=True, citations=citations, support=support, answerer=self.name
        )
