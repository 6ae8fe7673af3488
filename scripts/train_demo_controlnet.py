"""Train the demo ControlNet: a canny-conditioned ControlNet for the shapes demo checkpoint
(`models/demo-shapes.safetensors`) whose control image places the shape: the canny map of a
circle at the top left plus `a blue circle` gives a blue circle at the top left.

Everything comes from data this script draws itself with fixed seeds, on the CPU:

1. the demo checkpoint is opened with the serving engine's own loader (`open_pipeline`, the
   single file and its `configs/demo-shapes` folder); its UNet, VAE and text encoder stay frozen;
2. a pool of examples (`sdlocal.demo.control`: one shape at a random position and size, the
   demo's prompt forms plus `a {color} {shape}`) is drawn; each picture is encoded once by the
   VAE (posterior mean and std), each control image is the picture's canny map (the webui canny
   preprocessor's thresholds, white edges on black), each distinct prompt is encoded once;
3. `ControlNetModel.from_unet(unet)` (the UNet's encoder copied, zero convolutions) is trained
   alone: epsilon prediction on the demo's own noise schedule, its error weighted like
   v-prediction's (the x0 error weighted 1 + min(SNR, 5)) and half the timesteps drawn skewed
   towards high noise, both because the layout the control sets is decided at high noise; the
   control embedding's last conv starts random (the zero convolutions still start at zero);
   25 % empty prompts (so the control works under classifier-free guidance and without a
   prompt); 800 steps of batch 16, AdamW at 2e-4 (a fine-tuning rate: the encoder copy is
   trained) with cosine decay, EMA of the weights;
4. the EMA weights are written as a diffusers ControlNetModel folder in fp16
   (`models/demo-controlnet/`: config.json + diffusion_pytorch_model.safetensors, which the admin
   upload takes as an uncompressed tar), loaded back and checked on a few held-out examples.

Usage (from the repository root; ~20 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 PYTHONPATH=layers/sdcore:local:. \\
        .venv/bin/python scripts/train_demo_controlnet.py
    # a quick smoke run of the whole path (a minute or two), written elsewhere:
    ... scripts/train_demo_controlnet.py --smoke --out /tmp/democn/controlnet

The real run writes its timings and the weights' sha256 to
`benchmarks/results/demo_controlnet_training.json`; the same seeds and thread count give the
same weights, bit for bit.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers: never the hub
# OpenMP threads that wait for each other sleep instead of spinning: on a busy machine spinning
# threads burn the time slices the working ones need (the arithmetic is the same either way)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "layers" / "sdcore", ROOT / "local", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import ControlNetModel, DDPMScheduler  # noqa: E402

from sdcore.engine.checkpoints import open_pipeline  # noqa: E402
from sdlocal.demo import control, shapes  # noqa: E402

DEFAULT_CHECKPOINT = ROOT / "models" / "demo-shapes.safetensors"
DEFAULT_CONFIG = ROOT / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"
DEFAULT_OUT = ROOT / "models" / "demo-controlnet"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "demo_controlnet_training.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
SIZE = shapes.SIZE
# the control image (64 px) down to the latent grid (8 px): three stride-2 convs
CONDITIONING_CHANNELS = (16, 32, 64, 128)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def control_tensor(edges: np.ndarray) -> torch.Tensor:
    """(n, h, w) uint8 edge maps -> (n, 3, h, w) float in [0, 1], as the ControlNet pipeline
    feeds a control image."""
    x = torch.from_numpy(edges).float().div(255.0)[:, None]
    return x.expand(-1, 3, -1, -1).contiguous()


# --- the pool of examples --------------------------------------------------------------------


def build_pool(pipe: Any, n: int, seed: int) -> dict[str, Any]:
    """`n` examples: VAE posterior (mean, std), canny edge maps, prompt indices, and the text
    encoder's states of every distinct prompt (the empty one last)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    means, stds = [], []
    edges = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    prompts: list[str] = []
    with torch.no_grad():
        for i in range(0, n, 256):
            m = min(256, n - i)
            pictures = np.empty((m, SIZE, SIZE, 3), dtype=np.uint8)
            for j in range(m):
                pictures[j], ctrl, example = control.sample(rng)
                edges[i + j] = ctrl[..., 0]
                prompts.append(example.prompt)
            dist = pipe.vae.encode(to_tensor(pictures)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    distinct = sorted(set(prompts)) + [""]
    index = {p: k for k, p in enumerate(distinct)}
    ids = pipe.tokenizer(
        distinct,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        states = torch.cat([pipe.text_encoder(ids[i : i + 64])[0] for i in range(0, len(ids), 64)])
    log(
        f"pool: {n} examples, {len(distinct)} distinct prompts, "
        f"{time.perf_counter() - started:.0f}s"
    )
    return {
        "mean": torch.cat(means),
        "std": torch.cat(stds),
        "edges": edges,
        "prompt": torch.tensor([index[p] for p in prompts]),
        "states": states,
        "empty": len(distinct) - 1,
    }


def timesteps(n: int, total: int, high: float, gen: torch.Generator) -> torch.Tensor:
    """`n` training timesteps: a share `high` drawn with a density growing linearly with the
    noise level (where a picture's layout is decided, so where the control matters most), the
    rest uniform."""
    u = torch.rand(n, generator=gen)
    skewed = torch.rand(n, generator=gen) < high
    u = torch.where(skewed, u.sqrt(), u)
    return (u * total).long().clamp(max=total - 1)


# --- training --------------------------------------------------------------------------------


def train(args: argparse.Namespace, pipe: Any, pool: dict[str, Any]) -> ControlNetModel:
    unet, scaling = pipe.unet, float(pipe.vae.config.scaling_factor)
    torch.manual_seed(args.seed + 1)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    # the control embedding's last conv starts random, not zero: the zero convolutions at the
    # outputs keep the UNet unchanged at first either way, and the control reaches the
    # ControlNet's features (and their gradients) from the first step
    net.controlnet_cond_embedding.conv_out.reset_parameters()
    log(f"ControlNet: {sum(p.numel() for p in net.parameters()) / 1e6:.3f} M params")
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)  # the demo's betas
    acp = noise_sched.alphas_cumprod
    snr = acp / (1 - acp)
    # epsilon prediction, its squared error weighted so that it is the error of the predicted
    # x0 weighted 1 + min(SNR, gamma): a v-prediction-like loss, min-SNR clamped at low noise.
    # Plain epsilon loss weights x0's error by the SNR itself, ~0 at the high noise levels where
    # a picture's layout (what the control says) is decided.
    weight = (1 + torch.clamp(snr, max=args.snr_gamma)) / snr
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = copy.deepcopy(net).eval()
    ema_params = list(ema.parameters())
    for p in ema_params:
        p.requires_grad_(False)

    gen = torch.Generator().manual_seed(args.seed + 2)
    mean, std, states = pool["mean"], pool["std"], pool["states"]
    n = len(mean)
    started = time.perf_counter()
    net.train()
    running = 0.0
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, warmup=args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        pick = torch.randint(0, n, (args.batch,), generator=gen)
        latents = (mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=gen)) * scaling
        which = pool["prompt"][pick].clone()
        which[torch.rand(args.batch, generator=gen) < args.uncond_p] = pool["empty"]
        hidden = states[which]
        cond = control_tensor(pool["edges"][pick.numpy()])
        noise = torch.randn(latents.shape, generator=gen)
        t = timesteps(args.batch, noise_sched.config.num_train_timesteps, args.high_t, gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        down, mid = net(noisy, t, hidden, controlnet_cond=cond, return_dict=False)
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        pred = unet(noisy, t, hidden, **residuals).sample
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            with torch.no_grad():  # the same batch without the control: what it adds
                bare = unet(noisy, t, hidden).sample
                without = ((((bare - noise) ** 2).mean(dim=(1, 2, 3))) * weight[t]).mean()
            elapsed = time.perf_counter() - started
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            log(
                f"step {step:5d}/{args.steps} loss {running:.4f} (batch {loss.item():.4f}, "
                f"without control {without.item():.4f}) lr {lr:.2e} {elapsed:.0f}s (eta {eta:.0f}s)"
            )
    log(f"ControlNet done in {time.perf_counter() - started:.0f}s")
    return ema


# --- write and check -------------------------------------------------------------------------


def write(net: ControlNetModel, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(net).to(torch.float16)
    half.save_pretrained(out, safe_serialization=True)
    for path in out.iterdir():
        path.chmod(0o644)  # committed files, readable by the stack's workers
    weights = out / WEIGHTS
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return {"path": str(out), "size": weights.stat().st_size, "sha256": digest}


def check(pipe: Any, out: Path, seed: int, count: int) -> dict[str, float]:
    """Load the written folder back and generate `count` held-out examples (Euler, 20 steps,
    CFG 7): the share whose shape centroid is within 4 px of the control's."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    net = ControlNetModel.from_pretrained(out, torch_dtype=torch.float32, local_files_only=True)
    cn = StableDiffusionControlNetPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        controlnet=net,
        scheduler=EulerDiscreteScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="linspace"
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    cn.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(seed)
    distances = []
    for i in range(count):
        _, ctrl, example = control.sample(rng)
        image = cn(
            example.prompt,
            image=Image.fromarray(ctrl),
            num_inference_steps=20,
            guidance_scale=7.0,
            height=SIZE,
            width=SIZE,
            generator=torch.Generator().manual_seed(seed + i),
        ).images[0]
        got = control.centroid(image)
        cx, cy = example.centre
        distances.append(math.hypot(got[0] - cx, got[1] - cy) if got else float(SIZE))
    within = sum(d <= 4 for d in distances) / count
    result = {"within_4px": within, "median_px": float(np.median(distances)), "images": count}
    log(f"check on {count} held-out examples: {result}")
    return result


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, help="default: the benchmark file (real run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pool", type=int, default=4096, help="examples drawn and encoded")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--snr-gamma", type=float, default=5.0)
    parser.add_argument("--uncond-p", type=float, default=0.25)
    parser.add_argument("--high-t", type=float, default=0.5, help="share of skewed timesteps")
    parser.add_argument("--check", type=int, default=24, help="held-out examples generated")
    parser.add_argument("--smoke", action="store_true", help="tiny step counts: test the path")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pool, args.steps, args.warmup, args.check = 512, 30, 5, 2
    results = args.results or (args.out.parent / "training.json" if args.smoke else DEFAULT_RESULTS)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    log(f"training the demo ControlNet: {vars(args)}")
    pipe = open_pipeline(args.checkpoint, args.config, torch.float32, allow_pickle=False).pipe
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    pool = build_pool(pipe, args.pool, seed=args.seed + 1000)
    t_pool = time.perf_counter() - t0
    net = train(args, pipe, pool)
    t_train = time.perf_counter() - t0 - t_pool
    total = time.perf_counter() - t0
    info = write(net, args.out)
    log(f"wrote {info}")
    log(
        f"training wall time: load + pool {t_pool:.0f}s, ControlNet {t_train:.0f}s, "
        f"total {total:.0f}s ({total / 60:.1f} min)"
    )
    score = check(pipe, args.out, seed=10_000 + args.seed, count=args.check)
    summary = {
        "benchmark": "demo_controlnet_training",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads},
        "command": " ".join(["scripts/train_demo_controlnet.py", *(argv or sys.argv[1:])]),
        **{k: v for k, v in info.items() if k != "path"},
        "out": relative(args.out),
        "wall_s": {"pool": round(t_pool), "controlnet": round(t_train), "total": round(total)},
        "total_min": round(total / 60, 1),
        "check": score,
        "args": {k: relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"summary -> {results}")


if __name__ == "__main__":
    main()
