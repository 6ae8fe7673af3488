"""The code's shape, checked: the import contracts in pyproject.toml hold (and would catch an
upward import or a circle), layer files stay readable, engine functions stay short, and the
Lambda layer carries only the shared package."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "layers" / "sdcore" / "sdcore"
ROOTS = {
    "layers/sdcore": "sdcore",
    "local": "sdlocal",
    "functions/proxy": "proxy_function",
    "functions/admin": "admin_function",
    "functions/control": "control_function",
    "functions/inference": "inference_function",
}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_FILE_LINES = 500
MAX_ENGINE_FUNCTION_LINES = 60


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts over the packages under `tree`."""
    path = ":".join(str(tree / root) for root in ROOTS)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": path},
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages' sources, to break on purpose."""
    tree = tmp_path_factory.mktemp("tree")
    skip = shutil.ignore_patterns("__pycache__", "*.json", "*.txt")  # configs' data
    for root, package in ROOTS.items():
        shutil.copytree(REPO / root / package, tree / root / package, ignore=skip)
    return tree


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the circle the layering work removed: a use case reaching into the API
        ("sdcore/usecases/notify.py", "from sdcore.api import responses", "One-way layers"),
        # the engine calling a use case
        ("sdcore/engine/model.py", "from sdcore.usecases import networks", "One-way layers"),
        # two use cases importing each other (submit imports tasks)
        ("sdcore/usecases/tasks.py", "from sdcore.usecases import submit", "No circles"),
        # the layer importing the local toolbox
        ("sdcore/adapters/local/fleet.py", "import sdlocal.stack", "One-way layers"),
        # torch where the zip functions would load it
        ("sdcore/usecases/control.py", "import torch", "torch and diffusers only"),
    ],
)
def test_the_contracts_catch_an_upward_import_or_a_circle(
    copy: Path, module: str, line: str, contract: str
) -> None:
    # Given one import the architecture forbids, hidden in a function as circles used to be
    root = next(r for r, package in ROOTS.items() if module.startswith(package + "/"))
    path = copy / root / module
    original = path.read_text()
    path.write_text(original + f"\n\ndef _sneaky() -> None:\n    {line}  # noqa\n")
    try:
        # When the import graph is checked
        result = _lint_imports(copy)
    finally:
        path.write_text(original)
    # Then the check fails, naming the contract
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def _layer_files() -> list[Path]:
    return sorted(p for p in LAYER.rglob("*.py") if "configs" not in p.parts)


def test_layer_files_are_short_or_say_why() -> None:
    long = []
    for path in _layer_files():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_FILE_LINES and "longer than" not in docstring:
            long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert long == []


def test_engine_functions_are_short() -> None:
    long = []
    for path in sorted((LAYER / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_ENGINE_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name}: {lines} lines")
    assert long == []


def test_the_layer_holds_only_the_shared_package() -> None:
    """What `sam build` puts in the layer: sdcore and its requirements, no toolbox."""
    top = {p.name for p in (REPO / "layers" / "sdcore").iterdir() if p.name != "__pycache__"}
    assert top == {"sdcore", "requirements.txt"}
    assert not (LAYER / "local").exists() and not (LAYER / "demo").exists()
    assert not any(LAYER.glob("cli.py")) and not any(LAYER.glob("client.py"))
