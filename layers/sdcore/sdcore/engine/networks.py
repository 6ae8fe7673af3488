"""Per-task extra networks on a loaded checkpoint: LoRAs from `<lora:name:weight>`, a swapped VAE
(`sd_vae`) and textual-inversion embeddings named in the prompt.

LoRAs go in as PEFT adapters (diffusers' `load_lora_weights`, which reads the webui/kohya,
diffusers and PEFT key layouts) and stay loaded, keyed by file hash, so a LoRA used again costs
nothing; each task activates exactly the ones its prompt names, at their weights, and they are
switched off again when it ends. A VAE is swapped in for the task and the checkpoint's own put
back after. Embeddings are added to the tokenizer once (one token per vector, as the webui counts
them) and stay: a prompt without their name never reaches their tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from sdcore.engine.lycoris import Patches, is_lycoris
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, NetworkFile
from sdcore.webui.prompt_syntax import lora_tags

MAX_LORAS = 8  # adapters kept loaded; the least recently used goes first
MAX_VAES = 2


def _vae_state(path: Path, config: Any) -> dict[str, torch.Tensor]:
    """A VAE file's weights in diffusers' AutoencoderKL layout (webui/LDM files converted)."""
    state = load_file(str(path))
    # full checkpoints sometimes ship as VAEs: keep their first stage only
    if any(k.startswith("first_stage_model.") for k in state):
        state = {
            k[len("first_stage_model.") :]: v
            for k, v in state.items()
            if k.startswith("first_stage_model.")
        }
    if any(".down_blocks." in k or k.startswith("encoder.down_blocks") for k in state):
        return state
    return dict(convert_ldm_vae_checkpoint(state, dict(config)))


class Networks:
    """The extra networks of one engine's pipelines (which share their modules)."""

    def __init__(self, pipe: Any, encoder: Any) -> None:
        self.pipe = pipe
        self.encoder = encoder
        self._loras: OrderedDict[str, str] = OrderedDict()  # sha256 -> adapter name
        self._vaes: OrderedDict[str, Any] = OrderedDict()  # sha256 -> AutoencoderKL
        self._embeddings: dict[str, str] = {}  # name -> sha256 loaded
        self._lycoris_files: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    # --- LoRA ------------------------------------------------------------------------------

    def _adapter(self, lora: NetworkFile) -> str:
        name = self._loras.get(lora.sha256)
        if name is not None:
            self._loras.move_to_end(lora.sha256)
            return name
        name = f"lora_{lora.sha256[:16]}"
        try:
            self.pipe.load_lora_weights(load_file(str(lora.path)), adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            # a layout diffusers cannot map onto this model (another architecture, LyCORIS)
            raise InvalidInputError(
                "prompt", f"LoRA {lora.name!r} does not fit this checkpoint: {exc}"
            ) from exc
        self._loras[lora.sha256] = name
        while len(self._loras) > MAX_LORAS:
            _, old = self._loras.popitem(last=False)
            self.pipe.delete_adapters(old)
        return name

    def _lycoris(self, lora: NetworkFile) -> dict[str, torch.Tensor] | None:
        """The file's tensors when it is a LyCORIS LoHa/LoKr (kept, by hash), else None."""
        if lora.sha256 in self._lycoris_files:
            self._lycoris_files.move_to_end(lora.sha256)
            return self._lycoris_files[lora.sha256]
        if lora.sha256 in self._loras:
            return None
        state = load_file(str(lora.path))
        if not is_lycoris(state):
            return None
        self._lycoris_files[lora.sha256] = state
        while len(self._lycoris_files) > MAX_LORAS:
            self._lycoris_files.popitem(last=False)
        return state

    def _activate(self, prompt: str, loras: dict[str, NetworkFile], patches: Patches) -> bool:
        """The tags' LoRAs on: PEFT adapters (whether any is on is returned), LyCORIS files as
        weight patches in `patches`."""
        weights: dict[str, tuple[float, float]] = {}  # adapter -> (text encoders, UNet)
        for tag in lora_tags(prompt, "prompt"):
            if tag.name not in loras:
                raise InvalidInputError("prompt", f"unknown LoRA {tag.name!r}")
            lycoris = self._lycoris(loras[tag.name])
            if lycoris is not None:
                try:
                    patches.add(self.pipe, lycoris, tag.te, tag.unet)
                except ValueError as exc:
                    raise InvalidInputError(
                        "prompt", f"LoRA {tag.name!r} does not fit this checkpoint: {exc}"
                    ) from exc
                continue
            adapter = self._adapter(loras[tag.name])
            te, unet = weights.get(adapter, (0.0, 0.0))
            weights[adapter] = (te + tag.te, unet + tag.unet)  # named twice: both count
        if not weights:
            return False
        parts = self.pipe.get_list_adapters()  # component -> adapters with weights there
        per_adapter = []
        for adapter, (te, unet) in weights.items():
            per_adapter.append(
                {
                    part: unet if part == "unet" else te
                    for part, adapters in parts.items()
                    if adapter in adapters
                }
            )
        self.pipe.enable_lora()
        self.pipe.set_adapters(list(weights), per_adapter)
        return True

    # --- VAE -------------------------------------------------------------------------------

    def _vae(self, vae: NetworkFile, base: Any) -> Any:
        if vae.sha256 in self._vaes:
            self._vaes.move_to_end(vae.sha256)
            return self._vaes[vae.sha256]
        if vae.path.is_dir():
            model = AutoencoderKL.from_pretrained(str(vae.path), local_files_only=True)
        else:
            model = AutoencoderKL.from_config(base.config)
            try:
                model.load_state_dict(_vae_state(vae.path, base.config))
            except (RuntimeError, KeyError) as exc:
                raise InvalidInputError(
                    "sd_vae", f"VAE {vae.name!r} does not fit this checkpoint: {exc}"
                ) from exc
        model = model.to(base.device, base.dtype).eval()
        self._vaes[vae.sha256] = model
        while len(self._vaes) > MAX_VAES:
            self._vaes.popitem(last=False)
        return model

    # --- embeddings ------------------------------------------------------------------------

    def _embedding(self, emb: NetworkFile) -> None:
        if self._embeddings.get(emb.name) == emb.sha256:
            return
        try:
            self.encoder.add_embedding_file(emb.name, load_file(str(emb.path)))
        except ValueError as exc:
            raise InvalidInputError("prompt", f"embedding {emb.name!r}: {exc}") from exc
        self._embeddings[emb.name] = emb.sha256

    # --- per task --------------------------------------------------------------------------

    @contextmanager
    def applied(self, prompt: str, inputs: EngineInputs, pipes: list[Any]) -> Iterator[None]:
        """The task's LoRAs, VAE and embeddings in place for the body; the base model after."""
        for emb in inputs.embeddings:
            self._embedding(emb)
        self.encoder.active_embeddings = {emb.name for emb in inputs.embeddings}
        base_vae = self.pipe.vae
        lora_on = False
        patches = Patches()
        try:
            if inputs.vae is not None:
                vae = self._vae(inputs.vae, base_vae)
                for p in pipes:
                    p.vae = vae
            lora_on = self._activate(prompt, inputs.loras, patches)
            yield
        finally:
            self.encoder.active_embeddings = set()
            patches.restore()
            if lora_on:
                self.pipe.disable_lora()
            for p in pipes:
                p.vae = base_vae


def _listed(name: str) -> str:
    return name.replace(":", "").replace(",", "")  # the webui's clean-up of names in a list


def network_fields(inputs: EngineInputs) -> list[tuple[str, Any]]:
    """The webui's infotext fields for the task's VAE, LoRAs and embeddings: `VAE hash` (first
    10 hex digits of the file's SHA-256), `Lora hashes` (first 12 of the webui's LoRA hash:
    kohya's `sshs_model_hash` or the SHA-256 of the tensor data without the header, found when
    the file was verified; the file's SHA-256 for a LoRA verified before that was recorded)
    and `TI hashes` (first 12 of the file's SHA-256)."""
    fields: list[tuple[str, Any]] = []
    if inputs.vae is not None:
        fields += [("VAE hash", inputs.vae.sha256[:10]), ("VAE", inputs.vae.name)]
    if inputs.loras:
        hashes = ", ".join(
            f"{_listed(name)}: {(f.webui_hash or f.sha256)[:12]}"
            for name, f in inputs.loras.items()
        )
        fields.append(("Lora hashes", hashes))
    if inputs.embeddings:
        used = ", ".join(f"{_listed(e.name)}: {e.sha256[:12]}" for e in inputs.embeddings)
        fields.append(("TI hashes", used))
    return fields
