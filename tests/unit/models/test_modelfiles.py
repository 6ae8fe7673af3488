"""The model file check: each type is accepted as itself and refused as any other, with the
reason; pickles, truncated files and things that are no model are refused; nothing is run."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.modelfiles import (
    ARCHITECTURE_CONFIGS,
    ConfigFor,
    ModelFileError,
    inspect_stream,
)
from tests import model_files as mf

CONFIGS = Path(__file__).resolve().parents[3] / "layers/sdcore/sdcore/configs"


def loads_with(name: str) -> ConfigFor:
    """A checkpoint registered with config `name` loads with that folder."""
    return lambda arch: CONFIGS / name


def auto(arch: str) -> Path:
    """`auto`: the shipped config of the file's architecture."""
    return CONFIGS / ARCHITECTURE_CONFIGS[arch]


TINY, SD15 = loads_with("tiny-sd"), loads_with("sd15")


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    """As storage streams it: in chunks that cut the header anywhere."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def check(data: bytes, kind: str, config: ConfigFor | None = None):
    return inspect_stream(chunked(data), ModelType(kind), config)


@pytest.mark.parametrize("kind", list(mf.BY_TYPE))
def test_each_type_is_accepted_as_itself_with_digest_and_size(kind):
    data = mf.BY_TYPE[kind]()

    found = check(data, kind, TINY if kind == "checkpoint" else None)

    assert found.format is ModelFormat.SAFETENSORS
    assert found.sha256 == hashlib.sha256(data).hexdigest() and found.size == len(data)


@pytest.mark.parametrize("kind", list(mf.BY_TYPE))
@pytest.mark.parametrize("claimed", list(mf.BY_TYPE))
def test_a_file_of_another_type_is_refused_naming_what_it_is(kind, claimed):
    if kind == claimed:
        return
    with pytest.raises(ModelFileError) as refused:
        check(mf.BY_TYPE[kind](), claimed, TINY)
    assert re.search(f"looks like an? {kind}, not an? {claimed}$", str(refused.value))
    # the whole file was still read: the caller can report its digest
    assert refused.value.sha256 == hashlib.sha256(mf.BY_TYPE[kind]()).hexdigest()


def test_details_for_listings():
    lora = mf.safetensors(mf.lora_shapes(rank=8))
    assert check(lora, "lora").details["rank"] == 8
    embedding = check(mf.safetensors(mf.embedding_shapes(3, 48)), "embedding")
    assert embedding.details == {"vectors": 3, "shape": 48}
    assert check(mf.safetensors(mf.upscaler_shapes(4)), "upscaler").details == {"scale": 4}


def test_not_a_model_pickles_and_compressed_tars_are_refused():
    for data, reason in [
        (b"hello world, this is not a model at all", "not a .safetensors file"),
        (b"PK\x03\x04" + b"\0" * 600, "pickle checkpoint"),
        (b"\x80\x02}q\x00" + b"\0" * 600, "pickle checkpoint"),
        (b"\x1f\x8b\x08" + b"\0" * 600, "compressed tar"),
        (b"", "not a .safetensors file"),
    ]:
        with pytest.raises(ModelFileError, match=reason):
            check(data, "checkpoint")


def test_truncated_or_padded_safetensors_are_refused():
    data = mf.safetensors(mf.lora_shapes())
    with pytest.raises(ModelFileError, match="truncated: .* expected"):
        check(data[:-1], "lora")
    with pytest.raises(ModelFileError, match="longer than its header says"):
        check(data + b"\0", "lora")
    with pytest.raises(ModelFileError, match="truncated safetensors header"):
        check(data[:40], "lora")


def test_a_malformed_header_is_refused():
    data = mf.safetensors({"emb_params": [2, 32]})
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["emb_params"]["shape"] = [3, 32]  # the byte range no longer fits the shape
    raw = json.dumps(header).encode()
    bad = len(raw).to_bytes(8, "little") + raw + data[8 + length :]
    with pytest.raises(ModelFileError, match="does not fit its shape"):
        check(bad, "embedding")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        check((10).to_bytes(8, "little") + b"{not json}" + b"\0" * 600, "embedding")


def test_checkpoint_rules():
    no_vae = {k: v for k, v in mf.checkpoint_shapes().items() if "first_stage" not in k}
    with pytest.raises(ModelFileError, match="no tensors under first_stage_model"):
        check(mf.safetensors(no_vae), "checkpoint", TINY)
    a_vae_with_prefix = {f"first_stage_model.{k}": v for k, v in mf.vae_shapes().items()}
    with pytest.raises(ModelFileError, match="model.diffusion_model"):
        check(mf.safetensors(a_vae_with_prefix), "checkpoint", TINY)


def test_lora_factors_must_pair_with_matching_ranks():
    shapes = mf.lora_shapes(4)
    key = next(k for k in shapes if k.endswith("lora_up.weight"))
    with pytest.raises(ModelFileError, match="ranks do not match"):
        check(mf.safetensors({**shapes, key: [32, 8]}), "lora")
    with pytest.raises(ModelFileError, match="without its up factor"):
        check(mf.safetensors({k: v for k, v in shapes.items() if k != key}), "lora")


def test_diffusers_tar_is_accepted_with_or_without_a_root_folder():
    for root in ("", "my-model"):
        data = mf.diffusers_tar(root)
        found = check(data, "checkpoint")
        assert found.format is ModelFormat.DIFFUSERS and found.size == len(data)


def test_diffusers_tar_refusals():
    with pytest.raises(ModelFileError, match="pickle file"):
        check(mf.diffusers_tar(pickle_unet=True), "checkpoint")
    with pytest.raises(ModelFileError, match="must be one .safetensors file"):
        check(mf.diffusers_tar(), "lora")
    with pytest.raises(ModelFileError, match="no config.json at the top"):
        check(mf.diffusers_tar(), "vae")


def test_files_written_by_diffusers_itself_pass(tmp_path):
    """Not only hand-written layouts: the tiny SD model as diffusers and safetensors save it."""
    from safetensors.torch import save_file

    from sdlocal.demo.tiny import build_pipeline, save_diffusers_tar, save_single_file

    def read(path: Path) -> list[bytes]:
        data = path.read_bytes()
        return chunked(data, 1 << 20)

    single = inspect_stream(
        read(save_single_file(tmp_path / "m.safetensors")), ModelType.CHECKPOINT, TINY
    )
    assert single.format is ModelFormat.SAFETENSORS and single.tensors > 100
    folder = inspect_stream(read(save_diffusers_tar(tmp_path / "m.tar")), ModelType.CHECKPOINT)
    assert folder.format is ModelFormat.DIFFUSERS
    vae = build_pipeline().vae.state_dict()
    save_file({k: v.contiguous() for k, v in vae.items()}, str(tmp_path / "vae.safetensors"))
    assert inspect_stream(read(tmp_path / "vae.safetensors"), ModelType.VAE).tensors == len(vae)
    with pytest.raises(ModelFileError, match="looks like a checkpoint, not a vae"):
        inspect_stream(read(tmp_path / "m.safetensors"), ModelType.VAE)


# --- architectures -------------------------------------------------------------------------------

TINY_OF = {"sd1": "tiny-sd", "sd2": "tiny-sd2", "sdxl": "tiny-sdxl"}


def arch_shapes(arch: str) -> dict[str, list[int]]:
    """A whole single file of `arch` (the tiny config of it), or an SDXL refiner's layout."""
    if arch in TINY_OF:
        return mf.checkpoint_shapes(TINY_OF[arch])
    shapes = {k: v for k, v in mf.checkpoint_shapes().items() if k.startswith(("model.", "first"))}
    return {**shapes, "conditioner.embedders.0.model.text_projection": [1280, 1280]}


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl"])
def test_the_architecture_is_recorded_for_listings(arch: str) -> None:
    found = check(mf.safetensors(arch_shapes(arch)), "checkpoint", loads_with(TINY_OF[arch]))
    assert found.details == {"architecture": arch, "inpainting": False}


