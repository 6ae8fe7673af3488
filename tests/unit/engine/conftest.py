"""The tiny random-weight SD model, written to disk once per session in both checkpoint formats
and loaded through the engine's real loading path."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: nothing may reach the hub

import pytest

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdlocal.demo import tiny

from .support import MODEL_HASH, MODEL_NAME, TinyFiles


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> TinyFiles:
    root = tmp_path_factory.mktemp("tiny-sd")
    return TinyFiles(
        single_file=tiny.save_single_file(root / "tiny-sd.safetensors"),
        diffusers_dir=tiny.save_diffusers(root / "diffusers"),
    )


def _engine(path: Path) -> DiffusersEngine:
    # cpu even where a GPU exists: these tests compare pixels and must not depend on the host
    engine = DiffusersEngine(path, MODEL_NAME, MODEL_HASH, config_dir=tiny.CONFIG_DIR, device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="session")
def engine(tiny_files: TinyFiles) -> DiffusersEngine:
    """Loaded from the single-file checkpoint, as a webui-style upload would be."""
    return _engine(tiny_files.single_file)


@pytest.fixture(scope="session")
def folder_engine(tiny_files: TinyFiles) -> DiffusersEngine:
    return _engine(tiny_files.diffusers_dir)
