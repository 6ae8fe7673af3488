"""The inference image cannot be built here (no Docker engine), so its recipe is checked: every
module the inference handler imports must come from what the Dockerfile copies or installs
(its requirements and their dependencies), and the build context keeps everything else out."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "functions" / "inference" / "Dockerfile"
REQUIREMENTS = REPO / "functions" / "inference" / "requirements.txt"

IMPORTED = """
import json, sys
sys.path[:0] = ["functions/inference", "layers/sdcore"]
import inference_function.app
print(json.dumps({name: getattr(m, "__file__", None) for name, m in sys.modules.items()
                  if "." not in name}))
"""


def copied() -> list[str]:
    """The repository paths the Dockerfile COPYs into the image."""
    return [m.group(1) for m in re.finditer(r"^COPY\s+(\S+)\s+\S+", DOCKERFILE.read_text(), re.M)]


def installed() -> set[str]:
    """The distributions the image installs: its requirements (torch included) and everything
    they need, as resolved in this environment."""
    env = {**default_environment(), "extra": ""}
    todo = [Requirement(line) for line in REQUIREMENTS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(req.name) or []]
    return seen


def test_every_module_the_inference_handler_imports_is_in_the_image() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    sources = [str(REPO / path) for path in copied()]
    distributions = metadata.packages_distributions()
    image = installed()
    missing = []
    for name, path in sorted(modules.items()):
        if name in sys.stdlib_module_names or name.startswith("_") or path is None:
            continue
        if "site-packages" in path:
            if not {canonicalize_name(d) for d in distributions.get(name, [])} & image:
                missing.append(f"{name} (from {distributions.get(name)}: not installed)")
        elif not any(path.startswith(source) for source in sources):
            missing.append(f"{name} ({path}: not copied)")
    assert missing == []


def test_the_dockerfile_copies_the_shared_package_and_the_function_only() -> None:
    assert sorted(copied()) == [
        "functions/inference/inference_function",
        "functions/inference/requirements.txt",
        "layers/sdcore/sdcore",
    ]
    assert "pip install --no-cache-dir torch==2.13.0" in DOCKERFILE.read_text()


def test_the_build_context_keeps_everything_else_out() -> None:
    """.dockerignore: the copied paths are in the context, environments, state and weights are
    not (Docker's rules: the last matching pattern wins, `!` re-includes)."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                verdict = not negate
        return verdict

    for path in copied():
        assert not ignored(path), path
    for path in (".venv/bin/python", ".git/HEAD", "local-data/state.db", "models/x.safetensors",
                 "tests/conftest.py", "local/sdlocal/stack.py"):  # fmt: skip
        assert ignored(path), path
