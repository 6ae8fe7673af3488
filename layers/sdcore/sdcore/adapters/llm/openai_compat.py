"""Any OpenAI-compatible chat endpoint (`POST {base}/chat/completions` with `stream: true`):
hosted APIs, and local servers such as vLLM or Ollama. The reply arrives as server-sent events,
one `data: {json}` line per piece, ending with `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from sdcore.adapters.llm.retry import RetryableError, retrying
from sdcore.errors import LLMError
from sdcore.ports.assistant import ChatMessage

CONNECT_TIMEOUT_S = 5.0
ERROR_BODY_CHARS = 300  # of an error answer, in the message (never the request)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    text = response.read().decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict):
            text = str(error.get("message", text))
        elif isinstance(error, str):
            text = error
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:ERROR_BODY_CHARS]


class OpenAICompatibleChat:
    """A chat model behind an OpenAI-compatible API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_s: float,
        retries: int,
        api_key: str | Callable[[], str] = "",
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._timeout_s = timeout_s
        self._retries = retries
        self._sleep = sleep
        # a key read when first needed (from a secret store) is a callable
        self._api_key = api_key
        self._http = httpx.Client(headers={"Accept": "text/event-stream"}, transport=transport)

    def stream(
        self, system: str, messages: list[ChatMessage], max_tokens: int = 512
    ) -> Iterator[str]:
        chat = [{"role": "system", "content": system}] if system else []
        chat += [{"role": m.role, "content": m.text} for m in messages]
        body = {"model": self._model, "messages": chat, "max_tokens": max_tokens, "stream": True}
        return retrying(
            lambda left: self._attempt(body, left),
            self._retries,
            self._timeout_s,
            what=f"the model {self._model} at {self._url}",
            sleep=self._sleep,
        )

    def _attempt(self, body: dict[str, Any], left_s: float) -> Iterator[str]:
        # the read timeout bounds each wait for the next bytes; `retrying` bounds the whole
        timeout = httpx.Timeout(left_s, connect=min(left_s, CONNECT_TIMEOUT_S))
        key = self._api_key() if callable(self._api_key) else self._api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            with self._http.stream(
                "POST", self._url, json=body, headers=headers, timeout=timeout
            ) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise RetryableError(f"HTTP {status}", _retry_after(response))
                if status >= 400:
                    raise LLMError(f"{self._url} answered HTTP {status}: {_error_text(response)}")
                yield from self._pieces(response.iter_lines())
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc

    def _pieces(self, lines: Iterator[str]) -> Iterator[str]:
        finished = False  # a choice said why it ended: a stream without [DONE] is whole then
        for line in lines:
            if not line.startswith("data:"):
                continue  # blank separators, comments, `event:` lines
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise LLMError(f"{self._url} sent a piece that is not JSON") from None
            if not isinstance(chunk, dict):
                raise LLMError(f"{self._url} sent a piece that is not a JSON object")
            if chunk.get("error"):
                raise LLMError(f"{self._url} failed mid-reply: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if isinstance(text, str) and text:
                    yield text
                finished = finished or bool(choice.get("finish_reason"))
        if not finished:
            raise RetryableError("the stream ended before the reply did")
