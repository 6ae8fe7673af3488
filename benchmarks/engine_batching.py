"""Dynamic batching in the engine: N compatible txt2img tasks (one batch key: 64x64, 20 Euler
steps, CFG 7, each its own prompt and seed) as one `run_batch` call against the same tasks run
one by one with `run`, on the shipped demo checkpoint (the tiny random-weight model where the
demo file is absent). The two ways alternate, a few repeats each; the medians are reported, as
images per second (and the fastest repeat's, the least disturbed by other work on a shared
machine), with the largest pixel difference between the two ways' pictures.

`--checkpoint sd15` runs them instead on a random-weight checkpoint of SD 1.5's real size
(built in a subprocess as `benchmarks.full_size_load` builds it, fp16 on disk, loaded by the
engine with no config given: fp32 on a CPU), e.g. at 512x512 with few steps where a CPU is
slow; `--no-warmup` skips the warm-up calls there (minutes each on a CPU).

Run: .venv/bin/python -m benchmarks.engine_batching [--tasks 8] [--repeats 5] [--device auto]
     [--checkpoint demo|sd15] [--size 64] [--steps 20] [--no-warmup]
Writes benchmarks/results/engine_batching.json (for sd15:
`engine_batching_sd15_<size>_<tasks>_tasks_<steps>_steps.json`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: nothing may reach the hub

import numpy as np
import torch

from benchmarks.common import write_result
from benchmarks.full_size_load import BUILD
from sdcore.domain.models import GenerationParams
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import BatchItem, EngineInputs, EngineResult, StepInfo
from sdlocal.demo import tiny

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "models" / "demo-shapes.safetensors"
CONFIG = REPO / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"
PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]


def _engine(device: str, checkpoint: str, root: Path) -> tuple[DiffusersEngine, str]:
    if checkpoint == "sd15":
        path = root / "sd15.safetensors"
        subprocess.run([sys.executable, "-c", BUILD, "sd15", str(path)], check=True)
        engine = DiffusersEngine(path, "sd15-size", "", config_dir=None, device=device)
        name = "SD 1.5-size random weights (fp16 single file, config auto)"
    elif CHECKPOINT.exists():
        engine = DiffusersEngine(CHECKPOINT, "demo", "", config_dir=CONFIG, device=device)
        name = "demo (shipped demo-shapes checkpoint)"
    else:
        path = tiny.save_single_file(Path(tempfile.mkdtemp()) / "tiny-sd.safetensors")
        engine = DiffusersEngine(path, "tiny-sd", "", config_dir=tiny.CONFIG_DIR, device=device)
        name = "tiny-sd (random weights; models/demo-shapes.safetensors absent)"
    engine.load()
    return engine, name


def _items(tasks: int, size: int, steps: int) -> list[BatchItem]:
    def params(i: int) -> GenerationParams:
        return GenerationParams(kind="txt2img", prompt=PROMPTS[i % len(PROMPTS)], seed=100 + i,
                                subseed=1, steps=steps, width=size, height=size, guidance=7.0,
                                sampler="Euler")  # fmt: skip

    return [BatchItem(params(i), EngineInputs(), _go_on) for i in range(tasks)]


def _go_on(_info: StepInfo) -> bool:
    return False


def _batched(engine: DiffusersEngine, items: list[BatchItem]) -> list[EngineResult]:
    answers = engine.run_batch(items)
    assert all(isinstance(a, EngineResult) for a in answers), answers
    return [a for a in answers if isinstance(a, EngineResult)]


def _alone(engine: DiffusersEngine, items: list[BatchItem]) -> list[EngineResult]:
    return [engine.run(i.params, i.inputs, i.on_step) for i in items]


def _max_diff(a: list[EngineResult], b: list[EngineResult]) -> int:
    return max(
        int(np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max())
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra.images, rb.images, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint", choices=("demo", "sd15"), default="demo")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine, model = _engine(args.device, args.checkpoint, Path(tmp))
    items = _items(args.tasks, args.size, args.steps)
    if args.warmup:  # the first call of a shape allocates and picks kernels
        _batched(engine, items)
        _alone(engine, items[:1])
    seconds: dict[str, list[float]] = {"batched": [], "alone": []}
    last: dict[str, Any] = {}
    for _ in range(args.repeats):
        for way, run in (("batched", _batched), ("alone", _alone)):
            start = time.perf_counter()
            last[way] = run(engine, items)
            if engine.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[way].append(time.perf_counter() - start)
    median = {way: statistics.median(s) for way, s in seconds.items()}
    batch_info = last["batched"][0].info["batch"]
    write_result(
        "engine_batching"
        if args.checkpoint == "demo"
        else f"engine_batching_sd15_{args.size}_{args.tasks}_tasks_{args.steps}_steps",
        {
            "what": f"{args.tasks} txt2img tasks ({args.size}x{args.size}, {args.steps} Euler "
            "steps, CFG 7, own prompts and seeds) as one run_batch call vs one run each; "
            f"median of {args.repeats} alternating repeats"
            + ("" if args.warmup else ", no warm-up call"),
            "model": model,
            "device": engine.device,
            "torch_threads": torch.get_num_threads(),
            "batch": batch_info,
            "seconds": {way: [round(s, 3) for s in v] for way, v in seconds.items()},
            "median_s": {way: round(s, 3) for way, s in median.items()},
            # the fastest repeat: the least disturbed where other work shares the CPU
            "best_s": {way: round(min(s), 3) for way, s in seconds.items()},
            "images_per_s": {way: round(args.tasks / s, 2) for way, s in median.items()},
            "images_per_s_best": {way: round(args.tasks / min(s), 2) for way, s in seconds.items()},
            "speedup": round(median["alone"] / median["batched"], 2),
            "max_pixel_difference": _max_diff(last["batched"], last["alone"]),
        },
    )


if __name__ == "__main__":
    main()
