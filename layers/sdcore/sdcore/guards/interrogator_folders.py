"""The two transformers folders interrogation loads, checked from their JSON configs, file list
and safetensors headers (nothing of them runs):

- captioner (interrogate `clip`): a BLIP captioning folder (`config.json` naming
  `BlipForConditionalGeneration`, its weights, a processor and a tokenizer) holding in `clip/` a
  CLIP model (`config.json` naming `CLIPModel`, weights, processor, tokenizer) that ranks the
  flavour lists against the picture;
- tagger (interrogate `deepdanbooru`): an image-classification folder (`config.json` naming a
  `...ForImageClassification` with `problem_type: multi_label_classification` and its tags as
  `id2label`, weights whose classifier gives one score per tag, an image processor);

and the one a removal (`POST /edits/remove`) may load:

- segmenter: a semantic segmentation folder (`config.json` naming a
  `...ForSemanticSegmentation` that transformers' `AutoModelForSemanticSegmentation` loads:
  SegFormer, BEiT, DPT, UperNet, MobileViT...; its classes as `id2label`, its weights, an image
  processor);

and the one a ControlNet depth module (`depth_midas`, `depth_anything`, ...) runs:

- preprocessor: a depth estimation folder (`config.json` naming a `...ForDepthEstimation` that
  transformers' `AutoModelForDepthEstimation` loads and whose output is relative inverse depth,
  larger nearer: DPT (MiDaS) or Depth Anything; its weights, an image processor)."""

from __future__ import annotations

from typing import Any, Protocol

from sdcore.guards.model_bytes import ModelFileError, Shapes

PROCESSORS = ("preprocessor_config.json", "processor_config.json")
TOKENIZERS = ("tokenizer.json", "vocab.txt", "vocab.json")


class TransformersFolder(Protocol):
    files: set[str]
    json: dict[str, Any]
    shapes: dict[str, Shapes]


def _path(sub: str, name: str) -> str:
    return name if sub == "." else f"{sub}/{name}"


def _model(folder: TransformersFolder, sub: str, architecture: str, what: str) -> Shapes:
    """The weights of the transformers model in `sub`, whose config names `architecture`."""
    config = folder.json.get(_path(sub, "config.json"))
    if not isinstance(config, dict):
        raise ModelFileError(f"no {_path(sub, 'config.json')}: not a transformers {what}")
    named = config.get("architectures") or []
    if architecture not in named:
        raise ModelFileError(
            f"{_path(sub, 'config.json')} names {named or 'no architecture'}, "
            f"{what} is {architecture!r}"
        )
    shapes = folder.shapes.get(sub)
    if not shapes:
        raise ModelFileError(f"no .safetensors weights beside {_path(sub, 'config.json')}")
    if not any(_path(sub, name) in folder.files for name in PROCESSORS):
        raise ModelFileError(f"{what} needs its image processor ({' or '.join(PROCESSORS)})")
    return shapes


def _rgb_patches(shapes: Shapes, prefix: str, what: str) -> None:
    key = f"{prefix}embeddings.patch_embedding.weight"
    shape = shapes.get(key)
    if shape is None or len(shape) != 4 or shape[1] != 3:
        raise ModelFileError(f"{what}: {key} is missing or does not take RGB")


def _tokenizer(folder: TransformersFolder, sub: str, what: str) -> None:
    if not any(_path(sub, name) in folder.files for name in TOKENIZERS):
        raise ModelFileError(f"{what} needs its tokenizer ({' or '.join(TOKENIZERS)})")


def check_captioner(folder: TransformersFolder) -> dict[str, Any]:
    """Refuse a folder that is not a BLIP captioner with its CLIP model in `clip/`."""
    blip = _model(folder, ".", "BlipForConditionalGeneration", "a captioner")
    _tokenizer(folder, ".", "a captioner")
    missing = [
        p for p in ("vision_model.", "text_decoder.") if not any(k.startswith(p) for k in blip)
    ]
    if missing:
        raise ModelFileError(f"the BLIP weights have no {', '.join(missing)} tensors")
    _rgb_patches(blip, "vision_model.", "the BLIP weights")
    clip = _model(folder, "clip", "CLIPModel", "a captioner's clip/ model")
    _tokenizer(folder, "clip", "a captioner's clip/ model")
    for key in ("visual_projection.weight", "text_projection.weight"):
        if key not in clip:
            raise ModelFileError(f"the clip/ weights have no {key}: not a CLIPModel")
    _rgb_patches(clip, "vision_model.", "the clip/ weights")
    return {"architecture": "BLIP", "ranking": "CLIP"}


