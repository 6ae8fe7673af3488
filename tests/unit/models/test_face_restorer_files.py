"""Face restorer uploads: GFPGAN and CodeFormer layouts are accepted with their architecture
recorded; another layout is refused naming its first tensors and the missing ones."""

from __future__ import annotations

import pytest

from sdcore.domain.models import ModelType
from sdcore.guards.modelfiles import ModelFileError, inspect_stream
from tests import model_files as mf


def _check(shapes: mf.Shapes):  # type: ignore[no-untyped-def]
    return inspect_stream([mf.safetensors(shapes)], ModelType.FACE_RESTORER, None)


def test_a_whole_gfpgan_file_is_accepted_and_recorded() -> None:
    assert _check(mf.face_restorer_shapes()).details == {"architecture": "GFPGAN"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("drop", "missing toRGB.0.bias"),
        ("add", "unexpected toRGB.9.weight"),
        ("mlp", "missing stylegan_decoder.style_mlp.3.bias"),
    ],
)
def test_a_partial_layout_is_refused_naming_the_tensors(change: str, named: str) -> None:
    shapes = mf.face_restorer_shapes()
    if change == "drop":
        del shapes["toRGB.0.bias"]
    elif change == "add":
        shapes["toRGB.9.weight"] = [3, 8, 1, 1]
    else:
        shapes["stylegan_decoder.style_mlp.3.weight"] = [16, 16]
    with pytest.raises(ModelFileError, match=named.replace(".", r"\.")):
        _check(shapes)


def test_another_layout_is_refused_naming_the_keys() -> None:
    shapes = {"net.first.weight": [8, 3, 3, 3], "net.last.weight": [3, 8, 3, 3]}
    with pytest.raises(ModelFileError) as refused:
        _check(shapes)
    text = str(refused.value)
    assert "unexpected net.first.weight, net.last.weight" in text
    assert "missing conv_body_first.weight" in text
    # a face restorer registered as an upscaler is refused as what it is
    with pytest.raises(ModelFileError, match="looks like a face_restorer, not an upscaler"):
        inspect_stream([mf.safetensors(mf.face_restorer_shapes())], ModelType.UPSCALER, None)
