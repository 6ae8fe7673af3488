"""Amazon Bedrock's Converse API, streamed (ConverseStream): any Bedrock chat model by its model
or inference-profile id. The client comes from the composition root (botocore's own retries off:
`retrying` owns them, so one deadline bounds the whole call)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from sdcore.adapters.llm.retry import RetryableError, retrying
from sdcore.errors import LLMError
from sdcore.ports.assistant import ChatMessage

# error codes worth another try, lower-cased: a call's exceptions are capitalised, the same
# errors arriving inside a started stream are not
RETRYABLE = frozenset(
    {
        "throttlingexception",
        "servicequotaexceededexception",
        "serviceunavailableexception",
        "internalserverexception",
        "modelnotreadyexception",
        "modeltimeoutexception",
    }
)


class BedrockChat:
    """A Bedrock model through ConverseStream."""

    def __init__(
        self,
        client: Any,
        model_id: str,
        timeout_s: float,
        retries: int,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._client = client
        self._model_id = model_id
        self._timeout_s = timeout_s
        self._retries = retries
        self._sleep = sleep

    def stream(
        self, system: str, messages: list[ChatMessage], max_tokens: int = 512
    ) -> Iterator[str]:
        request: dict[str, Any] = {
            "modelId": self._model_id,
            "messages": [{"role": m.role, "content": [{"text": m.text}]} for m in messages],
            "inferenceConfig": {"maxTokens": max_tokens},
        }
        if system:
            request["system"] = [{"text": system}]
        return retrying(
            lambda left: self._attempt(request),
            self._retries,
            self._timeout_s,
            what=f"Bedrock model {self._model_id}",
            sleep=self._sleep,
        )

    def _attempt(self, request: dict[str, Any]) -> Iterator[str]:
        try:
            response = self._client.converse_stream(**request)
            for event in response["stream"]:
                delta = event.get("contentBlockDelta", {}).get("delta", {})
                if delta.get("text"):
                    yield delta["text"]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            reason = f"{code or 'error'}: {error.get('Message', '')}".rstrip(": ")
            if code.lower() in RETRYABLE or status == 429 or status >= 500:
                raise RetryableError(reason) from exc
            raise LLMError(f"Bedrock model {self._model_id} refused the call: {reason}") from exc
        except (HTTPClientError, BotoConnectionError) as exc:  # timeouts, dropped connections
            raise RetryableError(str(exc)) from exc
        except BotoCoreError as exc:
            raise LLMError(f"Bedrock model {self._model_id} could not be called: {exc}") from exc
