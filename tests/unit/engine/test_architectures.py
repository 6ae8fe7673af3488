"""SD 2.x and SDXL checkpoints: single files told apart by their keys, loaded with the shipped
configs, conditioned as the webui conditions them, and run through every task kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdcore.engine import checkpoints as checkpoints_module
from sdcore.engine import model as model_module
from sdcore.engine.checkpoints import single_file_architecture, uses_v_prediction
from sdcore.engine.conditioning import XLPromptEncoder
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.noise import SD1_LATENT_RGB, SDXL_LATENT_RGB, image_noise
from sdcore.engine.schedulers import make_scheduler
from sdcore.ports import EngineInputs, NetworkFile
from sdlocal.demo import tiny

from .support import MODEL_HASH, Steps, gen

CONFIGS = tiny.CONFIG_DIR.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("architectures")
    return {
        name: tiny.save_single_file(root, seed=0, name=name)
        for name in ("tiny-sd", "tiny-sd2", "tiny-sdxl")
    }


def _load(path: Path, config: str | None) -> DiffusersEngine:
    config_dir = CONFIGS / config if config else None
    engine = DiffusersEngine(path, path.stem, MODEL_HASH, config_dir=config_dir, device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def sd2(files: dict[str, Path]) -> DiffusersEngine:
    return _load(files["tiny-sd2"], "tiny-sd2")


@pytest.fixture(scope="module")
def xl(files: dict[str, Path]) -> DiffusersEngine:
    return _load(files["tiny-sdxl"], "tiny-sdxl")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# --- telling architectures apart -------------------------------------------------------------


def test_the_architecture_comes_from_the_text_encoder_keys(
    files: dict[str, Path], tmp_path: Path
) -> None:
    assert [single_file_architecture(files[n]) for n in ("tiny-sd", "tiny-sd2", "tiny-sdxl")] == [
        "sd1",
        "sd2",
        "sdxl",
    ]
    refiner = tmp_path / "refiner.safetensors"
    save_file({"conditioner.embedders.0.model.text_projection": torch.zeros(2, 2)}, str(refiner))
    with pytest.raises(ValueError, match="refiner"):
        single_file_architecture(refiner)
    other = tmp_path / "other.safetensors"
    save_file({"model.diffusion_model.joint_blocks.0.x": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a Stable Diffusion 1.x, 2.x or XL"):
        single_file_architecture(other)


def test_sd2_and_sdxl_files_hold_the_webui_layouts(files: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(str(files["tiny-sd2"]), "pt") as f:
        sd2 = set(f.keys())
    with safe_open(str(files["tiny-sdxl"]), "pt") as f:
        xl = set(f.keys())
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in sd2
    # SD 2.x files carry the last OpenCLIP block, which SD 2.x skips (penultimate layer)
    assert "cond_stage_model.model.transformer.resblocks.2.mlp.c_fc.weight" in sd2
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in xl
    assert "conditioner.embedders.1.model.text_projection" in xl
    assert "model.diffusion_model.label_emb.0.0.weight" in xl  # the pooled + size embedding


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_single_files_load_back_with_every_tensor_equal(name: str, files: dict[str, Path]) -> None:
    engine = _load(files[name], name)
    original = tiny.build_pipeline(seed=0, name=name)
    parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if name == "tiny-sdxl" else [])
    for part in parts:
        ours, theirs = getattr(engine.model.txt2img, part), getattr(original, part)
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys(), part
        assert all(torch.equal(a[k], b[k]) for k in b), part


# --- SD 2.x ------------------------------------------------------------------------------------


def test_sd2_matches_diffusers_own_pipeline_on_a_plain_prompt(sd2: DiffusersEngine) -> None:
    """No emphasis, one chunk: the webui's conditioning is diffusers' (OpenCLIP's penultimate
    layer through the final norm, "!" padding), and v-prediction comes from the config."""
    assert sd2.architecture == "sd2"
    assert sd2.model.scheduler_config["prediction_type"] == "v_prediction"
    ours = sd2.run(gen(prompt="a red circle", sampler="Euler"), EngineInputs(), Steps())
    assert _plain_diffusers(sd2, "a red circle") == pytest.approx(pixels(ours.images[0]), abs=1)


def test_sd2_ignores_clip_skip_as_the_webui_does(sd2: DiffusersEngine) -> None:
    one = sd2.run(gen(clip_skip=1), EngineInputs(), Steps()).images[0]
    two = sd2.run(gen(clip_skip=2), EngineInputs(), Steps()).images[0]
    assert np.array_equal(pixels(one), pixels(two))


def test_auto_config_runs_the_webui_v_prediction_test(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the shipped sd2 config is full size: point the auto choice at the tiny one
    monkeypatch.setitem(checkpoints_module.ARCHITECTURE_CONFIGS, "sd2", "../configs/tiny-sd2")
    monkeypatch.setattr(model_module, "uses_v_prediction", lambda unet: False)
    base = _load(files["tiny-sd2"], None)
    assert base.model.scheduler_config["prediction_type"] == "epsilon"
    assert base.native_size == (512, 512)  # SD 2.x base: 512 px
    monkeypatch.setattr(model_module, "uses_v_prediction", lambda unet: True)
    v_model = _load(files["tiny-sd2"], None)
    assert v_model.model.scheduler_config["prediction_type"] == "v_prediction"
    assert v_model.native_size == (64, 64)  # the config's own size (768 for the real one)


class _FlatUnet(torch.nn.Module):
    """A stand-in UNet whose prediction is its input plus `offset`."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"cross_attention_dim": 8})()

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: Any) -> Any:
        assert int(t) == 999 and encoder_hidden_states.shape == (1, 2, 8)
        return type("Out", (), {"sample": x + self.offset})()


