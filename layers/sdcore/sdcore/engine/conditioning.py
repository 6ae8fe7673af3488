"""Prompt -> text-encoder embeddings the way the webui builds them (SD 1.x, SD 2.x, SDXL).

Each 77-position chunk from `prompting.chunk_prompt` is encoded on its own and the results are
concatenated, so prompts have no 75-token limit. Emphasis is the webui's default ("Original"):
the hidden states are multiplied by each token's multiplier, then rescaled so the chunk's mean is
what it was. Which hidden states, per architecture, as the webui takes them:

- SD 1.x (`CLIP_SKIP`): the last layer through the final layer norm; `clip_skip` N > 1 the N-th
  layer from the end, through the final layer norm ("Clip skip").
- SD 2.x (`LAST`): the last layer of the converted OpenCLIP encoder (which already stops at the
  penultimate block) through the final norm; the webui ignores "Clip skip" for OpenCLIP.
- SDXL (`PENULTIMATE`, both encoders): the penultimate layer without the final norm, CLIP-L's and
  OpenCLIP-bigG's concatenated per position; the pooled (projected) output of bigG for the first
  chunk; an empty negative prompt gives zeros (the webui's and diffusers' SDXL behaviour). The
  webui ignores "Clip skip" for SDXL by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from sdcore.errors import InvalidInputError
from sdcore.webui.prompt_syntax import (
    Chunk,
    Vocabulary,
    chunk_prompt,
    extract_networks,
    parse_prompt_attention,
)

CLIP_SKIP, LAST, PENULTIMATE = "clip_skip", "last", "penultimate"


@dataclass
class Conditioning:
    """A prompt and negative prompt encoded for one run: the pipeline's keyword arguments."""

    cond: torch.Tensor
    uncond: torch.Tensor
    pooled: torch.Tensor | None = None  # SDXL only
    negative_pooled: torch.Tensor | None = None

    def kwargs(self, device: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        out = {
            "prompt_embeds": self.cond.to(device, dtype),
            "negative_prompt_embeds": self.uncond.to(device, dtype),
        }
        if self.pooled is not None and self.negative_pooled is not None:
            out["pooled_prompt_embeds"] = self.pooled.to(device, dtype)
            out["negative_pooled_prompt_embeds"] = self.negative_pooled.to(device, dtype)
        return out


def embedding_vectors(state: dict[str, torch.Tensor], key: str | None = None) -> torch.Tensor:
    """A textual-inversion file's vectors, one row per token: `key` (SDXL's `clip_l`/`clip_g`)
    when given, else the webui's `emb_params`, `string_to_param.*`, SDXL's `clip_l`, or the only
    tensor (diffusers' `{token: vector}`).

    Raises ValueError when `key` is given and missing."""
    vectors: torch.Tensor | None
    if key is not None:
        if key not in state:
            raise ValueError(f"no {key!r} vectors (an SDXL embedding has clip_l and clip_g)")
        vectors = state[key]
    else:
        vectors = state.get("emb_params")
        if vectors is None:
            vectors = next((v for k, v in state.items() if "string_to_param" in k), None)
        if vectors is None:
            vectors = state.get("clip_l", next(iter(state.values())))
    return vectors.reshape(-1, vectors.shape[-1])


class PromptEncoder:
    """Encodes prompts with one checkpoint's tokenizer and text encoder; `layer` says which
    hidden states (module docstring)."""

    def __init__(self, tokenizer: Any, text_encoder: Any, layer: str = CLIP_SKIP) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.layer = layer
        comma = tokenizer.convert_tokens_to_ids(",</w>")
        self.vocab = Vocabulary(
            bos=int(tokenizer.bos_token_id),
            eos=int(tokenizer.eos_token_id),
            pad=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
            comma=None if comma in (None, tokenizer.unk_token_id) else int(comma),
        )
        self.layers = int(text_encoder.config.num_hidden_layers)
        # transformers 5 puts the layer norm on the model itself; 4.x under `text_model`
        self._final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        self._embeddings: dict[str, str] = {}  # embedding name -> its tokens, space-separated
        # the embeddings the running task may use (a loaded one since deleted is not among them)
        self.active_embeddings: set[str] = set()

    def add_embedding(self, name: str, vectors: torch.Tensor) -> None:
        """Make `name` in a prompt stand for `vectors` (one token each, as the webui counts).

        Raises ValueError when the vectors do not fit this text encoder.
        """
        table = self.text_encoder.get_input_embeddings()
        width = int(table.weight.shape[1])
        if vectors.ndim != 2 or vectors.shape[1] != width:
            raise ValueError(f"vectors of width {vectors.shape[-1]}, this model needs {width}")
        tokens = [f"<emb:{name}:{i}>" for i in range(vectors.shape[0])]
        self.tokenizer.add_tokens([t for t in tokens if t not in self.tokenizer.get_vocab()])
        if len(self.tokenizer) > table.weight.shape[0]:
            self.text_encoder.resize_token_embeddings(len(self.tokenizer))
            table = self.text_encoder.get_input_embeddings()
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            table.weight[ids] = vectors.to(table.weight.device, table.weight.dtype)
        self._embeddings[name] = " ".join(tokens)

    def add_embedding_file(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """`add_embedding` with the vectors of a textual-inversion file (ValueError: unfit)."""
        self.add_embedding(name, embedding_vectors(state))

    def _expand(self, text: str) -> str:
        for name in self.active_embeddings:
            tokens = self._embeddings[name]
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", f" {tokens} ", text)
        return text

    def _tokenize(self, text: str) -> list[int]:
        text = self._expand(text)
        ids: list[int] = self.tokenizer(
            text, add_special_tokens=False, truncation=False, verbose=False
        )["input_ids"]
        return ids

    def chunks(self, prompt: str, field: str = "prompt") -> list[Chunk]:
        text, _loras = extract_networks(prompt, field)  # LoRAs are applied elsewhere
        return chunk_prompt(parse_prompt_attention(text), self._tokenize, self.vocab)

    def empty_chunk(self) -> Chunk:
        return chunk_prompt([("", 1.0)], self._tokenize, self.vocab)[0]

    @torch.no_grad()
    def encode_chunks(
        self, chunks: list[Chunk], clip_skip: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1, 77 x len(chunks), hidden) embeddings, emphasis applied per chunk, and the first
        chunk's pooled projection when the encoder has one (SDXL's second), else None."""
        if self.layer == CLIP_SKIP and not 1 <= clip_skip <= self.layers:
            raise InvalidInputError(
                "clip_skip", f"must be 1..{self.layers} for this text encoder, got {clip_skip}"
            )
        skip = clip_skip if self.layer == CLIP_SKIP else 1
        device = self.text_encoder.device
        parts = []
        pooled = None
        for chunk in chunks:
            ids = torch.tensor([chunk.tokens], device=device)
            hidden = skip > 1 or self.layer == PENULTIMATE
            out = self.text_encoder(ids, output_hidden_states=hidden)
            if self.layer == PENULTIMATE:
                z = out.hidden_states[-2]
            elif skip > 1:
                z = self._final_norm(out.hidden_states[-skip])
            else:
                z = out.last_hidden_state
            if pooled is None:
                pooled = getattr(out, "text_embeds", None)
            weights = torch.tensor(chunk.multipliers, device=device, dtype=z.dtype)
            if bool((weights != 1).any()):
                mean = z.mean()
                z = z * weights[None, :, None]
                # the webui's rescale; skipped when the mean is ~0 (an untrained final layer
                # norm), where the ratio would be noise that can flip the embedding's sign
                if mean.abs() > 1e-4 * z.abs().mean():
                    z = z * (mean / z.mean())
            parts.append(z)
        return torch.cat(parts, dim=1), pooled

    def chunk_pair(self, prompt: str, negative: str) -> tuple[list[Chunk], list[Chunk]]:
        """(prompt, negative prompt) chunks, the shorter padded with empty chunks (the webui's
        "pad prompt/negative prompt to be same length"): diffusers runs both through the UNet as
        one batch."""
        cond = self.chunks(prompt, "prompt")
        uncond = self.chunks(negative, "negative_prompt")
        empty = self.empty_chunk()
        cond += [empty] * (len(uncond) - len(cond))
        uncond += [empty] * (len(cond) - len(uncond))
        return cond, uncond

    def encode_pair(self, prompt: str, negative: str, clip_skip: int) -> Conditioning:
        """The prompt and negative prompt encoded (same number of chunks)."""
        cond, uncond = self.chunk_pair(prompt, negative)
        return Conditioning(
            self.encode_chunks(cond, clip_skip)[0], self.encode_chunks(uncond, clip_skip)[0]
        )


class XLPromptEncoder:
    """SDXL's two text encoders (CLIP-L, then OpenCLIP-bigG with its projection) behind the
    `PromptEncoder` interface the engine and its extra networks use."""

    def __init__(self, pipe: Any) -> None:
        self.first = PromptEncoder(pipe.tokenizer, pipe.text_encoder, PENULTIMATE)
        self.second = PromptEncoder(pipe.tokenizer_2, pipe.text_encoder_2, PENULTIMATE)

    @property
    def active_embeddings(self) -> set[str]:
        return self.first.active_embeddings

    @active_embeddings.setter
    def active_embeddings(self, names: set[str]) -> None:
        self.first.active_embeddings = set(names)
        self.second.active_embeddings = set(names)

    def add_embedding_file(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """An SDXL textual inversion: `clip_l` vectors for CLIP-L, `clip_g` for bigG."""
        first, second = embedding_vectors(state, "clip_l"), embedding_vectors(state, "clip_g")
        if first.shape[0] != second.shape[0]:
            raise ValueError(f"clip_l has {first.shape[0]} vectors, clip_g {second.shape[0]}")
        self.first.add_embedding(name, first)
        self.second.add_embedding(name, second)

    def encode_pair(self, prompt: str, negative: str, clip_skip: int) -> Conditioning:
        """Both encoders' embeddings side by side, bigG's pooled output; zeros for an empty
        negative prompt. `clip_skip` is ignored, as the webui does for SDXL."""
        embeds, pooled = [], []
        for encoder in (self.first, self.second):
            cond_chunks, uncond_chunks = encoder.chunk_pair(prompt, negative)
            cond, cond_pooled = encoder.encode_chunks(cond_chunks, clip_skip)
            uncond, uncond_pooled = encoder.encode_chunks(uncond_chunks, clip_skip)
            embeds.append((cond, uncond))
            pooled.append((cond_pooled, uncond_pooled))
        cond = torch.cat([c for c, _ in embeds], dim=-1)
        uncond = torch.cat([u for _, u in embeds], dim=-1)
        cond_pooled, uncond_pooled = pooled[1]
        assert cond_pooled is not None and uncond_pooled is not None  # bigG has a projection
        if not negative:
            uncond, uncond_pooled = torch.zeros_like(uncond), torch.zeros_like(uncond_pooled)
        return Conditioning(cond, uncond, cond_pooled, uncond_pooled)