def test_a_config_of_another_architecture_is_refused_naming_both() -> None:
    xl = mf.safetensors(arch_shapes("sdxl"))
    with pytest.raises(ModelFileError, match=r"it is SDXL, the config 'sd15' is for SD 1.x"):
        check(xl, "checkpoint", SD15)
    sd2 = mf.safetensors(arch_shapes("sd2"))
    with pytest.raises(ModelFileError, match="it is SD 2.x"):
        check(sd2, "checkpoint", loads_with("tiny-sdxl"))


# --- every tensor against the config it loads with --------------------------------------------


def test_a_file_that_does_not_fit_its_config_is_refused_naming_the_differences() -> None:
    """A 32-wide SD 1.x file: `auto` picks sd15 by its keys, whose tensors are 768 wide."""
    data = mf.checkpoint()
    for config in (auto, SD15):
        with pytest.raises(ModelFileError) as refused:
            check(data, "checkpoint", config)
        why = str(refused.value)
        assert why.startswith("it does not fit the config sd15: UNet: ")
        assert (
            "text encoder: embeddings.position_embedding.weight is [77, 32], "
            "config sd15 expects [77, 768]"
        ) in why
        assert "VAE: encoder.conv_in.weight is [32, 3, 3, 3], config sd15 expects" in why
        assert "uploaded as a diffusers folder" in why and "which carries its own configs" in why
    assert check(data, "checkpoint", TINY).details["architecture"] == "sd1"