def check_tagger(folder: TransformersFolder) -> dict[str, Any]:
    """Refuse a folder that is not a multi-label image classifier with its tags; the listing's
    details say how many tags it gives."""
    config = folder.json.get("config.json")
    if not isinstance(config, dict):
        raise ModelFileError("no config.json: not a transformers image classifier")
    named = [str(n) for n in config.get("architectures") or []]
    if not any(n.endswith("ForImageClassification") for n in named):
        raise ModelFileError(
            f"config.json names {named or 'no architecture'}, a tagger is an "
            "...ForImageClassification model"
        )
    if config.get("problem_type") != "multi_label_classification":
        raise ModelFileError(
            f"config.json's problem_type is {config.get('problem_type')!r}: a tagger is "
            "'multi_label_classification' (one score per tag)"
        )
    labels = config.get("id2label")
    if not isinstance(labels, dict) or not labels:
        raise ModelFileError("config.json has no id2label: a tagger's tags are its labels")
    if set(labels) != {str(i) for i in range(len(labels))}:
        raise ModelFileError("config.json's id2label keys are not 0..n-1")
    shapes = _model(folder, ".", named[0], "a tagger")
    heads = [s for k, s in shapes.items() if "classifier" in k and len(s) == 2]
    if not any(s[0] == len(labels) for s in heads):
        raise ModelFileError(
            f"no classifier weight gives {len(labels)} scores (one per id2label tag)"
        )
    return {"architecture": named[0], "tags": len(labels)}


def _labels(config: dict[str, Any], what: str) -> list[str]:
    labels = config.get("id2label")
    if not isinstance(labels, dict) or not labels:
        raise ModelFileError(f"config.json has no id2label: {what}")
    if set(labels) != {str(i) for i in range(len(labels))}:
        raise ModelFileError("config.json's id2label keys are not 0..n-1")
    return [str(labels[str(i)]) for i in range(len(labels))]


def check_segmenter(folder: TransformersFolder) -> dict[str, Any]:
    """Refuse a folder that is not a semantic segmentation model with its class labels; the
    listing's details give them (a removal's `target` is checked against them)."""
    config = folder.json.get("config.json")
    if not isinstance(config, dict):
        raise ModelFileError("no config.json: not a transformers segmentation model")
    named = [str(n) for n in config.get("architectures") or []]
    if not any(n.endswith("ForSemanticSegmentation") for n in named):
        raise ModelFileError(
            f"config.json names {named or 'no architecture'}, a segmenter is a "
            "...ForSemanticSegmentation model (AutoModelForSemanticSegmentation)"
        )
    labels = _labels(config, "a segmenter's classes are its labels")
    architecture = next(n for n in named if n.endswith("ForSemanticSegmentation"))
    _model(folder, ".", architecture, "a segmenter")
    return {"architecture": architecture, "labels": labels}


# depth estimators whose output is relative inverse depth (larger = nearer), as MiDaS maps are
DEPTH_ARCHITECTURES = ("DPTForDepthEstimation", "DepthAnythingForDepthEstimation")


def check_preprocessor(folder: TransformersFolder) -> dict[str, Any]:
    """Refuse a folder that is not a DPT or Depth Anything depth estimator; metric depth models
    (ZoeDepth, GLPN, ...) are refused too, their maps would be the other way round."""
    config = folder.json.get("config.json")
    if not isinstance(config, dict):
        raise ModelFileError("no config.json: not a transformers depth estimation model")
    named = [str(n) for n in config.get("architectures") or []]
    if not any(n.endswith("ForDepthEstimation") for n in named):
        raise ModelFileError(
            f"config.json names {named or 'no architecture'}, a preprocessor is a "
            "...ForDepthEstimation model (AutoModelForDepthEstimation)"
        )
    architecture = next((n for n in named if n in DEPTH_ARCHITECTURES), None)
    if architecture is None:
        raise ModelFileError(
            f"config.json names {named}: a preprocessor is one of {', '.join(DEPTH_ARCHITECTURES)}"
            " (relative depth, as the ControlNet depth modules give)"
        )
    _model(folder, ".", architecture, "a preprocessor")
    return {"kind": "depth", "architecture": architecture}


CHECKS = {
    "captioner": check_captioner,
    "tagger": check_tagger,
    "segmenter": check_segmenter,
    "preprocessor": check_preprocessor,
}
