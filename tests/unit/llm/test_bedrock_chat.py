"""The Bedrock adapter (ConverseStream) against botocore's Stubber: moto's Bedrock runtime has
no Converse."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EventStreamError
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from sdcore.adapters.llm.bedrock import BedrockChat
from sdcore.errors import LLMError
from sdcore.ports.assistant import ChatMessage
from tests import iam

MODEL = "amazon.nova-micro-v1:0"
ASK = [ChatMessage("user", "a red circle")]
EXPECTED = {
    "modelId": MODEL,
    "messages": [{"role": "user", "content": [{"text": "a red circle"}]}],
    "inferenceConfig": {"maxTokens": 512},
    "system": [{"text": "be brief"}],
}


def _delta(text: str) -> dict[str, Any]:
    return {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": text}}}


def _events(*texts: str) -> list[dict[str, Any]]:
    return [
        {"messageStart": {"role": "assistant"}},
        *(_delta(t) for t in texts),
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
    ]


@pytest.fixture
def client() -> Iterator[tuple[Any, Stubber]]:
    bedrock = boto3.client(
        "bedrock-runtime", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip
    with Stubber(bedrock) as stubber:
        yield bedrock, stubber
        stubber.assert_no_pending_responses()


def _stub_stream(
    bedrock: Any,
    stubber: Stubber,
    events: list[dict[str, Any]],
    stream: Iterable[dict[str, Any]] | None = None,
) -> None:
    """A ConverseStream answer streaming `events` (or `stream`, made of them). Stubber checks a
    response against its shape, which knows the stream only as one event (a union), not as the
    iterable botocore hands out: each event is checked against that shape here, the answer is
    stubbed with one, then given the whole stream."""
    output = bedrock.meta.service_model.operation_model("ConverseStream").output_shape
    event_shape = output.members["stream"]
    for event in events:
        validate_parameters(event, event_shape)
    response: dict[str, Any] = {"stream": events[-1]}
    stubber.add_response("converse_stream", response, EXPECTED)
    response["stream"] = events if stream is None else stream


def _chat(bedrock: Any, sleeps: list[float]) -> BedrockChat:
    return BedrockChat(bedrock, MODEL, timeout_s=10, retries=2, sleep=sleeps.append)


def test_the_reply_streams_in_pieces(client: tuple[Any, Stubber]) -> None:
    bedrock, stubber = client
    _stub_stream(bedrock, stubber, _events("Prompt: a red", " circle", "\nNegative prompt: blur"))
    pieces = list(_chat(bedrock, []).stream("be brief", ASK))
    assert pieces == ["Prompt: a red", " circle", "\nNegative prompt: blur"]


def test_throttling_is_retried_with_back_off(client: tuple[Any, Stubber]) -> None:
    bedrock, stubber = client
    for _ in range(2):
        stubber.add_client_error(
            "converse_stream", "ThrottlingException", "Too many requests", 429, EXPECTED
        )
    _stub_stream(bedrock, stubber, _events("Prompt: ok"))
    sleeps: list[float] = []
    assert list(_chat(bedrock, sleeps).stream("be brief", ASK)) == ["Prompt: ok"]
    assert sleeps == [0.5, 1.0]


def test_a_refusal_is_one_error_and_not_retried(client: tuple[Any, Stubber]) -> None:
    bedrock, stubber = client
    stubber.add_client_error(
        "converse_stream", "AccessDeniedException", "no access to the model", 403, EXPECTED
    )
    with pytest.raises(LLMError, match="AccessDeniedException: no access to the model"):
        list(_chat(bedrock, []).stream("be brief", ASK))


def test_an_error_mid_stream_ends_the_reply(client: tuple[Any, Stubber]) -> None:
    bedrock, stubber = client

    def broken() -> Iterator[dict[str, Any]]:
        yield _delta("Prompt: a red")
        error = {"Error": {"Code": "throttlingException", "Message": "slow down"}}
        raise EventStreamError(error, "ConverseStream")

    _stub_stream(bedrock, stubber, [_delta("Prompt: a red")], broken())
    pieces = _chat(bedrock, []).stream("be brief", ASK)
    assert next(pieces) == "Prompt: a red"
    with pytest.raises(LLMError, match="mid-reply"):
        next(pieces)


def test_the_proxys_role_may_stream_from_the_model() -> None:
    """With AssistantLlm=bedrock, ConverseStream needs InvokeModelWithResponseStream on the
    foundation model, or on the inference profile that routes to it."""
    statements = iam.role_statements("ProxyFunction")
    needed = [
        f"arn:aws:bedrock:{iam.REGION}::foundation-model/{MODEL}",
        f"arn:aws:bedrock:us-west-2::foundation-model/{MODEL}",  # a cross-region profile's
        f"arn:aws:bedrock:{iam.REGION}:{iam.ACCOUNT}:inference-profile/us.{MODEL}",
    ]
    for resource in needed:
        assert any(
            fnmatch.fnmatchcase("bedrock:InvokeModelWithResponseStream", action)
            and fnmatch.fnmatchcase(resource, pattern)
            for action, pattern in statements
        ), resource
