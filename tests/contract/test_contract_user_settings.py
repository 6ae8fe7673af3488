"""A user's webui settings and prompt styles round-trip through both user stores, and read back
typed as the settings' defaults (DynamoDB gives 1 back for 1.0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcore.adapters.aws import DynamoDBUserStore
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.stores import SqliteUserStore
from sdcore.domain.models import PromptStyle, User, UserChanges
from sdcore.ports import UserStore
from sdcore.webui.options import effective


@pytest.fixture(params=["local", "aws"])
def users(request: pytest.FixtureRequest, tmp_path: Path) -> UserStore:
    if request.param == "local":
        return SqliteUserStore(Database(tmp_path / "state.db"))
    stack = request.getfixturevalue("aws_stack")
    return DynamoDBUserStore(stack.client("dynamodb"), stack.names["UsersTable"])


def test_settings_and_styles_round_trip(users: UserStore) -> None:
    users.create(User(name="alice", created_at=1.0))
    options = {"eta_ancestral": 1.0, "s_noise": 0.95, "send_seed": False, "sd_vae": "",
               "eta_noise_seed_delta": 31337, "quicksettings_list": ["sd_vae"]}  # fmt: skip
    styles = [PromptStyle(name="cinema", prompt="{prompt}, grain"), PromptStyle(name="empty")]
    users.update("alice", UserChanges(options=options, styles=styles))
    user = users.get("alice")
    assert user.styles == styles
    values = effective(user.options)
    assert {k: values[k] for k in options} == options
    assert isinstance(values["eta_ancestral"], float)
