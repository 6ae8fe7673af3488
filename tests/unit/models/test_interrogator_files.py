"""Captioner and tagger uploads: the transformers folders the engine loads are accepted (with
what the listing shows of them); a folder of another kind, or missing a part, is refused with
the reason."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.modelfiles import ModelFileError, inspect_stream
from tests import model_files as mf
from tests.interrogators import TAG_SCORES, save_captioner, save_tagger, tar_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interrogator-files")
    return {"captioner": save_captioner(root / "captioner"), "tagger": save_tagger(root / "tagger")}


def _inspect(folder: Path, kind: ModelType):  # type: ignore[no-untyped-def]
    return inspect_stream([tar_folder(folder)], kind)


def test_the_two_folders_are_accepted(folders: dict[str, Path]) -> None:
    captioner = _inspect(folders["captioner"], ModelType.CAPTIONER)
    assert captioner.format is ModelFormat.DIFFUSERS
    assert captioner.details == {"architecture": "BLIP", "ranking": "CLIP"}
    tagger = _inspect(folders["tagger"], ModelType.TAGGER)
    assert tagger.details == {"architecture": "ViTForImageClassification", "tags": len(TAG_SCORES)}


def _edit_json(name: str, **changes: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / name).read_text())
        config.update(changes)
        (folder / name).write_text(json.dumps(config))

    return edit


@pytest.mark.parametrize(
    ("source", "kind", "change", "reason"),
    [
        ("tagger", "captioner", None, "names ['ViTForImageClassification'], a captioner is"),
        ("captioner", "tagger", None, "a tagger is an ...ForImageClassification model"),
        ("captioner", "captioner", lambda f: shutil.rmtree(f / "clip"), "no clip/config.json"),
        ("captioner", "captioner", lambda f: (f / "clip" / "tokenizer.json").unlink(),
         "clip/ model needs its tokenizer"),
        ("captioner", "captioner", lambda f: (f / "pytorch_model.bin").write_bytes(b"x"),
         "pytorch_model.bin is a pickle file"),
        ("tagger", "tagger", _edit_json("config.json", problem_type="single_label_classification"),
         "problem_type is 'single_label_classification'"),
        ("tagger", "tagger", _edit_json("config.json", id2label={"0": "a", "1": "b"}),
         "no classifier weight gives 2 scores"),
        ("tagger", "tagger", lambda f: (f / "preprocessor_config.json").unlink(),
         "needs its image processor"),
    ],
)  # fmt: skip
def test_a_wrong_folder_is_refused_with_the_reason(
    folders: dict[str, Path],
    tmp_path: Path,
    source: str,
    kind: str,
    change: Callable[[Path], None] | None,
    reason: str,
) -> None:
    folder = shutil.copytree(folders[source], tmp_path / source)
    if change is not None:
        change(folder)
    with pytest.raises(ModelFileError) as err:
        _inspect(folder, ModelType(kind))
    assert reason in str(err.value)


def test_a_single_file_is_refused() -> None:
    with pytest.raises(ModelFileError, match="a tagger is a transformers folder"):
        inspect_stream([mf.safetensors({"classifier.weight": [5, 16]})], ModelType.TAGGER)
