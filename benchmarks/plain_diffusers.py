"""Plain diffusers in a process of its own, what a user who skipped the service would run: the
comparison side of the serving benchmarks (`overhead`, `thread_share`).

`StableDiffusionPipeline.from_single_file` on the shipped demo checkpoint with its config
folder, webui "Euler" (built from the checkpoint's scheduler config), CFG 7, one CPU generator
seeded 1, a PIL image out. One call per request: `run(size, steps, threads)` answers its seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support_stack import REPO

PROMPT = "a red circle on a white background"
CHECKPOINT = REPO / "models" / "demo-shapes.safetensors"
CONFIG = REPO / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"

SCRIPT = """
import json, sys, time
import torch
from diffusers import StableDiffusionPipeline
from sdcore.engine.schedulers import make_scheduler
ckpt, config, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
pipe = StableDiffusionPipeline.from_single_file(ckpt, config=config, local_files_only=True,
                                                torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
base = dict(pipe.scheduler.config)
print("ready", flush=True)
for line in sys.stdin:  # "size steps threads": run once, answer the seconds it took
    size, steps, threads = map(int, line.split())
    torch.set_num_threads(threads)
    pipe.scheduler = make_scheduler("Euler", "Automatic", base)
    start = time.perf_counter()
    pipe(prompt=prompt, num_inference_steps=steps, guidance_scale=7.0, width=size, height=size,
         generator=torch.Generator("cpu").manual_seed(1), output_type="pil")
    print(json.dumps(time.perf_counter() - start), flush=True)
"""


class PlainDiffusers:
    """The pipeline loaded once in its own process; one call per `run`."""

    def __init__(self, prompt: str = PROMPT) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(CHECKPOINT), str(CONFIG), prompt],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "layers" / "sdcore"),
                 "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, size: int, steps: int, threads: int) -> float:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{size} {steps} {threads}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
