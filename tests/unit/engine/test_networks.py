"""LoRA from `<lora:name:weight>`, `sd_vae` and textual-inversion embeddings on the tiny model,
loaded from files in the layouts users upload (kohya/webui, PEFT, webui VAE and embeddings)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, NetworkFile
from sdlocal.demo import tiny

from .support import Steps, gen


def _pixels(engine: DiffusersEngine, inputs: EngineInputs, **overrides: object) -> np.ndarray:
    result = engine.run(gen(**overrides), inputs, Steps())
    return np.asarray(result.images[0], dtype=np.int16)


def _kohya_lora(engine: DiffusersEngine, path: Path, rank: int = 2) -> NetworkFile:
    """A webui/kohya LoRA for the tiny model: `lora_unet_*` and `lora_te_*` factor pairs with
    `alpha`, on the modules sd-scripts trains: the UNet's transformer blocks' projections and
    the text encoder's attention and MLP layers."""
    pipe = engine.model.txt2img
    gen_ = torch.Generator().manual_seed(7)
    state: dict[str, torch.Tensor] = {}
    targets = [
        ("lora_unet_", name, mod)
        for name, mod in pipe.unet.named_modules()
        if name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0", "proj_in", "proj_out"))
        and isinstance(mod, torch.nn.Linear)
    ] + [
        ("lora_te_", name, mod)
        for name, mod in pipe.text_encoder.named_modules()
        if name.endswith(("_proj", "mlp.fc1", "mlp.fc2")) and "layers." in name
    ]
    assert len(targets) > 4
    for prefix, name, mod in targets:
        name = (
            name
            if prefix == "lora_unet_" or name.startswith("text_model.")
            else f"text_model.{name}"
        )
        key = prefix + name.replace(".", "_")
        out_f, in_f = mod.weight.shape
        state[f"{key}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen_)
        state[f"{key}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen_)
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path))
    return NetworkFile("detail", "a" * 64, path)


@pytest.fixture(scope="module")
def lora(engine: DiffusersEngine, tmp_path_factory: pytest.TempPathFactory) -> NetworkFile:
    return _kohya_lora(engine, tmp_path_factory.mktemp("lora") / "detail.safetensors")


def test_lora_weight_zero_is_base_one_differs_and_next_task_is_base(
    engine: DiffusersEngine, lora: NetworkFile
) -> None:
    # Given the base picture
    inputs = EngineInputs(loras={"detail": lora})
    base = _pixels(engine, EngineInputs())
    # When the LoRA is named at weight 0, then at 1, then a task without it runs
    zero = _pixels(engine, inputs, prompt="a red circle <lora:detail:0>")
    one = _pixels(engine, inputs, prompt="a red circle <lora:detail:1>")
    after = _pixels(engine, EngineInputs())
    # Then 0 is the base picture, 1 another, and the LoRA left nothing behind
    assert np.array_equal(zero, base)
    assert np.abs(one - base).mean() > 1
    assert np.array_equal(after, base)
    # and the infotext names it with its hash, as the webui's "Lora hashes"
    text = engine.run(gen(prompt="x <lora:detail:1>"), inputs, Steps()).infotexts[0]
    assert text.endswith(f'Lora hashes: "detail: {lora.sha256[:12]}"')
    # the webui's own LoRA hash when verification recorded it
    hashed = EngineInputs(loras={"detail": replace(lora, webui_hash="fe" * 32)})
    text = engine.run(gen(prompt="x <lora:detail:1>"), hashed, Steps()).infotexts[0]
    assert text.endswith('Lora hashes: "detail: fefefefefefe"')


def test_lora_text_encoder_and_unet_weights_apart(
    engine: DiffusersEngine, lora: NetworkFile
) -> None:
    """`<lora:name:te:unet>` (and `te=`, `unet=`): each part at its own multiplier."""
    inputs = EngineInputs(loras={"detail": lora})

    def run(tag: str) -> np.ndarray:
        return _pixels(engine, inputs, prompt=f"a red circle {tag}")

    base = _pixels(engine, EngineInputs())
    both = run("<lora:detail:1>")
    te_only, unet_only = run("<lora:detail:1:0>"), run("<lora:detail:0:1>")
    assert np.array_equal(run("<lora:detail:0:0>"), base)
    assert np.array_equal(run("<lora:detail:1:1>"), both)
    assert np.array_equal(run("<lora:detail:unet=1:te=1>"), both)
    assert np.array_equal(run("<lora:detail:te=0:unet=1>"), unet_only)
    for one in (te_only, unet_only):
        assert not np.array_equal(one, base) and not np.array_equal(one, both)
    assert not np.array_equal(te_only, unet_only)


