"""The inference images cannot be built here (no Docker engine), so their recipes are checked:
every module the inference entry points import (Lambda's handler and SageMaker's `serve`) must
come from what each Dockerfile copies or installs (its requirements and their dependencies), the
build context keeps everything else out, and the entrypoint script both builds share sends
`serve` to the SageMaker server and anything else to the Lambda runtime.

Two builds of one code: `Dockerfile` (CPU, the Lambda base image) and `Dockerfile.cuda` (GPU, for
SageMaker)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
INFERENCE = REPO / "functions" / "inference"
DOCKERFILE = INFERENCE / "Dockerfile"
CUDA_DOCKERFILE = INFERENCE / "Dockerfile.cuda"
DOCKERFILES = [DOCKERFILE, CUDA_DOCKERFILE]
REQUIREMENTS = INFERENCE / "requirements.txt"
ENTRYPOINT = INFERENCE / "entrypoint.sh"
# torch's wheel index per build: CPU for Lambda, CUDA 12 for SageMaker's GPU instances
TORCH_INDEX = {DOCKERFILE: "/whl/cpu", CUDA_DOCKERFILE: "/whl/cu12"}
# what runs when the image is started without arguments
DEFAULT_CMD = {DOCKERFILE: ["inference_function.app.lambda_handler"], CUDA_DOCKERFILE: ["serve"]}
# the switches that keep the engine off the Hugging Face hub and its caches in writable /tmp
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": "/tmp/hf",
    "SD_MODEL_CACHE_DIR": "/tmp/sd-models",
}

IMPORTED = """
import json, sys
sys.path[:0] = ["functions/inference", "layers/sdcore"]
import inference_function.app
import inference_function.serve
print(json.dumps({name: getattr(m, "__file__", None) for name, m in sys.modules.items()
                  if "." not in name}))
"""

each_build = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined and
    comment lines dropped (as Docker reads them)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
            pending = ""
    return out


def copied(dockerfile: Path) -> list[str]:
    """The repository paths the Dockerfile COPYs into the image."""
    return [args.split()[0] for keyword, args in instructions(dockerfile) if keyword == "COPY"]


def destination(dockerfile: Path, source: str) -> str:
    [args] = [a for k, a in instructions(dockerfile) if k == "COPY" and a.split()[0] == source]
    return args.split()[-1]


def exec_form(dockerfile: Path, keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be in exec (JSON) form: a shell form would run
    under `/bin/sh -c` and not receive SIGTERM."""
    [*_, args] = [a for k, a in instructions(dockerfile) if k == keyword]
    value = json.loads(args)
    assert isinstance(value, list), f"{keyword} {args}"
    return value


def env(dockerfile: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, args in instructions(dockerfile):
        if keyword == "ENV":
            for pair in args.split():
                name, _, value = pair.partition("=")
                found[name] = value
    return found


@cache
def installed() -> set[str]:
    """The distributions the images install: their requirements (torch included) and everything
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


@cache
def imported() -> dict[str, str | None]:
    """Top-level module -> its file, for everything both entry points import."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


@each_build
def test_every_module_the_inference_handler_imports_is_in_the_image(dockerfile: Path) -> None:
    sources = [str(REPO / path) for path in copied(dockerfile)]
    distributions = metadata.packages_distributions()
    image = installed()
    missing = []
    for name, path in sorted(imported().items()):
        if name in sys.stdlib_module_names or name.startswith("_") or path is None:
            continue
        if "site-packages" in path:
            if not {canonicalize_name(d) for d in distributions.get(name, [])} & image:
                missing.append(f"{name} (from {distributions.get(name)}: not installed)")
        elif not any(path.startswith(source) for source in sources):
            missing.append(f"{name} ({path}: not copied)")
    assert "inference_function" in imported() and "sdcore" in imported()
    assert missing == []


@each_build
def test_the_dockerfile_copies_the_shared_package_and_the_function_only(dockerfile: Path) -> None:
    assert sorted(copied(dockerfile)) == [
        "functions/inference/entrypoint.sh",
        "functions/inference/inference_function",
        "functions/inference/requirements.txt",
        "layers/sdcore/sdcore",
    ]
    runs = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "RUN")
    # torch from the build's own index first; the requirements (torch==2.13.0 among them) after
    torch = re.search(r"pip install --no-cache-dir torch==2\.13\.0 --index-url (\S+)", runs)
    assert torch is not None and TORCH_INDEX[dockerfile] in torch.group(1), runs
    requirements = destination(dockerfile, "functions/inference/requirements.txt")
    assert f"pip install --no-cache-dir -r {requirements}" in runs
    assert runs.index("torch==2.13.0") < runs.index(f" -r {requirements}")


