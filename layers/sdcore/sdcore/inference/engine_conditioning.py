"""Prompt -> text-encoder embeddings the way the webui builds them (SD 1.x/2.x CLIP).

Each 77-position chunk from `prompting.chunk_prompt` is encoded on its own and the results are
concatenated, so prompts have no 75-token limit. Emphasis is the webui's default ("Original"):
the hidden states are multiplied by each token's multiplier, then rescaled so the chunk's mean is
what it was. `clip_skip` N > 1 takes the output of the N-th layer from the end, through the final
layer norm, as the webui's "Clip skip" does.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from sdcore.errors import InvalidInputError
from sdcore.inference.prompting import (
    Chunk,
    Vocabulary,
    chunk_prompt,
    extract_networks,
    parse_prompt_attention,
)


class PromptEncoder:
    """Encodes prompts with one checkpoint's tokenizer and text encoder."""

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
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
    def encode_chunks(self, chunks: list[Chunk], clip_skip: int) -> torch.Tensor:
        """(1, 77 x len(chunks), hidden) embeddings, emphasis applied per chunk."""
        if not 1 <= clip_skip <= self.layers:
            raise InvalidInputError(
                "clip_skip", f"must be 1..{self.layers} for this text encoder, got {clip_skip}"
            )
        device = self.text_encoder.device
        parts = []
        for chunk in chunks:
            ids = torch.tensor([chunk.tokens], device=device)
            out = self.text_encoder(ids, output_hidden_states=clip_skip > 1)
            if clip_skip > 1:
                z = out.hidden_states[-clip_skip]
                z = self._final_norm(z)
            else:
                z = out.last_hidden_state
            weights = torch.tensor(chunk.multipliers, device=device, dtype=z.dtype)
            if bool((weights != 1).any()):
                mean = z.mean()
                z = z * weights[None, :, None]
                # the webui's rescale; skipped when the mean is ~0 (an untrained final layer
                # norm), where the ratio would be noise that can flip the embedding's sign
                if mean.abs() > 1e-4 * z.abs().mean():
                    z = z * (mean / z.mean())
            parts.append(z)
        return torch.cat(parts, dim=1)

    def encode_pair(
        self, prompt: str, negative: str, clip_skip: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt, negative prompt) embeddings with the same number of chunks: the shorter is
        padded with empty chunks (the webui's "pad prompt/negative prompt to be same length"),
        since diffusers runs both through the UNet as one batch."""
        cond = self.chunks(prompt, "prompt")
        uncond = self.chunks(negative, "negative_prompt")
        empty = self.empty_chunk()
        cond += [empty] * (len(uncond) - len(cond))
        uncond += [empty] * (len(cond) - len(uncond))
        return self.encode_chunks(cond, clip_skip), self.encode_chunks(uncond, clip_skip)
