"""A Secrets Manager secret's value, read when first needed and kept for the execution
environment (the prompt assistant's API key: SD_LLM_API_KEY_SECRET)."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sdcore.errors import LLMError


class SecretValue:
    """Calling it answers the secret's SecretString."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id
        self._value: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        """Raises LLMError when the secret cannot be read (the key's only use is the model's)."""
        with self._lock:
            if self._value is None:
                try:
                    answer = self._client.get_secret_value(SecretId=self._secret_id)
                except (ClientError, BotoCoreError) as exc:
                    reason = f"the model's key ({self._secret_id}) is unreadable: {exc}"
                    raise LLMError(reason) from exc
                self._value = str(answer.get("SecretString") or "").strip()
            return self._value
