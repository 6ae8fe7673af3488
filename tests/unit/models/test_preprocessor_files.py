"""Preprocessor uploads (the ControlNet depth modules' model): a transformers depth estimation
folder (DPT, Depth Anything) is accepted, its kind and architecture in the listing's details;
another kind of folder, or a single file, is refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.modelfiles import ModelFileError, inspect_stream
from tests.depth_models import save_depth_model
from tests.interrogators import tar_folder
from tests.segmenters import save_segmenter


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_depth_model(tmp_path_factory.mktemp("preprocessor") / "dpt")


def test_a_dpt_folder_is_accepted(folder: Path) -> None:
    found = inspect_stream([tar_folder(folder)], ModelType.PREPROCESSOR)
    assert found.format is ModelFormat.DIFFUSERS
    assert found.details == {"kind": "depth", "architecture": "DPTForDepthEstimation"}


def test_other_folders_and_files_are_refused(folder: Path, tmp_path: Path) -> None:
    segmenter = save_segmenter(tmp_path / "segmenter")
    with pytest.raises(ModelFileError, match="a preprocessor is a ...ForDepthEstimation"):
        inspect_stream([tar_folder(segmenter)], ModelType.PREPROCESSOR)
    metric = shutil.copytree(folder, tmp_path / "metric")
    config = json.loads((metric / "config.json").read_text())
    config["architectures"] = ["ZoeDepthForDepthEstimation"]
    (metric / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="a preprocessor is one of DPTForDepthEstimation"):
        inspect_stream([tar_folder(metric)], ModelType.PREPROCESSOR)
    bare = shutil.copytree(folder, tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFileError, match="needs its image processor"):
        inspect_stream([tar_folder(bare)], ModelType.PREPROCESSOR)
    with pytest.raises(ModelFileError, match="upload it as an uncompressed tar"):
        inspect_stream([(folder / "model.safetensors").read_bytes()], ModelType.PREPROCESSOR)
