"""Build what `sam build` would deploy, here: the shared layer and the zip functions (proxy,
admin, control), resolved for the Lambda runtime (python3.11 on Amazon Linux 2). The inference
function is a container image and needs a Docker engine: it is left out (the tests check its
Dockerfile instead).

    .venv/bin/python scripts/build_artifacts.py [--out .aws-sam/build]

Writes OUT/<LogicalId>/ for each, as `sam build` lays them out (the layer under python/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.aws_template import load_template  # noqa: E402


def zip_template() -> dict:
    """template.yaml without its container-image functions (JSON: intrinsics in long form)."""
    template = dict(load_template())
    template["Resources"] = {
        logical: resource
        for logical, resource in template["Resources"].items()
        if resource.get("Properties", {}).get("PackageType") != "Image"
    }
    return template


def build(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "template.json"
        path.write_text(json.dumps(zip_template()))
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "sam.sh"), "build", "--template-file", str(path),
             "--base-dir", str(ROOT), "--build-dir", str(out), "--region", "us-east-1"],
            check=True,
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".aws-sam" / "build")
    args = parser.parse_args()
    print(build(args.out.resolve()))


if __name__ == "__main__":
    main()
