"""Checkpoint titles as the webui writes them ("name [hash]", "name.safetensors")."""

from __future__ import annotations

import re

_TITLE = re.compile(r"^(?P<name>.+?)(?:\.safetensors)?(?: \[[0-9a-f]{8,64}\])?$")


def model_name(title: str | None) -> str | None:
    """A webui checkpoint title ("name [hash]", "name.safetensors") -> our model name."""
    if not title:
        return None
    match = _TITLE.match(title.strip())
    return match.group("name") if match else title


def checkpoint_title(name: str, sha256: str) -> str:
    """The webui's title of a checkpoint: its name and the first 10 hex digits of its hash."""
    return f"{name} [{sha256[:10]}]"