@each_build
def test_the_entrypoint_script_is_copied_and_is_the_entrypoint(dockerfile: Path) -> None:
    script = destination(dockerfile, "functions/inference/entrypoint.sh")
    # run by sh: the script's mode in a checkout (or an archive of it) does not matter
    assert exec_form(dockerfile, "ENTRYPOINT") == ["/bin/sh", script]
    assert exec_form(dockerfile, "CMD") == DEFAULT_CMD[dockerfile]
    # `python -m inference_function.serve` imports from the working directory: the packages are
    # there (the Lambda base image's WORKDIR is ${LAMBDA_TASK_ROOT}, /var/task)
    workdir = dict(instructions(dockerfile)).get("WORKDIR", "${LAMBDA_TASK_ROOT}")
    for package in ("layers/sdcore/sdcore", "functions/inference/inference_function"):
        assert destination(dockerfile, package) == f"{workdir}/{package.rsplit('/', 1)[-1]}"


@each_build
def test_both_builds_run_offline_with_the_same_switches(dockerfile: Path) -> None:
    assert env(dockerfile).items() >= OFFLINE_ENV.items()


@each_build
def test_the_build_context_keeps_everything_else_out(dockerfile: Path) -> None:
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

    for path in copied(dockerfile):
        assert not ignored(path), path
    for path in (".venv/bin/python", ".git/HEAD", "local-data/state.db", "models/x.safetensors",
                 "tests/conftest.py", "local/sdlocal/stack.py"):  # fmt: skip
        assert ignored(path), path


@pytest.mark.parametrize(
    ("args", "runs"),
    [
        (["serve"], "python -m inference_function.serve"),  # SageMaker: `docker run <image> serve`
        (["serve", "--x"], "python -m inference_function.serve --x"),
        (DEFAULT_CMD[DOCKERFILE],  # Lambda: the handler
         "/lambda-entrypoint.sh inference_function.app.lambda_handler"),
        (DEFAULT_CMD[CUDA_DOCKERFILE], "python -m inference_function.serve"),
        ([], "/lambda-entrypoint.sh"),
    ],
)  # fmt: skip
def test_the_entrypoint_sends_serve_to_sagemakers_server_and_the_rest_to_lambda(
    args: list[str], runs: str, tmp_path: Path
) -> None:
    # Given the script with its two targets replaced by stubs that say how they were called
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (stub / "lambda-entrypoint.sh").write_text('#!/bin/sh\necho "/lambda-entrypoint.sh $*"\n')
    for path in stub.iterdir():
        path.chmod(0o755)
    script = tmp_path / "entrypoint.sh"
    text = ENTRYPOINT.read_text()
    assert text.count("exec /lambda-entrypoint.sh ") == 1
    script.write_text(
        text.replace("exec /lambda-entrypoint.sh ", f"exec {stub}/lambda-entrypoint.sh ")
    )

    # When the container starts with `args`
    done = subprocess.run(
        ["/bin/sh", str(script), *args],
        env={**os.environ, "PATH": f"{stub}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    # Then the one target runs, with the arguments
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == runs