def test_lora_unknown_name_is_an_error_on_prompt(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(prompt="x <lora:nope:1>"), EngineInputs(), Steps())
    assert err.value.field == "prompt" and "nope" in str(err.value)


def _vae_file(path: Path, ldm: bool) -> NetworkFile:
    cfg = AutoencoderKL.load_config(str(tiny.CONFIG_DIR), subfolder="vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        vae = AutoencoderKL.from_config(cfg)
    state = vae.state_dict()
    if ldm:  # the webui's `.vae.safetensors` layout
        state = tiny.vae_to_ldm(state, vae.config)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return NetworkFile("other-vae", ("b" if ldm else "c") * 64, path)


@pytest.mark.parametrize("ldm", [True, False], ids=["webui-layout", "diffusers-layout"])
def test_sd_vae_swaps_the_vae_for_that_task_only(
    engine: DiffusersEngine, tmp_path: Path, ldm: bool
) -> None:
    vae = _vae_file(tmp_path / "other.vae.safetensors", ldm)
    base = _pixels(engine, EngineInputs())
    swapped = _pixels(engine, EngineInputs(vae=vae))
    text = engine.run(gen(), EngineInputs(vae=vae), Steps()).infotexts[0]
    assert text.endswith(f"VAE hash: {vae.sha256[:10]}, VAE: other-vae")
    assert np.abs(swapped - base).mean() > 1
    assert np.array_equal(_pixels(engine, EngineInputs()), base)


def test_embedding_token_changes_the_conditioning(engine: DiffusersEngine, tmp_path: Path) -> None:
    # Given a webui embedding file of 3 vectors named "shiny-style"
    path = tmp_path / "shiny-style.safetensors"
    save_file(
        {"emb_params": torch.randn(3, 32, generator=torch.Generator().manual_seed(3))}, str(path)
    )
    emb = NetworkFile("shiny-style", "d" * 64, path)
    encoder = engine.model.encoder
    assert encoder is not None
    base_tokens = sum(len(c.tokens) for c in encoder.chunks("a shiny-style circle"))
    base_cond = encoder.encode_pair("a shiny-style circle", "", 1).cond
    base = _pixels(engine, EngineInputs(), prompt="a shiny-style circle")
    # When the task names it
    with engine.model.networks.applied("a shiny-style circle", EngineInputs(embeddings=[emb]), []):
        chunk = encoder.chunks("a shiny-style circle")[0]
        cond = encoder.encode_pair("a shiny-style circle", "", 1).cond
    with_emb = _pixels(engine, EngineInputs(embeddings=[emb]), prompt="a shiny-style circle")
    # Then its 3 vectors stand in the prompt and the conditioning and picture change
    ids = engine.model.txt2img.tokenizer.convert_tokens_to_ids(
        [f"<emb:shiny-style:{i}>" for i in range(3)]
    )
    assert all(i in chunk.tokens for i in ids)
    assert base_tokens == 77
    assert not torch.allclose(cond, base_cond)
    assert np.abs(with_emb - base).mean() > 0
    # and a task that does not pass it is the base again
    assert np.array_equal(_pixels(engine, EngineInputs(), prompt="a shiny-style circle"), base)
    # the infotext lists it as the webui's "TI hashes" (first 12 of the file's SHA-256)
    result = engine.run(gen(prompt="a shiny-style circle"), EngineInputs(embeddings=[emb]), Steps())
    assert result.infotexts[0].endswith('TI hashes: "shiny-style: dddddddddddd"')


def test_embedding_of_another_width_is_an_error_on_prompt(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    path = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.zeros(2, 768)}, str(path))
    emb = NetworkFile("wide", "e" * 64, path)
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(prompt="wide"), EngineInputs(embeddings=[emb]), Steps())
    assert err.value.field == "prompt"


def test_a_peft_layout_lora_gives_the_kohya_one_s_pixels(
    engine: DiffusersEngine, lora: NetworkFile, tmp_path: Path
) -> None:
    # Given the kohya LoRA loaded, and the same weights saved in the diffusers/PEFT layout
    from peft.utils import get_peft_model_state_dict

    kohya = _pixels(engine, EngineInputs(loras={"detail": lora}), prompt="x <lora:detail:0.8>")
    pipe, adapter = engine.model.txt2img, f"lora_{lora.sha256[:16]}"
    state = {
        f"{part}.{key}": value.contiguous()
        for part, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder))
        for key, value in get_peft_model_state_dict(module, adapter_name=adapter).items()
    }
    assert any(".lora_A." in k for k in state) and not any("lora_down" in k for k in state)
    save_file(state, str(tmp_path / "peft.safetensors"))
    peft_file = NetworkFile("peft", "f" * 64, tmp_path / "peft.safetensors")
    # When it is used at the same weight
    peft = _pixels(engine, EngineInputs(loras={"p": peft_file}), prompt="x <lora:p:0.8>")
    # Then the picture is the kohya one's
    assert np.abs(peft - kohya).max() <= 1
    assert np.abs(peft - _pixels(engine, EngineInputs(), prompt="x")).mean() > 1