def test_the_v_prediction_test_is_the_webuis() -> None:
    assert not uses_v_prediction(_FlatUnet(0.0))  # epsilon at t=999 predicts ~ the input
    assert uses_v_prediction(_FlatUnet(-1.5))  # v: well below it
    assert not uses_v_prediction(_FlatUnet(-0.5))


# --- SDXL -------------------------------------------------------------------------------------


def _plain_diffusers(engine: DiffusersEngine, prompt: str, **kwargs: Any) -> np.ndarray:
    """The same model, noise and Euler scheduler through diffusers' own pipeline and prompt
    encoding, as a reference."""
    pipe = engine.model.txt2img
    noise, generator = image_noise((4, 8, 8), 123, 0, 0.0, None)
    pipe.scheduler = make_scheduler("Euler", "Automatic", engine.model.scheduler_config)
    original = type(pipe).__mro__[2]  # past the webui-guidance mixin
    plain = original(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    out = plain(
        prompt=prompt,
        num_inference_steps=3,
        guidance_scale=7.0,
        height=64,
        width=64,
        latents=noise[None],
        generator=[generator],
        **kwargs,
    )
    return pixels(out.images[0])


def test_sdxl_matches_diffusers_own_pipeline_on_a_plain_prompt(xl: DiffusersEngine) -> None:
    """Both encoders' penultimate layers side by side, bigG's pooled output, size conditioning
    from the image size, zeros for the empty negative prompt: what diffusers' SDXL does."""
    assert xl.architecture == "sdxl" and isinstance(xl.model.encoder, XLPromptEncoder)
    ours = xl.run(gen(prompt="a red circle", sampler="Euler"), EngineInputs(), Steps())
    assert _plain_diffusers(xl, "a red circle") == pytest.approx(pixels(ours.images[0]), abs=1)
    negative = xl.run(gen(negative_prompt="blue"), EngineInputs(), Steps())
    reference = _plain_diffusers(xl, "a red circle", negative_prompt="blue")
    assert reference == pytest.approx(pixels(negative.images[0]), abs=1)


def test_sdxl_conditioning_shapes_emphasis_and_empty_negative(xl: DiffusersEngine) -> None:
    encoder = xl.model.encoder
    assert isinstance(encoder, XLPromptEncoder)
    plain = encoder.encode_pair("a red circle", "", clip_skip=1)
    assert plain.cond.shape == (1, 77, 32 + 48)  # CLIP-L's width + bigG's
    assert plain.pooled is not None and plain.pooled.shape == (1, 32)
    assert plain.negative_pooled is not None
    assert not plain.uncond.any() and not plain.negative_pooled.any()
    with_negative = encoder.encode_pair("a red circle", "blue", clip_skip=1)
    assert with_negative.uncond.any() and with_negative.negative_pooled.any()
    strong = encoder.encode_pair("a (red:1.5) circle", "", clip_skip=1)
    assert not torch.allclose(strong.cond, plain.cond)
    assert plain.pooled is not None and strong.pooled is not None
    assert torch.equal(strong.pooled, plain.pooled)  # emphasis leaves the pooled output alone
    skipped = encoder.encode_pair("a red circle", "", clip_skip=2)  # ignored, as the webui
    assert torch.equal(skipped.cond, plain.cond)
    long = encoder.encode_pair("a red circle, " * 40, "", clip_skip=1)
    assert (
        long.cond.shape[1]
        == long.uncond.shape[1]
        == 77 * len(encoder.first.chunks("a red circle, " * 40))
    )


def test_sdxl_defaults_to_its_native_size_and_same_seed_same_pixels(
    xl: DiffusersEngine,
) -> None:
    assert xl.native_size == (64, 64)  # 1024 for the shipped sdxl config
    a = xl.run(gen(), EngineInputs(), Steps()).images[0]
    b = xl.run(gen(), EngineInputs(), Steps()).images[0]
    c = xl.run(gen(seed=124), EngineInputs(), Steps()).images[0]
    assert np.array_equal(pixels(a), pixels(b)) and not np.array_equal(pixels(a), pixels(c))


def test_sdxl_img2img_inpaint_and_hires(xl: DiffusersEngine) -> None:
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    out = xl.run(gen(kind="img2img", denoising_strength=0.5), EngineInputs([init]), Steps())
    assert out.images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inputs = EngineInputs([init], mask=mask)
    painted = xl.run(gen(kind="img2img", mask_blur=0, denoising_strength=0.9), inputs, Steps())
    got = pixels(painted.images[0])
    assert np.array_equal(got[:8], pixels(init)[:8])  # outside the mask: the init image
    assert not np.array_equal(got[24:40, 24:40], pixels(init)[24:40, 24:40])
    for upscaler in ("Latent", "Lanczos"):
        hires = xl.run(gen(hires=True, hr_upscaler=upscaler, hr_scale=2), EngineInputs(), Steps())
        assert hires.images[0].size == (128, 128)


def test_sdxl_previews_use_sdxl_latent_colours(xl: DiffusersEngine) -> None:
    steps = Steps()
    xl.run(gen(steps=2), EngineInputs(), steps)
    assert steps.seen[0].preview is not None
    assert steps.seen[0].preview().size == (8, 8)
    assert not torch.equal(SD1_LATENT_RGB, SDXL_LATENT_RGB)


def test_sdxl_embedding_needs_clip_l_and_clip_g(xl: DiffusersEngine, tmp_path: Path) -> None:
    from sdcore.errors import InvalidInputError

    good = tmp_path / "style.safetensors"
    save_file({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)}, str(good))
    inputs = EngineInputs(embeddings=[NetworkFile("style", "aa" * 32, good)])
    plain = xl.run(gen(prompt="a circle"), EngineInputs(), Steps()).images[0]
    styled = xl.run(gen(prompt="a style circle"), inputs, Steps()).images[0]
    assert not np.array_equal(pixels(plain), pixels(styled))
    sd15_only = tmp_path / "old.safetensors"
    save_file({"emb_params": torch.randn(2, 32)}, str(sd15_only))
    bad = EngineInputs(embeddings=[NetworkFile("old", "bb" * 32, sd15_only)])
    with pytest.raises(InvalidInputError, match="clip_l and clip_g") as err:
        xl.run(gen(prompt="an old circle"), bad, Steps())
    assert err.value.field == "prompt"


