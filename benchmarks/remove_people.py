"""Where a removal's time goes at 512x512: segmenting the person (the built-in MediaPipe selfie
segmenter) against inpainting the mask (the shipped demo checkpoint, the engine's real img2img
inpainting path), on the astronaut photo. Bounded: a few removals, a fixed step count.

The inpainting share depends on the checkpoint and the device (the demo checkpoint is small; an
SD 1.5 checkpoint costs some 30x more per step): the segmenter's share is what this measures.

Run: .venv/bin/python -m benchmarks.remove_people [--runs 2] [--steps 20] [--device cpu]
(about 2 minutes a run on 2 CPU cores, most of it the inpainting.)
Writes benchmarks/results/remove_people.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import write_result
from sdcore.configs import config_dir
from sdcore.domain.models import GenerationParams
from sdcore.domain.removal import RemoveSpec
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.segmenters import MediapipePersonSegmenter
from sdcore.ports import EngineInputs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.data.fetch_photos import fetch  # noqa: E402

SIDE = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    photo = Image.open(fetch()).convert("RGB")
    assert photo.size == (SIDE, SIDE)

    started = time.perf_counter()
    segmenter = MediapipePersonSegmenter()
    segmenter_load_s = time.perf_counter() - started
    alone = []
    for _ in range(20):
        t = time.perf_counter()
        segmenter.segment(photo, "person", 0.5)
        alone.append(time.perf_counter() - t)
    segmenter.close()

    model = REPO / "models" / "demo-shapes.safetensors"
    engine = DiffusersEngine(model, "demo", "0" * 64, config_dir=config_dir("demo-shapes"),
                             device=args.device)  # fmt: skip
    engine.load()
    spec = RemoveSpec(dilate=16, blur=8)
    params = GenerationParams(kind="img2img", prompt="an empty room", steps=args.steps, seed=1,
                              width=SIDE, height=SIDE, denoising_strength=1.0,
                              inpainting_fill=0, remove=spec)  # fmt: skip
    # a small removal first: it creates the engine's segmenter and warms the pipeline up
    small = params.model_copy(update={"width": 64, "height": 64, "steps": 2})
    engine.run(small, EngineInputs(init_images=[photo]), lambda _: False)
    timed = []
    for _ in range(args.runs):
        t = time.perf_counter()
        result = engine.run(params, EngineInputs(init_images=[photo]), lambda _: False)
        timed.append((time.perf_counter() - t, result.info))
    segment = statistics.median(info["segment_s"] for _, info in timed)
    inpaint = statistics.median(info["inpaint_s"] for _, info in timed)
    total = statistics.median(t for t, _ in timed)
    write_result(
        "remove_people",
        {
            "photo": "scikit-image astronaut, 512x512",
            "segmenter": "mediapipe-selfie-segmentation (CPU, TFLite XNNPACK)",
            "checkpoint": "demo (shipped demo-shapes)",
            "device": engine.device,
            "steps": args.steps,
            "runs": args.runs,
            "mask": {
                "dilate": spec.dilate,
                "blur": spec.blur,
                "coverage": timed[-1][1]["maskCoverage"],
            },  # fmt: skip
            "segmenter_load_s": round(segmenter_load_s, 3),
            "segment_alone_median_s": round(statistics.median(alone), 4),
            "segment_median_s": round(segment, 4),
            "inpaint_median_s": round(inpaint, 3),
            "total_median_s": round(total, 3),
            "segment_share": round(segment / total, 4),
        },
    )


if __name__ == "__main__":
    main()
