"""Segmenter uploads: a transformers semantic segmentation folder is accepted, its class labels
in the listing's details (a removal's `target` is checked against them); another kind of folder
or one without its labels is refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.modelfiles import ModelFileError, inspect_stream
from tests.interrogators import save_tagger, tar_folder
from tests.segmenters import LABELS, save_segmenter


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_segmenter(tmp_path_factory.mktemp("segmenter") / "segformer")


def test_a_segformer_folder_is_accepted_with_its_labels(folder: Path) -> None:
    found = inspect_stream([tar_folder(folder)], ModelType.SEGMENTER)
    assert found.format is ModelFormat.DIFFUSERS
    assert found.details == {"architecture": "SegformerForSemanticSegmentation", "labels": LABELS}


def test_other_folders_and_files_are_refused(folder: Path, tmp_path: Path) -> None:
    tagger = save_tagger(tmp_path / "tagger")
    with pytest.raises(ModelFileError, match="a segmenter is a ...ForSemanticSegmentation"):
        inspect_stream([tar_folder(tagger)], ModelType.SEGMENTER)
    unlabelled = shutil.copytree(folder, tmp_path / "unlabelled")
    config = json.loads((unlabelled / "config.json").read_text())
    config["id2label"] = {"0": "a", "2": "b"}
    (unlabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="id2label keys are not 0..n-1"):
        inspect_stream([tar_folder(unlabelled)], ModelType.SEGMENTER)
    with pytest.raises(ModelFileError, match="upload it as an uncompressed tar"):
        inspect_stream([(folder / "model.safetensors").read_bytes()], ModelType.SEGMENTER)
