from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdcore import composition


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Handlers on the local backend, state in tmp_path."""
    monkeypatch.setenv("SD_BACKEND", "local")
    monkeypatch.setenv("SD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SD_SYNC_TIMEOUT", "0")
    composition.reset()
    yield tmp_path
    composition.reset()
