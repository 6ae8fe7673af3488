"""The prompt assistant (POST /prompts/assist) over the proxy handler on the local backend: with
a language model (a fake one here; the adapters have tests of their own) and without one (a
fake offline translator), as JSON and as server-sent events, and the prompt filter refusing a
model's output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore.composition import get_services
from sdcore.errors import LLMError
from sdcore.ports.assistant import ChatMessage
from tests.functional.events import Context, api

SSE = {"Accept": "text/event-stream"}
REPLY = ["Prompt: a red", " circle, white", " background\n", "Negative prompt: blurry"]


class FakeChat:
    """Replies with `pieces`, then raises `error` if given; records what it was asked."""

    def __init__(self, pieces: list[str], error: Exception | None = None) -> None:
        self.pieces, self.error = pieces, error
        self.asked: list[tuple[str, list[ChatMessage]]] = []

    def stream(
        self, system: str, messages: list[ChatMessage], max_tokens: int = 512
    ) -> Iterator[str]:
        self.asked.append((system, messages))
        yield from self.pieces
        if self.error is not None:
            raise self.error


class FakeTranslator:
    def translate(self, text: str) -> str:
        return text.replace("红色的圆形", "red circle").replace("，白色背景", ", white background")


class GoryTranslator:
    def translate(self, text: str) -> str:
        return "gore"


@pytest.fixture
def stack(local_env: Path) -> Iterator[Path]:
    (local_env / "blocklist.txt").write_text("gore\n")
    yield local_env


def _post(body: Any, **headers: str) -> tuple[int, dict[str, str], str]:
    resp = proxy(api("POST", "/prompts/assist", body, headers=headers), Context())
    out = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    for key, values in (resp.get("multiValueHeaders") or {}).items():
        out[key.lower()] = ", ".join(values)
    return resp["statusCode"], out, resp.get("body") or ""


def _json(body: Any) -> tuple[int, Any]:
    status, _, text = _post(body)
    return status, json.loads(text)


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            found.append((name[len("event: ") :], json.loads(data[len("data: ") :])))
    return found


def test_a_model_writes_the_prompt_as_json_and_as_events(stack: Path) -> None:
    chat = FakeChat(REPLY)
    get_services().chat = chat
    answer = {"prompt": "a red circle, white background", "negative_prompt": "blurry"}
    assert _json({"text": "红色的圆形，白色背景", "language": "zh"}) == (200, answer)
    system, messages = chat.asked[0]
    assert "Stable Diffusion" in system and "Negative prompt:" in system  # the default one
    assert "zh" in system and messages == [ChatMessage("user", "红色的圆形，白色背景")]

    status, headers, text = _post({"text": "红色的圆形"}, **SSE)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    found = _events(text)
    assert found[-1] == ("done", answer)
    tokens = [data["text"] for name, data in found[:-1]]
    assert {name for name, _ in found[:-1]} == {"token"}
    assert "".join(tokens) == "".join(REPLY) and len(tokens) > 1


def test_a_templates_system_prompt_skeleton_and_negative_and_a_style(stack: Path) -> None:
    chat = FakeChat(["Prompt: a fox\nNegative prompt:"])
    get_services().chat = chat
    template = {"name": "poster", "promptTemplate": "{prompt}, flat poster",
                "systemPrompt": "You write poster prompts.", "negative_prompt": "text"}  # fmt: skip
    assert proxy(api("POST", "/templates", template), Context())["statusCode"] == 201
    style = {"name": "grain", "prompt": "{prompt}, film grain", "negative_prompt": "lowres"}
    assert proxy(api("POST", "/styles", style), Context())["statusCode"] == 201

    body = {"text": "狐狸", "template": "poster", "style": "grain"}
    answer = {"prompt": "a fox, flat poster, film grain", "negative_prompt": "text, lowres"}
    assert _json(body) == (200, answer)
    assert chat.asked[0][0].startswith("You write poster prompts.")


def test_offline_the_translator_and_the_template_make_the_prompt(stack: Path) -> None:
    svc = get_services()
    svc.chat, svc.translator = None, FakeTranslator()
    template = {"name": "flat", "promptTemplate": "{prompt}, flat colours",
                "negative_prompt": "blurry"}  # fmt: skip
    assert proxy(api("POST", "/templates", template), Context())["statusCode"] == 201
    answer = {"prompt": "red circle, white background, flat colours", "negative_prompt": "blurry"}
    assert _json({"text": "红色的圆形，白色背景", "template": "flat"}) == (200, answer)
    found = _events(_post({"text": "红色的圆形，白色背景", "template": "flat"}, **SSE)[2])
    assert found == [("token", {"text": "red circle, white background"}), ("done", answer)]
    # English passes as it is; a language the offline assistant cannot read is refused
    assert _json({"text": "a cat"}) == (200, {"prompt": "a cat", "negative_prompt": ""})
    status, body = _json({"text": "un chat", "language": "fr"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "language"]
    svc.translator = None
    status, body = _json({"text": "红色的圆形"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "text"]


def test_the_prompt_filter_refuses_a_models_output(stack: Path) -> None:
    get_services().chat = FakeChat(["Prompt: a red circle,", " gore", " everywhere\n"])
    status, body = _json({"text": "a circle"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "text"]
    assert "blocked term" in body["detail"][0]["msg"] and "gore" not in json.dumps(body)
    # streamed: the words before the blocked one went out, the blocked one never does
    status, _, text = _post({"text": "a circle"}, **SSE)
    found = _events(text)
    assert status == 200 and "gore" not in text
    assert found[-1][0] == "error" and found[-1][1]["status"] == 422
    assert found[-1][1]["detail"][0]["loc"] == ["body", "text"]
    # the user's own words are refused before any model is asked
    get_services().chat = chat = FakeChat(REPLY)
    assert _json({"text": "gore"})[0] == 422 and chat.asked == []
    # offline the whole answer is known before the stream begins: a refusal is a plain 422
    svc = get_services()
    svc.chat, svc.translator = None, GoryTranslator()
    status, headers, text = _post({"text": "红色"}, **SSE)
    assert status == 422 and json.loads(text)["detail"][0]["loc"] == ["body", "text"]


def test_a_model_that_fails_is_a_502(stack: Path) -> None:
    get_services().chat = FakeChat(["Prompt: a"], LLMError("the model failed mid-reply: boom"))
    status, body = _json({"text": "a circle"})
    assert status == 502 and body == {"error": "llm_error",
                                      "message": "the model failed mid-reply: boom"}  # fmt: skip
    found = _events(_post({"text": "a circle"}, **SSE)[2])
    assert found[0] == ("token", {"text": "Prompt: "})  # up to its last whitespace
    assert found[-1] == ("error", {"status": 502, **body})
    get_services().chat = FakeChat(["Sure! Here is a nice picture."])
    assert _json({"text": "a circle"})[1]["message"].endswith("has no `Prompt:` line")


def test_bad_input_is_a_422_naming_the_field(stack: Path) -> None:
    get_services().chat = FakeChat(REPLY)
    for body, field in (
        ({"text": ""}, "text"),
        ({"text": "x" * 2001}, "text"),
        ({"text": "a", "template": "no/such"}, "template"),
        ({"text": "a", "template": "missing"}, "template"),
        ({"text": "a", "style": "missing"}, "style"),
        ({"text": "a", "language": "chinese!"}, "language"),
        ({"text": "a", "colour": "red"}, "colour"),
    ):
        status, answer = _json(body)
        assert status == 422, body
        assert answer["detail"][0]["loc"][:2] == ["body", field], (body, answer)
