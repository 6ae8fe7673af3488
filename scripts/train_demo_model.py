"""Train the shapes demo model: a tiny SD 1.x-architecture text-to-image model that draws what its
prompt says (`a {color} {shape} on a {background} background`, see `sdlocal.demo.shapes`).

Everything comes from data this script draws itself with fixed seeds, on the CPU:

1. the VAE (AutoencoderKL, 4 levels = 8x like SD, 4 latent channels) alone, for reconstruction
   (L1 + MSE and a small KL term); its PSNR is measured on held-out pictures;
2. a pool of pictures encoded once (posterior mean and std); the std of the sampled latents
   gives the VAE's `scaling_factor`;
3. the UNet (UNet2DConditionModel with cross-attention) and the CLIP text encoder jointly:
   epsilon prediction, SD's scaled_linear noise schedule, min-SNR loss weighting (gamma 5),
   10 % empty prompts (for classifier-free guidance), EMA of the weights, AdamW + cosine;
4. the EMA weights written as ONE single-file checkpoint in the original LDM/webui key layout
   (UNet + VAE + text encoder, fp16), next to the config folder it loads with
   (`configs/demo-shapes`), then loaded back through the serving engine as a check.

Usage (from the repository root; ~40 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 PYTHONPATH=layers/sdcore:local:. .venv/bin/python scripts/train_demo_model.py
    # a quick smoke run of the whole path (a minute or two), written elsewhere:
    ... scripts/train_demo_model.py --smoke --out /tmp/demo/demo.safetensors \\
        --config-out /tmp/demo/config
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers: never the hub

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "layers" / "sdcore", ROOT / "local", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDPMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from scripts import make_clip_tokenizer  # noqa: E402
from sdlocal.demo import shapes  # noqa: E402
from sdlocal.demo.tiny import to_ldm_state_dict  # noqa: E402

DEFAULT_OUT = ROOT / "models" / "demo-shapes.safetensors"
DEFAULT_CONFIG = ROOT / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"

SIZE = shapes.SIZE  # 64: native picture side
LATENT = SIZE // 8

VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [16, 32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,  # 16 groups of 1 channel each learn colors far slower
    "sample_size": SIZE,
    "scaling_factor": 1.0,  # measured after the VAE is trained
}
UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [64, 128, 128],
    "center_input_sample": False,
    "cross_attention_dim": 64,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 16,
    "sample_size": LATENT,
    "use_linear_projection": False,
}
TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 64,
    "hidden_act": "quick_gelu",
}
# SD 1.x's own noise schedule and scheduler config: every webui sampler is built from it
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- configs ---------------------------------------------------------------------------------


def write_configs(out: Path, scaling_factor: float) -> CLIPTokenizer:
    """The config folder single-file checkpoints of this architecture load with."""
    out.mkdir(parents=True, exist_ok=True)
    version = {"_diffusers_version": "0.42.1"}
    encoder, merges = make_clip_tokenizer.build(make_clip_tokenizer.word_merges(list(shapes.WORDS)))
    make_clip_tokenizer.write(out / "tokenizer", encoder, merges)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer", local_files_only=True)
    for word in shapes.WORDS:  # each grammar word is one token
        assert len(tokenizer(word).input_ids) == 3, word

    def dump(sub: str, name: str, data: dict[str, Any]) -> None:
        (out / sub).mkdir(exist_ok=True)
        (out / sub / name).write_text(json.dumps(data, indent=2) + "\n")

    dump(
        "vae",
        "config.json",
        {
            "_class_name": "AutoencoderKL",
            **version,
            **VAE_CONFIG,
            "scaling_factor": round(scaling_factor, 5),
        },
    )
    dump("unet", "config.json", {"_class_name": "UNet2DConditionModel", **version, **UNET_CONFIG})
    dump(
        "scheduler",
        "scheduler_config.json",
        {"_class_name": "PNDMScheduler", **version, **SCHEDULER_CONFIG},
    )
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    text = {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": start,
        "dropout": 0.0,
        "eos_token_id": end,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_text_model",
        "pad_token_id": end,
        "torch_dtype": "float32",
        "vocab_size": len(tokenizer),
        **TEXT_CONFIG,
    }
    dump("text_encoder", "config.json", text)
    index = {
        "_class_name": "StableDiffusionPipeline",
        **version,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return tokenizer


# --- data ------------------------------------------------------------------------------------


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[shapes.Scene]]:
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    scenes = []
    for i in range(n):
        images[i], scene = shapes.sample(rng, SIZE)
        scenes.append(scene)
    return images, scenes


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --- phase 1: VAE ----------------------------------------------------------------------------


def psnr(vae: AutoencoderKL, images: np.ndarray) -> float:
    """PSNR (dB, 8-bit pixels) of the posterior-mean reconstruction."""
    errors = []
    with torch.no_grad():
        for i in range(0, len(images), 128):
            x = to_tensor(images[i : i + 128])
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            a = (x + 1) * 127.5
            b = torch.round((y + 1) * 127.5)
            errors.append(((a - b) ** 2).mean(dim=(1, 2, 3)))
    mse = torch.cat(errors).mean().item()
    return 10 * math.log10(255**2 / mse)


def train_vae(args: argparse.Namespace, held_out: np.ndarray) -> tuple[AutoencoderKL, float]:
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_config(dict(VAE_CONFIG))
    if args.vae_logvar_init is not None:
        # start from a near-deterministic posterior (std e^(init/2)) instead of std ~1, which
        # drowns the decoder's input in noise until the encoder learns to shrink it
        latent = VAE_CONFIG["latent_channels"]
        with torch.no_grad():
            vae.quant_conv.weight[latent:].mul_(0.1)
            vae.quant_conv.bias[latent:].fill_(args.vae_logvar_init)
    log(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.3f} M params")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(args.seed + 1)
    started = time.perf_counter()
    vae.train()
    for step in range(args.vae_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.vae_steps, args.vae_lr, warmup=100)
        images, _ = batch(rng, args.vae_batch)
        x = to_tensor(images)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.vae_autocast)):
            posterior = vae.encode(x).latent_dist
            y = vae.decode(posterior.sample()).sample
        y = y.float()
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        kl = posterior.kl().float().mean()  # summed over the latent, averaged over the batch
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            elapsed = time.perf_counter() - started
            log(
                f"vae {step:5d}/{args.vae_steps} rec {rec.item():.4f} kl {kl.item():.1f} "
                f"{elapsed:.0f}s"
            )
        if step and step % 800 == 0:
            vae.eval()
            log(f"vae {step:5d} PSNR {psnr(vae, held_out[:128]):.2f} dB (128 held-out)")
            vae.train()
    vae.eval()
    quality = psnr(vae, held_out)
    log(f"VAE done in {time.perf_counter() - started:.0f}s; held-out PSNR {quality:.2f} dB")
    return vae, quality


# --- phase 2: latent pool --------------------------------------------------------------------


def encode_pool(
    vae: AutoencoderKL, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], float]:
    """Posterior (mean, std) of `n` fresh pictures, their prompts, and the latent std."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means, stds, prompts = [], [], []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, n, 256):
            images, scenes = batch(rng, min(256, n - i))
            dist = vae.encode(to_tensor(images)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
            prompts.extend(s.prompt for s in scenes)
    mean, std = torch.cat(means), torch.cat(stds)
    gen = torch.Generator().manual_seed(seed)
    sampled = mean + std * torch.randn(mean.shape, generator=gen)
    latent_std = sampled.std().item()
    log(
        f"encoded {n} pictures in {time.perf_counter() - started:.0f}s; latent mean "
        f"{sampled.mean().item():.3f} std {latent_std:.3f}"
    )
    return mean, std, prompts, latent_std


# --- phase 3: UNet + text encoder ------------------------------------------------------------


def train_unet(
    args: argparse.Namespace,
    tokenizer: CLIPTokenizer,
    pool: tuple[torch.Tensor, torch.Tensor, list[str]],
    scaling_factor: float,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    mean, std, prompts = pool
    torch.manual_seed(args.seed + 2)
    unet = UNet2DConditionModel.from_config(dict(UNET_CONFIG))
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **TEXT_CONFIG,
    )
    text_encoder = CLIPTextModel(text_config)
    log(
        f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.3f} M params; text encoder: "
        f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.3f} M"
    )

    # token ids of every distinct prompt (and the empty one), padded to 77 like the pipeline
    distinct = sorted(set(prompts) | {""})
    ids = tokenizer(
        distinct, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    index = {p: i for i, p in enumerate(distinct)}
    prompt_idx = torch.tensor([index[p] for p in prompts])
    empty = index[""]

    noise_sched = DDPMScheduler.from_config(SCHEDULER_CONFIG)  # the same betas as at inference
    acp = noise_sched.alphas_cumprod
    snr = acp / (1 - acp)
    weight = torch.clamp(snr, max=args.snr_gamma) / snr  # min-SNR-gamma for epsilon prediction

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    for p in ema_params:
        p.requires_grad_(False)

    gen = torch.Generator().manual_seed(args.seed + 3)
    n = len(mean)
    started = time.perf_counter()
    unet.train()
    text_encoder.train()
    running = 0.0
    for step in range(args.unet_steps):
        lr = lr_at(step, args.unet_steps, args.unet_lr, warmup=args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, n, (args.batch,), generator=gen)
        latents = mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=gen)
        latents = latents * scaling_factor
        which = prompt_idx[pick].clone()
        which[torch.rand(args.batch, generator=gen) < args.uncond_p] = empty
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (args.batch,), generator=gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        hidden = text_encoder(ids[which])[0]
        pred = unet(noisy, t, hidden).sample
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 50 == 0 or step == args.unet_steps - 1:
            elapsed = time.perf_counter() - started
            eta = elapsed / (step + 1) * (args.unet_steps - step - 1)
            log(
                f"unet {step:5d}/{args.unet_steps} loss {running:.4f} lr {lr:.2e} "
                f"{elapsed:.0f}s (eta {eta:.0f}s)"
            )
    log(f"UNet done in {time.perf_counter() - started:.0f}s")
    return ema_unet, ema_text


