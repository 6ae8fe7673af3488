"""The tiny demo checkpoint writers and the bundled single-file config folders."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from scripts import make_clip_tokenizer
from sdcore.configs import ROOT as CONFIGS_DIR
from sdcore.configs import pipeline_config
from sdcore.engine.schedulers import make_scheduler
from sdcore.webui.samplers import SAMPLERS
from sdlocal.demo import tiny

from .support import TinyFiles

SD15 = CONFIGS_DIR / "sd15"


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


# --- the tiny checkpoint ---------------------------------------------------------------------


def test_single_file_loads_back_with_every_tensor_equal(tiny_files: TinyFiles) -> None:
    loaded = StableDiffusionPipeline.from_single_file(
        str(tiny_files.single_file), config=str(tiny.CONFIG_DIR), local_files_only=True
    )
    original = tiny.build_pipeline(seed=0)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(loaded, name), getattr(original, name))


@pytest.mark.parametrize(
    ("channels", "down", "layers"),
    [
        # SD 1.x's own layout (4 levels x 2 layers) at toy width
        ((32, 32, 64, 64), ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), 2),
        # two levels, three layers: indices the upstream reverse script gets wrong
        ((32, 64), ("DownBlock2D", "CrossAttnDownBlock2D"), 3),
    ],
)
def test_ldm_unet_layout_round_trips_for_other_shapes(channels, down, layers) -> None:
    up = tuple(reversed([d.replace("Down", "Up") for d in down]))
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers,
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    ldm = {
        tiny.UNET_PREFIX + k: v for k, v in tiny.unet_to_ldm(unet.state_dict(), unet.config).items()
    }
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    state = unet.state_dict()
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("levels", [2, 4])
def test_ldm_vae_layout_round_trips(levels: int) -> None:
    vae = AutoencoderKL(
        block_out_channels=(32,) * levels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1,
    )
    ldm = {tiny.VAE_PREFIX + k: v for k, v in tiny.vae_to_ldm(vae.state_dict(), vae.config).items()}
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as in LDM
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    state = vae.state_dict()
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_single_file_uses_the_webui_key_layout(tiny_files: TinyFiles) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_files.single_file), "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert all(k.split(".")[0] in {"model", "first_stage_model", "cond_stage_model"} for k in keys)


def test_diffusers_tar_is_relative_and_reproducible(tmp_path: Path) -> None:
    a = tiny.save_diffusers_tar(tmp_path / "a")
    b = tiny.save_diffusers_tar(tmp_path / "b.tar")
    assert a.name == "tiny-sd.tar" and b.name == "b.tar"
    with tarfile.open(a) as tar:
        names = tar.getnames()
    assert "model_index.json" in names and "unet/config.json" in names
    assert not any(n.startswith(("/", "..")) for n in names)
    assert tiny.describe(a)["sha256"] == tiny.describe(b)["sha256"]


def test_cli_prints_path_size_and_sha256(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny.main(["--out", str(tmp_path), "--format", "single-file"])
    out = json.loads(capsys.readouterr().out)
    path = Path(out["path"])
    assert path == tmp_path / "tiny-sd.safetensors"
    assert out["size"] == path.stat().st_size and len(out["sha256"]) == 64


# --- bundled configs -------------------------------------------------------------------------


def test_sd15_tokenizer_is_clip_vit_l14_and_loads_offline() -> None:
    tok = CLIPTokenizer.from_pretrained(SD15, subfolder="tokenizer", local_files_only=True)
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    padded = tok("a red circle", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407


def test_sd15_models_instantiate_from_config_on_the_meta_device() -> None:
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(SD15, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15, subfolder="text_encoder"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]  # the published SD 1.5 sizes
    assert next(unet.parameters()).device == torch.device("meta")
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == 512


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# config folder -> the architecture whose layout it has
LAYOUTS = {
    "sd15": "sd15",
    "tiny-sd": "sd15",
    "demo-shapes": "sd15",
    "sd2": "sd15",
    "sd2-base": "sd15",
    "tiny-sd2": "sd15",
    "sdxl": "sdxl",
    "tiny-sdxl": "sdxl",
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_config_folders_have_the_same_layout(name: str) -> None:
    folder = pipeline_config(name)
    assert _files(folder) == _files(CONFIGS_DIR / LAYOUTS[name])
    with pytest.raises(ValueError):
        pipeline_config("sd3")


def _scheduler_configs() -> dict[str, str]:
    """Each distinct scheduler config of the shipped folders, by the first folder that has it
    (the tiny configs share their full-size kin's)."""
    found: dict[str, str] = {}
    for name in sorted(LAYOUTS):
        text = (pipeline_config(name) / "scheduler" / "scheduler_config.json").read_text()
        found.setdefault(text, name)
    return {name: text for text, name in found.items()}


@pytest.mark.parametrize("name", sorted(_scheduler_configs()))
def test_every_sampler_and_schedule_builds_on_each_scheduler_config(name: str) -> None:
    """Every sampler with every schedule family on the SD 1.x config; on the others (v
    prediction, other betas), every sampler with its own and one borrowed schedule: what a
    config changes is the sigma table, not how a schedule is placed on it."""
    config = json.loads(_scheduler_configs()[name])
    every = ("Automatic", "Karras", "Exponential", "Beta", "SGM Uniform")
    schedules = every if name == "demo-shapes" else ("Automatic", "Karras")
    for sampler in SAMPLERS:
        for schedule in schedules:
            scheduler = make_scheduler(sampler, schedule, config, [0])
            scheduler.set_timesteps(4)


def test_every_shipped_config_is_tested() -> None:
    shipped = {p.name for p in CONFIGS_DIR.iterdir() if (p / "model_index.json").is_file()}
    assert shipped == set(LAYOUTS)


@pytest.mark.parametrize(
    ("name", "counts", "side", "prediction"),
    [
        # the published parameter counts: UNet, VAE, text encoder(s)
        ("sd2", [865_910_724, 83_653_863, 340_387_840], 768, "v_prediction"),
        ("sd2-base", [865_910_724, 83_653_863, 340_387_840], 512, "epsilon"),
        ("sdxl", [2_567_463_684, 83_653_863, 123_060_480, 694_659_840], 1024, "epsilon"),
    ],
)
def test_sd2_and_sdxl_configs_build_the_published_models(
    name: str, counts: list[int], side: int, prediction: str
) -> None:
    folder = CONFIGS_DIR / name
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(folder, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        models: list[torch.nn.Module] = [unet, vae]
        models.append(
            CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
        )
        if name == "sdxl":
            config = CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
            models.append(CLIPTextModelWithProjection(config))
    assert [sum(p.numel() for p in m.parameters()) for m in models] == counts
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == side
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == prediction


@pytest.mark.parametrize(
    ("name", "sub", "pad"),
    [("sd2", "tokenizer", 0), ("sdxl", "tokenizer", 49407), ("sdxl", "tokenizer_2", 0)],
)
def test_openclip_tokenizers_pad_with_bang_clip_l_with_end(name: str, sub: str, pad: int) -> None:
    tok = CLIPTokenizer.from_pretrained(CONFIGS_DIR / name, subfolder=sub, local_files_only=True)
    assert len(tok) == 49408 and tok.pad_token_id == pad  # "!" is 0, the webui's OpenCLIP pad
    assert tok("a red circle").input_ids == [49406, 320, 736, 7117, 49407]


def test_tiny_tokenizer_files_are_what_the_script_generates(tmp_path: Path) -> None:
    encoder, merges = make_clip_tokenizer.build(
        [tuple(m.split()) for m in make_clip_tokenizer.TINY_MERGES]
    )
    make_clip_tokenizer.write(tmp_path, encoder, merges)
    committed = tiny.CONFIG_DIR / "tokenizer"
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
