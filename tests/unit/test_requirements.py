"""The pins are what the tests run: each `name==version` in the requirements files is the
version installed here (a local build tag such as +cpu matches, as pip matches it), and the
Lambda layer pins what the local stack pins. A venv that drifted from the files (a package
installed by hand, a resolver that quietly moved a pin) fails here instead of on a fresh
machine."""

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
FILES = ("requirements.txt", "requirements-dev.txt", "layers/sdcore/requirements.txt")
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)")


def pins(relative: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / relative).read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


@pytest.mark.parametrize("relative", FILES)
def test_each_pin_is_the_installed_version(relative: str) -> None:
    wrong = {
        name: (version, metadata.version(name))
        for name, version in pins(relative).items()
        if not SpecifierSet(f"=={version}").contains(metadata.version(name))
    }
    assert not wrong, f"{relative}: pinned vs installed {wrong}"


def test_the_layer_pins_what_the_local_stack_pins() -> None:
    local, layer = pins("requirements.txt"), pins("layers/sdcore/requirements.txt")
    differ = {
        name: (local[name], v) for name, v in layer.items() if name in local and local[name] != v
    }
    assert not differ, differ