def test_a_missing_or_misshapen_tensor_is_named() -> None:
    shapes = mf.checkpoint_shapes()
    key = "model.diffusion_model.output_blocks.1.2.conv.weight"  # the first upsampler
    missing = {k: v for k, v in shapes.items() if k != key}
    assert len(missing) == len(shapes) - 1
    with pytest.raises(ModelFileError, match=r"UNet: output_blocks.1.2.conv.weight is missing"):
        check(mf.safetensors(missing), "checkpoint", TINY)
    layer = "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight"
    odd = {**shapes, layer: [32, 48]}
    with pytest.raises(ModelFileError) as refused:
        check(mf.safetensors(odd), "checkpoint", TINY)
    assert str(refused.value).startswith(
        "it does not fit the config tiny-sd: text encoder: encoder.layers.1.mlp.fc2.weight is "
        "[32, 48], config tiny-sd expects [32, 64]. "
    )
    # what the loader does not take is not checked: EMA copies, SD 2.x's unused last layer
    extra = {**shapes, "model_ema.decay": [], "cond_stage_model.transformer.x.weight": [3]}
    assert check(mf.safetensors(extra), "checkpoint", TINY).tensors == len(extra)


def test_an_inpainting_checkpoint_fits_with_its_nine_channel_first_conv() -> None:
    shapes = mf.checkpoint_shapes()
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = [32, 9, 3, 3]
    found = check(mf.safetensors(shapes), "checkpoint", TINY)
    assert found.details == {"architecture": "sd1", "inpainting": True}


def test_each_tiny_config_fits_its_own_architecture_with_auto_refused() -> None:
    for arch, name in TINY_OF.items():
        data = mf.checkpoint(config=name)
        assert check(data, "checkpoint", loads_with(name)).details["architecture"] == arch
        with pytest.raises(ModelFileError, match=f"config {ARCHITECTURE_CONFIGS[arch]}: UNet"):
            check(data, "checkpoint", auto)


def test_refiners_and_unknown_text_encoders_are_refused() -> None:
    with pytest.raises(ModelFileError, match="SDXL refiner"):
        check(mf.safetensors(arch_shapes("refiner")), "checkpoint")
    odd = arch_shapes("sd1")
    odd = {
        k.replace("cond_stage_model.transformer", "cond_stage_model.t5"): v for k, v in odd.items()
    }
    with pytest.raises(ModelFileError, match="not a Stable Diffusion 1.x, 2.x or XL"):
        check(mf.safetensors(odd), "checkpoint")


