"""SD_LLM and its settings build the assistant's chat model (nothing is called at build)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sdcore.adapters.llm.bedrock import BedrockChat
from sdcore.adapters.llm.openai_compat import OpenAICompatibleChat
from sdcore.composition import build_services
from sdcore.ports.assistant import ChatMessage
from sdcore.settings import Settings
from tests import iam
from tests.aws_template import load_template
from tests.openai_server import Reply, fake_openai


def _chat(tmp_path: Path, **env: str) -> object:
    settings = Settings.from_env({"SD_DATA_DIR": str(tmp_path), **env})
    return build_services(settings).chat


def test_each_sd_llm_builds_its_model(tmp_path: Path) -> None:
    assert _chat(tmp_path) is None  # off by default: the offline assistant
    openai = {"SD_LLM": "openai", "SD_LLM_MODEL": "llama3.2", "SD_LLM_TIMEOUT": "5",
              "SD_LLM_BASE_URL": "http://127.0.0.1:11434/v1", "SD_LLM_API_KEY": "k"}  # fmt: skip
    assert isinstance(_chat(tmp_path, **openai), OpenAICompatibleChat)
    bedrock = {"SD_LLM": "bedrock", "SD_LLM_MODEL": "amazon.nova-micro-v1:0", "SD_LLM_RETRIES": "1"}
    assert isinstance(_chat(tmp_path, **bedrock), BedrockChat)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"SD_LLM": "bedrock"}, "SD_LLM_MODEL"),
        ({"SD_LLM": "openai", "SD_LLM_MODEL": "m"}, "SD_LLM_BASE_URL"),
    ],
)
def test_a_model_without_its_settings_is_refused(
    tmp_path: Path, env: dict[str, str], missing: str
) -> None:
    with pytest.raises(ValueError, match=missing):
        _chat(tmp_path, **env)


def test_the_key_may_come_from_a_secret_read_when_first_needed(tmp_path: Path) -> None:
    with mock_aws(), fake_openai() as server:
        env = {"SD_LLM": "openai", "SD_LLM_MODEL": "m", "SD_LLM_BASE_URL": server.base_url,
               "SD_LLM_API_KEY_SECRET": "sd-llm-key"}  # fmt: skip
        chat = _chat(tmp_path, **env)  # built before the secret exists: nothing read yet
        assert isinstance(chat, OpenAICompatibleChat)
        boto3.client("secretsmanager").create_secret(Name="sd-llm-key", SecretString="sk-kept\n")
        server.replies.put(Reply(["Prompt: a cat"]))
        assert list(chat.stream("", [ChatMessage("user", "猫")])) == ["Prompt: a cat"]
        assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-kept"
        secret = boto3.client("secretsmanager").describe_secret(SecretId="sd-llm-key")
    # the proxy's role may read it: the template's pattern, with this secret's name, matches
    # the ARN Secrets Manager gave it (a name's ARN ends in "-" and six random characters)
    pattern = _secret_statement()["Resource"]["Fn::Sub"]
    for name, value in (("AWS::Partition", "aws"), ("AWS::Region", iam.REGION),
                        ("AWS::AccountId", secret["ARN"].split(":")[4]),
                        ("AssistantApiKeySecret", "sd-llm-key")):  # fmt: skip
        pattern = pattern.replace("${" + name + "}", value)
    assert fnmatch.fnmatchcase(secret["ARN"], pattern), (secret["ARN"], pattern)
    assert _secret_statement()["Action"] == "secretsmanager:GetSecretValue"


def _secret_statement() -> dict[str, Any]:
    policies = load_template()["Resources"]["ProxyFunction"]["Properties"]["Policies"]
    for policy in policies:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            branches = statement.get("Fn::If", [None, {}])
            if branches[1].get("Sid") == "AssistantApiKey":
                return dict(branches[1])
    raise AssertionError("no AssistantApiKey statement in ProxyFunction's policies")
