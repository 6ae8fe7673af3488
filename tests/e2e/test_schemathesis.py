"""Property-based API testing: schemathesis generates requests from /openapi.json against the
local stack (admin key, so every route is reachable) and no answer may be a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow
# The webui generation routes wait for their images like the webui; with fuzzed sizes and step
# counts that is minutes on a CPU. They are driven by the webuiapi tests instead.
EXCLUDE = r"^/sdapi/v1/(txt2img|img2img|extra-.*)$"


def test_no_server_errors(tmp_path: Path) -> None:
    stack = RunningStack(
        tmp_path,
        SD_SYNC_TIMEOUT="0.2",  # sync generation answers 202 at once instead of waiting
        SD_MAX_QUEUED_PER_USER="100000",
    ).start()
    try:
        schemathesis = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{stack.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "5",
                "--exclude-path-regex",
                EXCLUDE,
                "-H",
                f"Authorization: Bearer {stack.credentials['admin_key']}",
                "--workers",
                "1",
                "--seed",
                "1",
                "--no-color",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=420,
            cwd=tmp_path,
        )
    finally:
        stack.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
