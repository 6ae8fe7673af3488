"""Evaluate the shapes demo model through the serving engine: does it draw what the prompt says?

For every (color, shape, background) with color != background (8 x 3 x 7 = 168) and several
seeds, generate one picture through `DiffusersEngine` at the webui defaults (the default sampler,
step count and CFG scale of `GenerationParams`, native size), read it back with
`sdlocal.demo.shapes.classify` and count how often the shape color, the background and the shape
are right. The short prompts (`{color} {shape}`, white background) are scored separately.

Usage (from the repository root)::

    HF_HUB_OFFLINE=1 PYTHONPATH=layers/sdcore:local:. .venv/bin/python scripts/eval_demo_model.py
    # other settings, e.g. another sampler: --sampler "DPM++ 2M" --steps 20 --cfg 7

Writes `benchmarks/results/demo_model_eval.json`. Goals: color >= 90 %, background >= 90 %,
shape >= 80 %.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/transformers: never the hub

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "layers" / "sdcore", ROOT / "local", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

from sdcore.domain.models import GenerationParams, TaskKind  # noqa: E402
from sdcore.engine.diffusers_engine import DiffusersEngine  # noqa: E402
from sdcore.ports import EngineInputs  # noqa: E402
from sdlocal.demo import shapes  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "demo-shapes.safetensors"
DEFAULT_CONFIG = ROOT / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "demo_model_eval.json"
GOALS = {"color": 0.90, "background": 0.90, "shape": 0.80}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def score(
    engine: DiffusersEngine,
    cases: list[tuple[str, tuple[str, str, str]]],
    seeds: list[int],
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Generate and classify every (prompt, expected) case for every seed."""
    hits: Counter[str] = Counter()
    confusion: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    times: list[float] = []
    for prompt, (color, shape, background) in cases:
        for seed in seeds:
            params = GenerationParams(kind=TaskKind.TXT2IMG, prompt=prompt, seed=seed, **overrides)
            started = time.perf_counter()
            image = engine.run(params, EngineInputs(), lambda _info: False).images[0]
            times.append(time.perf_counter() - started)
            reading = shapes.read(image)
            ok = {
                "color": reading.color == color,
                "shape": reading.shape == shape,
                "background": reading.background == background,
            }
            hits.update(k for k, v in ok.items() if v)
            hits["all"] += all(ok.values())
            confusion[f"{shape}->{reading.shape}"] += 1
            if not all(ok.values()):
                failures.append(
                    {
                        "prompt": prompt,
                        "seed": seed,
                        "got": list(reading.as_tuple()),
                        "fill": round(reading.fill, 3),
                    }
                )
    total = len(cases) * len(seeds)
    return {
        "images": total,
        "accuracy": {k: round(hits[k] / total, 4) for k in ("color", "background", "shape", "all")},
        "shape_confusion": dict(sorted(confusion.items())),
        "seconds_per_image": round(sum(times) / len(times), 4),
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 per combination")
    parser.add_argument("--sampler", help="default: GenerationParams' default sampler")
    parser.add_argument("--steps", type=int, help="default: GenerationParams' default")
    parser.add_argument("--cfg", type=float, help="default: GenerationParams' default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {}
    if args.sampler:
        overrides["sampler"] = args.sampler
    if args.steps:
        overrides["steps"] = args.steps
    if args.cfg is not None:
        overrides["guidance"] = args.cfg
    defaults = GenerationParams(kind=TaskKind.TXT2IMG, **overrides)

    digest = sha256(args.model)
    engine = DiffusersEngine(
        args.model, args.model.stem, digest, config_dir=args.config, device="cpu"
    )
    engine.load()
    seeds = list(range(args.seeds))
    long_cases = [(shapes.prompt_for(c, s, b), (c, s, b)) for c, s, b in shapes.combinations()]
    short_cases = [
        (shapes.prompt_for(c, s), (c, s, shapes.DEFAULT_BACKGROUND))
        for c in shapes.COLORS
        for s in shapes.SHAPES
        if c != shapes.DEFAULT_BACKGROUND
    ]
    started = time.perf_counter()
    main_result = score(engine, long_cases, seeds, overrides)
    short_result = score(engine, short_cases, seeds, overrides)
    acc = main_result["accuracy"]
    result = {
        "model": {
            "path": str(
                args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
            ),
            "sha256": digest,
            "size": args.model.stat().st_size,
        },
        "settings": {
            "sampler": defaults.sampler,
            "steps": defaults.steps,
            "cfg_scale": defaults.guidance,
            "size": "x".join(map(str, engine.native_size)),
            "seeds": seeds,
            "device": engine.device,
            "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
        },
        "goals": GOALS,
        "meets_goals": all(acc[k] >= v for k, v in GOALS.items()),
        "combinations": len(long_cases),
        **main_result,
        "short_prompts": short_result,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s = short_result["accuracy"]
    print(
        f"{main_result['images']} images ({len(long_cases)} combinations x {len(seeds)} seeds), "
        f"{defaults.sampler} {defaults.steps} steps CFG {defaults.guidance:g}: "
        f"color {acc['color']:.1%}, background {acc['background']:.1%}, shape {acc['shape']:.1%}, "
        f"all three {acc['all']:.1%}; short prompts: color {s['color']:.1%}, background "
        f"{s['background']:.1%}, shape {s['shape']:.1%}; "
        f"{main_result['seconds_per_image'] * 1e3:.0f} ms per image -> {args.out}"
    )
    return 0 if result["meets_goals"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