# --- phase 4: write and check ----------------------------------------------------------------


def pipeline(unet: Any, vae: Any, text_encoder: Any, config_dir: Path) -> Any:
    tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer", local_files_only=True)
    scheduler = PNDMScheduler.from_pretrained(config_dir, subfolder="scheduler")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_checkpoint(pipe: Any, out: Path) -> dict[str, Any]:
    state = {k: v.to(torch.float16) for k, v in to_ldm_state_dict(pipe).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt"})
    out.chmod(0o644)  # a committed file, readable by the stack's workers
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {"path": str(out), "size": out.stat().st_size, "sha256": digest}


def check_engine(out: Path, config_dir: Path, sha: str, seeds: int) -> dict[str, float]:
    """Load the written file through the serving engine and score a sample of prompts."""
    from sdcore.domain.models import GenerationParams, TaskKind
    from sdcore.engine.diffusers_engine import DiffusersEngine
    from sdcore.ports import EngineInputs

    engine = DiffusersEngine(out, "demo-shapes", sha, config_dir=config_dir, device="cpu")
    engine.load()
    combos = shapes.combinations()[::7]  # 24 of the 168, every shape and color
    hits = {"color": 0, "shape": 0, "background": 0}
    total = 0
    started = time.perf_counter()
    for color, shape, background in combos:
        for seed in range(seeds):
            params = GenerationParams(
                kind=TaskKind.TXT2IMG, prompt=shapes.prompt_for(color, shape, background), seed=seed
            )
            image = engine.run(params, EngineInputs(), lambda _info: False).images[0]
            got = shapes.classify(image)
            hits["color"] += got[0] == color
            hits["shape"] += got[1] == shape
            hits["background"] += got[2] == background
            total += 1
    score = {k: v / total for k, v in hits.items()}
    log(
        f"engine check on {total} images ({(time.perf_counter() - started) / total * 1e3:.0f} "
        f"ms each): {score}"
    )
    return score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--config-out", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-steps", type=int, default=2600)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-kl", type=float, default=1e-6)
    parser.add_argument("--vae-logvar-init", type=float, default=-6.0)
    parser.add_argument("--vae-autocast", type=int, default=1, help="bf16 autocast for the VAE")
    parser.add_argument("--pool", type=int, default=16384, help="pictures encoded for the UNet")
    parser.add_argument("--unet-steps", type=int, default=3300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--snr-gamma", type=float, default=5.0)
    parser.add_argument("--uncond-p", type=float, default=0.1)
    parser.add_argument("--check-seeds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny step counts: test the path")
    args = parser.parse_args(argv)
    if args.smoke:
        args.vae_steps, args.pool, args.unet_steps, args.warmup = 30, 512, 30, 5
        args.check_seeds = 1

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    log(f"training the shapes demo model: {vars(args)}")
    held_out, _ = shapes.dataset(512, seed=args.seed + 1000)

    vae, quality = train_vae(args, held_out)
    t_vae = time.perf_counter() - t0

    mean, std, prompts, latent_std = encode_pool(vae, args.pool, seed=args.seed + 2000)
    scaling_factor = 1.0 / latent_std
    vae.register_to_config(scaling_factor=round(scaling_factor, 5))
    tokenizer = write_configs(args.config_out, scaling_factor)
    t_pool = time.perf_counter() - t0 - t_vae

    unet, text_encoder = train_unet(
        args, tokenizer, (mean, std, prompts), float(vae.config.scaling_factor)
    )
    t_unet = time.perf_counter() - t0 - t_vae - t_pool
    total = time.perf_counter() - t0

    pipe = pipeline(unet, vae, text_encoder, args.config_out)
    info = write_checkpoint(pipe, args.out)
    log(f"wrote {info}")
    log(
        f"training wall time: VAE {t_vae:.0f}s, latent pool {t_pool:.0f}s, UNet {t_unet:.0f}s, "
        f"total {total:.0f}s ({total / 60:.1f} min)"
    )
    score = check_engine(args.out, args.config_out, info["sha256"], args.check_seeds)
    summary = {
        **info,
        "vae_psnr_db": round(quality, 2),
        "scaling_factor": float(vae.config.scaling_factor),
        "wall_s": {
            "vae": round(t_vae),
            "pool": round(t_pool),
            "unet": round(t_unet),
            "total": round(total),
        },
        "engine_check": score,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    log("summary " + json.dumps(summary))


if __name__ == "__main__":
    main()
