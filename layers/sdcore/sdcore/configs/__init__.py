"""Model configs shipped with the service, one diffusers-style folder each (`sd15`, `sd2`,
`sd2-base`, `sdxl`, the demo's `demo-shapes` and the test models' `tiny-*`): the JSON configs of
the UNet, VAE, text encoders and scheduler, and the tokenizers (the CLIP BPE files are shipped
once and shared through relative links).

The engine builds a single-file checkpoint's pipeline from one; model verification holds a file
against the one it will load with. Data and paths only: torch-free, read by both.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def config_dir(name: str) -> Path:
    """The folder of config `name` (it may not exist)."""
    return ROOT / name


def checkpoint_configs() -> list[str]:
    """Names of the configs a checkpoint may be registered with (those with a UNet)."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "unet").is_dir())


def pipeline_config(name: str = "sd15") -> Path:
    """The folder of config `name`, which must describe a whole pipeline (model_index.json).

    Raises ValueError naming the configs that do."""
    path = ROOT / name
    if not (path / "model_index.json").is_file():
        known = sorted(p.name for p in ROOT.iterdir() if (p / "model_index.json").is_file())
        raise ValueError(f"no bundled config {name!r}; known: {', '.join(known)}")
    return path
