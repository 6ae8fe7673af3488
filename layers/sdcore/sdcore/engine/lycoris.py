"""LyCORIS LoHa (`hada_`) and LoKr (`lokr_`) files, which diffusers' LoRA loader does not read.

Each module's weight delta is computed as the webui's Lora extension computes it
(`network_hada.py`, `network_lokr.py`): LoHa (w1a @ w1b) * (w2a @ w2b), LoKr kron(w1, w2) (each
factor whole or as a low-rank pair; Tucker cores `hada_t1/t2`, `lokr_t2` for convolutions),
times alpha / rank and the tag's multiplier (the text encoders' or the UNet's). The deltas are
added to the base weights for the task and the saved originals put back after it, bit for bit.

Module names are kohya's: `lora_unet_` + the UNet module path (diffusers' names, or the LDM
names SDXL files use), `lora_te_` (SD 1.x/2.x) or `lora_te1_`/`lora_te2_` (SDXL) + the text
encoder's, dots as underscores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sdcore.engine.checkpoints import ldm_unet_key

MARKERS = (".hada_w1_a", ".hada_w1_b", ".lokr_w1", ".lokr_w2")


def is_lycoris(state: dict[str, torch.Tensor]) -> bool:
    return any(marker in key for key in state for marker in MARKERS)


def _layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, layer) of the Linear and Conv2d layers, through PEFT's wrappers (a LoRA adapter
    loaded earlier wraps a layer as `<path>.base_layer`)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            yield name.removesuffix(".base_layer"), module


def module_table(pipe: Any) -> dict[str, tuple[str, nn.Module]]:
    """kohya module name -> (part, layer): part is "unet" or "te" (which multiplier applies)."""
    table: dict[str, tuple[str, nn.Module]] = {}
    config = pipe.unet.config
    per_level = int(config["layers_per_block"]) + 1
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    for name, layer in _layers(pipe.unet):
        table["lora_unet_" + name.replace(".", "_")] = ("unet", layer)
        try:  # SDXL files name the UNet's modules by the LDM layout
            ldm = ldm_unet_key(name + ".weight", per_level, up_attn).removesuffix(".weight")
        except KeyError:
            continue
        table.setdefault("lora_unet_" + ldm.replace(".", "_"), ("unet", layer))
    encoders = [("lora_te_", pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders = [("lora_te1_", pipe.text_encoder), ("lora_te2_", pipe.text_encoder_2)]
    for prefix, encoder in encoders:
        for name, layer in _layers(encoder):
            # transformers >= 5.6 dropped the `text_model.` level of CLIPTextModel; kohya has it
            path = (
                name
                if name.startswith(("text_model.", "text_projection"))
                else f"text_model.{name}"
            )
            table[prefix + path.replace(".", "_")] = ("te", layer)
    return table


def _cp(core: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A Tucker-decomposed conv weight (the webui's `make_weight_cp`)."""
    temp = torch.einsum("i j k l, j r -> i r k l", core, b)
    return torch.einsum("i j k l, i r -> r j k l", temp, a)


def _pair(up: torch.Tensor, down: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """up @ down, as the webui's `rebuild_conventional`."""
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(shape)


def _hada(w: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float | None]:
    w1a, w1b, w2a, w2b = (w[f"hada_w{i}_{s}"] for i in (1, 2) for s in "ab")
    shape = [w1a.shape[0], w1b.shape[1]]
    if "hada_t1" in w:
        first = _cp(w["hada_t1"], w1a, w1b)
        second = _cp(w["hada_t2"], w2a, w2b)
    else:
        if w1b.ndim == 4:
            shape += list(w1b.shape[2:])
        first, second = _pair(w1a, w1b, shape), _pair(w2a, w2b, shape)
    return first * second, float(w1b.shape[0])


def _lokr(w: dict[str, torch.Tensor], target: torch.Size) -> tuple[torch.Tensor, float | None]:
    rank = None
    if "lokr_w1" in w:
        w1 = w["lokr_w1"]
    else:
        w1, rank = w["lokr_w1_a"] @ w["lokr_w1_b"], float(w["lokr_w1_b"].shape[0])
    if "lokr_w2" in w:
        w2 = w["lokr_w2"]
    elif "lokr_t2" in w:
        w2, rank = _cp(w["lokr_t2"], w["lokr_w2_a"], w["lokr_w2_b"]), float(w["lokr_w2_b"].shape[0])
    else:
        w2 = _pair(w["lokr_w2_a"], w["lokr_w2_b"], [w["lokr_w2_a"].shape[0], -1])
        rank = float(w["lokr_w2_b"].shape[0])
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2).reshape(target), rank


def module_delta(weights: dict[str, torch.Tensor], target: torch.Size) -> torch.Tensor:
    """One module's weight delta at multiplier 1 (alpha / rank applied; no alpha: 1)."""
    w = {k: v.float() for k, v in weights.items()}
    if "hada_w1_a" in w:
        delta, rank = _hada(w)
    else:
        delta, rank = _lokr(w, target)
    if "alpha" in w and rank:
        delta = delta * (float(w["alpha"]) / rank)
    return delta.reshape(target)


class Patches:
    """Weight deltas added for one task; `restore` puts every original back."""

    def __init__(self) -> None:
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def add(self, pipe: Any, state: dict[str, torch.Tensor], te: float, unet: float) -> int:
        """Add one LyCORIS file's deltas at the tag's multipliers; how many modules it changed.

        Raises ValueError when none of its modules is in this model, or a delta does not fit."""
        table = module_table(pipe)
        modules: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            name, _, kind = key.partition(".")
            modules.setdefault(name, {})[kind] = value
        applied = 0
        for name, weights in modules.items():
            if name not in table or not any(k.startswith(("hada_", "lokr_")) for k in weights):
                continue
            part, layer = table[name]
            multiplier = unet if part == "unet" else te
            weight: torch.Tensor = layer.weight  # type: ignore[assignment]  # Linear or Conv2d
            try:
                delta = module_delta(weights, weight.shape)
            except (RuntimeError, KeyError) as exc:
                raise ValueError(f"{name}: {exc}") from exc
            applied += 1
            if multiplier == 0:
                continue
            if id(weight) not in self._saved:
                self._saved[id(weight)] = (weight, weight.detach().clone())
            weight.add_((delta * multiplier).to(weight.device, weight.dtype))
        if not applied:
            raise ValueError("none of its modules is in this checkpoint (another architecture?)")
        return applied

    @torch.no_grad()
    def restore(self) -> None:
        for weight, original in self._saved.values():
            weight.copy_(original)
        self._saved.clear()
