from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdcore import composition
from sdcore.usecases.auth import bootstrap_local
from tests.functional import events


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Handlers on the local backend, state in tmp_path."""
    monkeypatch.setenv("SD_BACKEND", "local")
    monkeypatch.setenv("SD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SD_SYNC_TIMEOUT", "0")
    composition.reset()
    creds = bootstrap_local(composition.get_services(), tmp_path)
    assert creds is not None
    monkeypatch.setattr(events, "DEFAULT_HEADERS", {"Authorization": f"Bearer {creds['user_key']}"})
    monkeypatch.setattr(events, "ADMIN_HEADERS", {"Authorization": f"Bearer {creds['admin_key']}"})
    yield tmp_path
    composition.reset()
