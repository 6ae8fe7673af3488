"""The work in one image, for the cost model on docs/deploy-aws.md: the floating-point operations
of one UNet step (with classifier-free guidance: a batch of 2) and of the VAE decode, counted by
torch's FlopCounterMode on the shipped configs with random weights, and the seconds one such
step takes on this machine's CPU in fp32 (the Lambda fleet's precision).

Counting needs no real weights and no GPU: the operations of a step depend only on the
architecture and the size. Seconds are measured for SD 1.5 at 512x512 (a 64x64 latent).

Run: .venv/bin/python -m benchmarks.work_per_image [--timed-steps 3]
Writes benchmarks/results/work_per_image.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import write_result

CONFIGS = Path(__file__).resolve().parents[1] / "layers" / "sdcore" / "sdcore" / "configs"
# (config, image size, text embedding width, SDXL's added conditioning)
MODELS = {"sd15": (512, 768, False), "sdxl": (1024, 2048, True)}


def _inputs(unet: UNet2DConditionModel, size: int, width: int, sdxl: bool) -> dict[str, Any]:
    latent = size // 8
    inputs: dict[str, Any] = {
        "sample": torch.randn(2, 4, latent, latent),
        "timestep": torch.tensor(500),
        "encoder_hidden_states": torch.randn(2, 77, width),
    }
    if sdxl:
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 1280),
                                       "time_ids": torch.randn(2, 6)}  # fmt: skip
    return inputs


def count(config: str, size: int, width: int, sdxl: bool) -> dict[str, float]:
    """GFLOPs of one guided UNet step and of one VAE decode (2 FLOPs a multiply-add)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIGS / config / "unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(CONFIGS / config / "vae"))
        inputs = _inputs(unet, size, width, sdxl)
        latent = torch.randn(1, 4, size // 8, size // 8)
    with FlopCounterMode(display=False) as unet_flops, torch.no_grad():
        unet(**inputs)
    with FlopCounterMode(display=False) as vae_flops, torch.no_grad():
        vae.decode(latent)
    return {
        "unet_step_gflops": round(unet_flops.get_total_flops() / 1e9, 1),
        "vae_decode_gflops": round(vae_flops.get_total_flops() / 1e9, 1),
    }


def time_step(config: str, size: int, width: int, steps: int) -> float:
    """Seconds of one guided SD UNet step on this CPU in fp32 (random weights), the median of
    `steps` after one warm-up."""
    unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(CONFIGS / config / "unet")
    ).eval()
    inputs = _inputs(unet, size, width, False)
    times = []
    with torch.no_grad():
        unet(**inputs)
        for _ in range(steps):
            start = time.perf_counter()
            unet(**inputs)
            times.append(time.perf_counter() - start)
    return round(sorted(times)[len(times) // 2], 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timed-steps", type=int, default=3)
    args = parser.parse_args()
    runs = {}
    for config, (size, width, sdxl) in MODELS.items():
        runs[config] = {"size": size, **count(config, size, width, sdxl)}
    runs["sd15"]["cpu_fp32_step_s"] = time_step("sd15", 512, 768, args.timed_steps)
    runs["sd15"]["cpu_threads"] = torch.get_num_threads()
    write_result(
        "work_per_image",
        {
            "what": "GFLOPs of one UNet step with classifier-free guidance (batch 2) and of one "
            "VAE decode, at the native size; seconds of one such SD 1.5 step on this CPU, fp32",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