# --- LyCORIS (LoHa, LoKr) -------------------------------------------------------------------


def _lycoris(engine: DiffusersEngine, path: Path, kind: str) -> NetworkFile:
    """A LoHa or LoKr file on the tiny model's UNet attention projections and text-encoder
    attention, in the webui/kohya naming, with `alpha`."""
    from sdcore.engine.lycoris import module_table

    rng = torch.Generator().manual_seed(11)
    state: dict[str, torch.Tensor] = {}
    for name, (_, layer) in module_table(engine.model.txt2img).items():
        if not name.endswith(("attn1_to_q", "attn2_to_v", "self_attn_k_proj")):
            continue
        if "down_blocks" not in name and "lora_te_" not in name:
            continue  # one spelling per UNet layer (the diffusers one)
        out_f, in_f = layer.weight.shape
        if kind == "loha":
            for i in (1, 2):
                state[f"{name}.hada_w{i}_a"] = torch.randn(out_f, 2, generator=rng) * 0.3
                state[f"{name}.hada_w{i}_b"] = torch.randn(2, in_f, generator=rng) * 0.3
        else:  # LoKr: a whole 2x2 w1, w2 as a rank-2 pair: kron -> (2 * out/2) x (2 * in/2)
            state[f"{name}.lokr_w1"] = torch.randn(2, 2, generator=rng)
            state[f"{name}.lokr_w2_a"] = torch.randn(out_f // 2, 2, generator=rng) * 0.2
            state[f"{name}.lokr_w2_b"] = torch.randn(2, in_f // 2, generator=rng) * 0.2
        state[f"{name}.alpha"] = torch.tensor(1.0)
    save_file(state, str(path))
    return NetworkFile(kind, ("5" if kind == "loha" else "6") * 64, path)  # unique hashes


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_files_patch_the_weights_for_the_task_only(
    engine: DiffusersEngine, tmp_path: Path, kind: str
) -> None:
    from safetensors.torch import load_file

    from sdcore.engine.lycoris import module_delta, module_table

    file = _lycoris(engine, tmp_path / f"{kind}.safetensors", kind)
    inputs = EngineInputs(loras={kind: file})
    table = module_table(engine.model.txt2img)
    name = next(k for k in load_file(str(file.path)) if "down_blocks" in k).split(".")[0]
    layer = table[name][1]
    before = layer.weight.detach().clone()
    weights = {
        k.split(".", 1)[1]: v for k, v in load_file(str(file.path)).items() if k.startswith(name)
    }
    expected = before + 0.5 * module_delta(weights, before.shape)
    base = _pixels(engine, EngineInputs())
    # inside the task the UNet weight is the base plus the delta at the UNet multiplier
    with engine.model.networks.applied(f"x <lora:{kind}:1:0.5>", inputs, []):
        assert torch.allclose(layer.weight, expected, atol=1e-6)
    assert torch.equal(layer.weight, before)  # and after it the base, bit for bit
    assert np.array_equal(_pixels(engine, inputs, prompt=f"a red circle <lora:{kind}:0>"), base)
    one = _pixels(engine, inputs, prompt=f"a red circle <lora:{kind}:1>")
    assert not np.array_equal(one, base)
    assert np.array_equal(_pixels(engine, EngineInputs()), base)


def test_a_loha_delta_is_the_webuis_formula() -> None:
    from sdcore.engine.lycoris import module_delta

    w1a, w1b, w2a, w2b = (
        torch.randn(3, 2),
        torch.randn(2, 4),
        torch.randn(3, 2),
        torch.randn(2, 4),
    )
    weights = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b}
    weights["alpha"] = torch.tensor(1.0)
    delta = module_delta(weights, torch.Size([3, 4]))
    assert torch.allclose(delta, (w1a @ w1b) * (w2a @ w2b) * 0.5)  # alpha 1 / rank 2
    lokr = module_delta({"lokr_w1": torch.eye(2), "lokr_w2": torch.ones(1, 2)}, torch.Size([2, 4]))
    assert torch.equal(lokr, torch.kron(torch.eye(2), torch.ones(1, 2)))  # no alpha: scale 1