def test_sdxl_lora_on_unet_and_both_text_encoders(xl: DiffusersEngine, tmp_path: Path) -> None:
    """A kohya-style SDXL LoRA (`lora_unet_`, `lora_te1_`, `lora_te2_`) through the same
    `<lora:name:weight>` path: weight 0 is the base picture, 1 another, and nothing stays."""
    pipe = xl.model.txt2img
    rng = torch.Generator().manual_seed(7)
    state: dict[str, torch.Tensor] = {}
    parts = [("lora_unet_", pipe.unet), ("lora_te1_", pipe.text_encoder)]
    parts.append(("lora_te2_", pipe.text_encoder_2))
    for prefix, module in parts:
        for name, mod in module.named_modules():
            if not isinstance(mod, torch.nn.Linear) or not name.endswith(
                (".to_q", ".to_k", ".to_v", "_proj", "mlp.fc1", "mlp.fc2")
            ):
                continue
            if prefix != "lora_unet_" and not name.startswith("text_model."):
                name = f"text_model.{name}"
            key = prefix + name.replace(".", "_")
            out_f, in_f = mod.weight.shape
            state[f"{key}.lora_down.weight"] = torch.randn(2, in_f, generator=rng)
            state[f"{key}.lora_up.weight"] = torch.randn(out_f, 2, generator=rng)
            state[f"{key}.alpha"] = torch.tensor(2.0)
    path = tmp_path / "xl-detail.safetensors"
    save_file(state, str(path))
    inputs = EngineInputs(loras={"detail": NetworkFile("detail", "c" * 64, path)})
    base = pixels(xl.run(gen(), EngineInputs(), Steps()).images[0])
    zero = pixels(xl.run(gen(prompt="a red circle <lora:detail:0>"), inputs, Steps()).images[0])
    one = pixels(xl.run(gen(prompt="a red circle <lora:detail:1>"), inputs, Steps()).images[0])
    after = pixels(xl.run(gen(), EngineInputs(), Steps()).images[0])
    # a PEFT-wrapped layer (weight 0, or switched off) runs the same weights through another
    # kernel path: on some CPUs (AVX-512/AMX here) that rounds a pixel one level apart
    assert np.abs(zero - base).max() <= 1 and np.abs(after - base).max() <= 1
    assert np.abs(one - base).mean() > 1


