"""The webui's `randn_source: NV`: the normal noise an NVIDIA GPU's `torch.randn` draws, drawn
on any device (numpy), so a seed gives the picture a webui on an NVIDIA card gives.

torch draws CUDA normals with curand's Philox4x32-10: thread i of a call uses the counter
(offset, 0, i, 0) and the key (seed's low 32 bits, high 32 bits), and turns the first two words
of the block into one normal by Box-Muller (sine branch). A generator's offset goes up by one at
each call, as the webui's generator does. Checked against Philox's published known-answer
vectors and against CUDA's `torch.randn` at seed 0.

diffusers draws the samplers' later noise with `randn_tensor(shape, generator=...)`; `install`
lets every loaded diffusers module's `randn_tensor` take these generators (others go on to
diffusers' own), and this project's samplers call `randn_tensor` from here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.utils import torch_utils

_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_LOW = np.uint64(0xFFFFFFFF)
# the constants as the webui writes them (float32), so its numbers come out bit for bit
_INV = np.float32(2.3283064e-10)  # 2**-32
_INV_2PI = np.float32(2.3283064e-10 * 6.2831855)


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (x & _LOW).astype(np.uint32), (x >> np.uint64(32)).astype(np.uint32)


def philox4x32(
    counter: Sequence[np.ndarray], key: Sequence[np.ndarray], rounds: int = 10
) -> list[np.ndarray]:
    """Philox4x32 (Salmon et al. 2011) on arrays of counters and keys, word by word."""
    c = [np.asarray(w, np.uint32) for w in counter]
    k0, k1 = np.asarray(key[0], np.uint32), np.asarray(key[1], np.uint32)
    for r in range(rounds):
        if r:
            k0, k1 = k0 + _W[0], k1 + _W[1]
        lo0, hi0 = _split(c[0].astype(np.uint64) * _M[0])
        lo1, hi1 = _split(c[2].astype(np.uint64) * _M[1])
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return c


class PhiloxGenerator:
    """A seeded source of CUDA-like normals; each `randn` call moves to the next offset."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        n = math.prod(shape)
        index = np.arange(n, dtype=np.uint32)
        zeros = np.zeros(n, np.uint32)
        key = _split(np.full(n, self.seed & 0xFFFFFFFFFFFFFFFF, np.uint64))
        words = philox4x32([np.full(n, self.offset, np.uint32), zeros, index, zeros], key)
        self.offset += 1
        u = words[0] * _INV + _INV / 2
        v = words[1] * _INV_2PI + _INV_2PI / 2
        return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(tuple(shape))

    def randn_tensor(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self.randn(shape))


_diffusers_randn = torch_utils.randn_tensor


def randn_tensor(shape: Any, generator: Any = None, **kwargs: Any) -> torch.Tensor:
    """diffusers' `randn_tensor`, which also takes Philox generators (one, or one per image)."""
    gens = generator if isinstance(generator, list) else [generator]
    if not gens or not isinstance(gens[0], PhiloxGenerator):
        return _diffusers_randn(shape, generator=generator, **kwargs)
    shape = tuple(shape)
    if len(gens) == 1:
        noise = gens[0].randn_tensor(shape)
    else:  # one draw per image, as the webui draws each image's noise from its generator
        noise = torch.cat([g.randn_tensor((1, *shape[1:])) for g in gens])
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    return noise.to(device=device or "cpu", dtype=dtype or torch.float32)


def install() -> None:
    """Every loaded diffusers module's `randn_tensor` takes Philox generators too (the ones
    loaded when a run starts: its pipeline and scheduler). Idempotent."""
    for name, module in list(sys.modules.items()):
        own = getattr(module, "randn_tensor", None)
        if name.startswith("diffusers.") and own is _diffusers_randn:
            module.randn_tensor = randn_tensor  # type: ignore[attr-defined]