def test_diffusers_folders_of_sdxl_and_other_pipelines() -> None:
    assert check(mf.diffusers_tar(), "checkpoint").details == {"architecture": "sd1"}
    xl = check(mf.diffusers_tar(pipeline="StableDiffusionXLPipeline"), "checkpoint")
    assert xl.details == {"architecture": "sdxl"}
    with pytest.raises(ModelFileError, match="text_encoder_2"):
        check(
            mf.diffusers_tar(pipeline="StableDiffusionXLPipeline", second_encoder=False),
            "checkpoint",
        )
    with pytest.raises(ModelFileError, match="names 'FluxPipeline'"):
        check(mf.diffusers_tar(pipeline="FluxPipeline"), "checkpoint")


# --- pickle checkpoints (.ckpt), only when allowed --------------------------------------------


def torch_zip(obj: object) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tensors(shapes: dict[str, list[int]]) -> dict:
    import torch

    return {k: torch.zeros(v, dtype=torch.float16) for k, v in shapes.items()}


def test_pickle_checkpoints_are_refused_unless_allowed() -> None:
    data = torch_zip({"state_dict": tensors(arch_shapes("sd1")), "global_step": 7})
    with pytest.raises(ModelFileError, match="SD_ALLOW_PICKLE"):
        check(data, "checkpoint")
    found = inspect_stream(chunked(data, 4096), ModelType.CHECKPOINT, TINY, allow_pickle=True)
    assert found.format is ModelFormat.PICKLE
    assert found.sha256 == hashlib.sha256(data).hexdigest() and found.size == len(data)
    assert found.details == {"architecture": "sd1", "inpainting": False}
    # its layout is checked like a single file's: an SDXL pickle with the sd15 config
    xl = torch_zip(tensors(arch_shapes("sdxl")))  # a bare state dict also works
    with pytest.raises(ModelFileError, match="it is SDXL"):
        inspect_stream([xl], ModelType.CHECKPOINT, SD15, allow_pickle=True)
    # only checkpoints: other types stay safetensors-only
    with pytest.raises(ModelFileError, match="can run code"):
        inspect_stream([data], ModelType.LORA, allow_pickle=True)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does: a call on load
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = torch_zip({"state_dict": tensors(arch_shapes("sd1")), "x": _RunsCode(marker)})
    with pytest.raises(ModelFileError, match="the pickle references"):
        inspect_stream([data], ModelType.CHECKPOINT, allow_pickle=True)
    assert not marker.exists()
    with pytest.raises(ModelFileError, match="old-format torch pickle"):
        inspect_stream([b"\x80\x02" + b"\0" * 64], ModelType.CHECKPOINT, allow_pickle=True)


def test_a_lora_gets_the_webui_hash() -> None:
    """The webui's "Lora hashes": kohya's `sshs_model_hash` from the metadata, else the SHA-256
    of the tensor data without the header ("addnet" hash)."""
    import struct

    data = mf.safetensors(mf.lora_shapes(rank=4))
    (length,) = struct.unpack("<Q", data[:8])
    assert (
        check(data, "lora").details["webui_hash"] == hashlib.sha256(data[8 + length :]).hexdigest()
    )
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = {"sshs_model_hash": "ab" * 32, "ss_network_dim": "4"}
    raw = json.dumps(header).encode()
    tagged = struct.pack("<Q", len(raw)) + raw + data[8 + length :]
    assert check(tagged, "lora").details["webui_hash"] == "ab" * 32


def test_a_header_nested_fifty_thousand_deep_is_refused_with_the_reason():
    """json.loads recurses per level: such a header once made the verification job raise and
    retry silently until the stale sweep ended it."""
    raw = b'{"__metadata__": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(ModelFileError, match="nested too deep"):
        check(len(raw).to_bytes(8, "little") + raw, "embedding")