# --- pickle checkpoints --------------------------------------------------------------------------


def test_a_ckpt_loads_only_when_allowed_and_gives_the_safetensors_pixels(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(files["tiny-sd"])), "global_step": 1}, ckpt)
    with pytest.raises(ValueError, match="SD_ALLOW_PICKLE"):
        _load(ckpt, "tiny-sd")
    engine = DiffusersEngine(
        ckpt, "tiny", MODEL_HASH, config_dir=CONFIGS / "tiny-sd", device="cpu", allow_pickle=True
    )
    engine.load()
    assert engine.architecture == "sd1"
    reference = _load(files["tiny-sd"], "tiny-sd")
    got = engine.run(gen(), EngineInputs(), Steps()).images[0]
    assert np.array_equal(
        pixels(got), pixels(reference.run(gen(), EngineInputs(), Steps()).images[0])
    )


def test_an_sdxl_loha_in_the_ldm_naming_patches_unet_and_both_text_encoders(
    xl: DiffusersEngine, tmp_path: Path
) -> None:
    """kohya's SDXL files name UNet modules by the LDM layout (`input_blocks_4_1_...`) and the
    text encoders `lora_te1_`/`lora_te2_`."""
    from sdcore.engine.lycoris import module_table

    table = module_table(xl.model.txt2img)
    names = [n for n in table if n.endswith("attn1_to_q") and "input_blocks" in n]
    names += [n for n in table if n.endswith("self_attn_q_proj") and "layers_0_" in n]
    assert any(n.startswith("lora_te1_") for n in names)
    assert any(n.startswith("lora_te2_") for n in names)
    rng = torch.Generator().manual_seed(2)
    state = {}
    for name in names:
        out_f, in_f = table[name][1].weight.shape
        for i in (1, 2):
            state[f"{name}.hada_w{i}_a"] = torch.randn(out_f, 2, generator=rng)
            state[f"{name}.hada_w{i}_b"] = torch.randn(2, in_f, generator=rng)
    path = tmp_path / "xl-loha.safetensors"
    save_file(state, str(path))
    inputs = EngineInputs(loras={"xl": NetworkFile("xl", "7" * 64, path)})
    layers = [table[n][1] for n in names]
    before = [layer.weight.detach().clone() for layer in layers]
    with xl.model.networks.applied("x <lora:xl:1>", inputs, []):
        assert all(not torch.equal(la.weight, b) for la, b in zip(layers, before, strict=True))
    assert all(torch.equal(la.weight, b) for la, b in zip(layers, before, strict=True))


def test_a_config_of_another_architecture_is_refused_at_load(files: dict[str, Path]) -> None:
    from sdcore.guards.modelfiles import config_architecture

    assert [config_architecture(CONFIGS / n) for n in ("sd15", "sd2-base", "sdxl")] == [
        "sd1",
        "sd2",
        "sdxl",
    ]
    assert config_architecture(CONFIGS / "tiny-sd2") == "sd2"
    with pytest.raises(ValueError, match="it is SD 2.x, the config 'tiny-sd' is for SD 1.x"):
        _load(files["tiny-sd2"], "tiny-sd")
