"""The OpenAI-compatible adapter against a fake streaming server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sdcore.adapters.llm.openai_compat import OpenAICompatibleChat
from sdcore.errors import LLMError
from sdcore.ports.assistant import ChatMessage
from tests.openai_server import FakeOpenAI, Reply, fake_openai

ASK = [ChatMessage("user", "红色的圆形")]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with fake_openai() as fake:
        yield fake


def _chat(server: FakeOpenAI, timeout_s: float = 10, retries: int = 2) -> OpenAICompatibleChat:
    sleeps: list[float] = []
    return OpenAICompatibleChat(
        server.base_url, "tiny-model", timeout_s, retries, api_key="sk-test", sleep=sleeps.append
    )


def test_pieces_arrive_in_order_as_they_are_sent(server: FakeOpenAI) -> None:
    # Given a reply whose second piece is sent only once the first has been read
    second = threading.Event()
    server.replies.put(Reply(["Prompt: a red", " circle", "\n"], gates={1: second}))
    pieces = _chat(server).stream("be brief", ASK, max_tokens=64)

    # When the first piece is read, Then it came before the server sent the second
    assert next(pieces) == "Prompt: a red"
    second.set()
    assert list(pieces) == [" circle", "\n"]
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-test"
    assert sent["stream"] is True and sent["model"] == "tiny-model" and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "红色的圆形"},
    ]


def test_a_429_is_retried_then_the_reply_streams(server: FakeOpenAI) -> None:
    server.replies.put(Reply(status=429))
    server.replies.put(Reply(["Prompt: ok"]))
    before = len(server.requests)
    assert list(_chat(server).stream("", ASK)) == ["Prompt: ok"]
    assert len(server.requests) - before == 2


def test_a_client_error_is_not_retried(server: FakeOpenAI) -> None:
    server.replies.put(Reply(status=400))
    before = len(server.requests)
    with pytest.raises(LLMError, match="HTTP 400: slow down"):
        list(_chat(server).stream("", ASK))
    assert len(server.requests) - before == 1


def test_retries_are_bounded(server: FakeOpenAI) -> None:
    for _ in range(2):
        server.replies.put(Reply(status=503))
    with pytest.raises(LLMError, match="after 2 tries: HTTP 503"):
        list(_chat(server, retries=1).stream("", ASK))


def test_a_server_that_does_not_answer_times_out(server: FakeOpenAI) -> None:
    server.replies.put(Reply(hang=True))
    started = time.monotonic()
    with pytest.raises(LLMError, match="timed out|did not answer|no time left"):
        list(_chat(server, timeout_s=0.5, retries=1).stream("", ASK))
    assert time.monotonic() - started < 5
