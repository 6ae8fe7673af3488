"""Switching checkpoints: 12 requests interleaved over 3 checkpoints (a, b, c, a, b, c, ...).

The stack gives each checkpoint its own warm worker, so it loads each once; the baseline is one
process that loads the requested checkpoint for every request (what a single webui instance
does when requests for many checkpoints arrive). Both times include their cold starts (the
baseline runs in a fresh process, import of torch/diffusers included).

Run: .venv/bin/python -m benchmarks.switching [--arch sd15|tiny]. `sd15` builds an SD 1.5-size
checkpoint with random weights from the shipped config (fp16 single file, ~2 GB; loading it
costs what a real one does; the picture is noise); `tiny` uses the demo architecture.
Writes benchmarks/results/switching.json. Goal (issue 5): exactly 3 loads, >= 3x faster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import write_result
from sdlocal.client import upload_model
from tests.support_stack import REPO, RunningStack

CONFIGS = REPO / "layers" / "sdcore" / "sdcore" / "configs"
NAMES = ("ckpt-a", "ckpt-b", "ckpt-c")
REQUEST = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 1}


def build_checkpoint(arch: str, path: Path) -> Path:
    """A single-file checkpoint of the architecture in configs/<arch>, random weights, fp16."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdlocal.demo.tiny import to_ldm_state_dict

    cfg = str(CONFIGS / arch)
    torch.manual_seed(0)

    class Parts:  # what to_ldm_state_dict reads
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(cfg, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg, subfolder="vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg, subfolder="text_encoder"))

    state = {k: v.half() for k, v in to_ldm_state_dict(Parts).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


BASELINE = """
import json, sys, time
start = time.perf_counter()
from pathlib import Path
from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import EngineInputs
path, config = Path(sys.argv[1]), Path(sys.argv[2])
order, request = json.loads(sys.argv[3]), json.loads(sys.argv[4])
params = GenerationParams(kind=TaskKind.TXT2IMG, prompt=request["prompt"], steps=request["steps"],
                          width=request["width"], height=request["height"], seed=request["seed"])
loads = 0
for name in order:
    engine = DiffusersEngine(path, name, "0" * 64, config_dir=config, device="cpu")
    engine.load()  # a single instance swaps to the requested checkpoint
    loads += 1
    engine.run(params, EngineInputs(), lambda step: False)
    del engine
print(json.dumps({"loads": loads, "total_s": time.perf_counter() - start}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=("sd15", "tiny-sd"), default="sd15")
    args = parser.parse_args()
    order = [NAMES[i % 3] for i in range(12)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = build_checkpoint(args.arch, root / "ckpt.safetensors")
        stack = RunningStack(root / "stack", SD_MAX_CONCURRENCY="2", SD_MAX_PER_MODEL="1",
                             SD_IDLE_SECONDS="600").start()  # fmt: skip
        try:
            for name in NAMES:  # the same file under three names: three checkpoints
                upload_model(stack.url, ckpt, name, config=args.arch,
                             api_key=stack.credentials["admin_key"])  # fmt: skip
            with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=600) as api:
                started = time.perf_counter()
                ids = [
                    api.post("/txt2img", json={**REQUEST, "stable_diffusion_model": name},
                             headers={"Request-Type": "async"}).json()["taskId"]
                    for name in order
                ]  # fmt: skip
                results = {}
                while len(results) < len(ids) and time.perf_counter() - started < 1800:
                    for task_id in ids:
                        if task_id not in results:
                            body = api.get(f"/tasks/{task_id}/result").json()
                            if body["status"] in ("succeeded", "failed", "cancelled"):
                                results[task_id] = body
                    time.sleep(0.1)
                stack_s = time.perf_counter() - started
        finally:
            stack.stop()
        assert all(r["status"] == "succeeded" for r in results.values()), results
        stack_loads = len({r["info"]["worker_pid"] for r in results.values()})
        base = subprocess.run(
            [sys.executable, "-c", BASELINE, str(ckpt), str(CONFIGS / args.arch),
             json.dumps(order), json.dumps(REQUEST)],
            capture_output=True, text=True, check=True,
            env={"PYTHONPATH": str(REPO / "layers" / "sdcore"), "HF_HUB_OFFLINE": "1",
                 "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        baseline = json.loads(base.stdout.strip().splitlines()[-1])
        size = ckpt.stat().st_size
    write_result(
        "switching",
        {
            "arch": args.arch,
            "checkpoint_bytes": size,
            "requests": order,
            "request": REQUEST,
            "stack": {"loads": stack_loads, "total_s": round(stack_s, 2)},
            "one_process_swapping": {
                "loads": baseline["loads"],
                "total_s": round(baseline["total_s"], 2),
            },
            "speedup": round(baseline["total_s"] / stack_s, 2),
        },
    )


if __name__ == "__main__":
    main()
