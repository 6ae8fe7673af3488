"""What the NSFW censor costs the inference function per picture: the open_nsfw classifier
(onnxruntime, CPU) loaded once, then scoring pictures of the sizes the API makes. Pictures are
random noise (the cost does not depend on the content: the classifier resizes to 224x224).

Run: .venv/bin/python -m benchmarks.censor_cost [--pictures 20]
Writes benchmarks/results/censor_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image

from benchmarks.common import write_result
from sdcore.adapters.censor.opennsfw import OpenNsfwCensor

SIZES = (64, 512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pictures", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    censor = OpenNsfwCensor()
    started = time.perf_counter()
    censor.scores([Image.new("RGB", (64, 64))])  # the session is built on first use
    load_s = time.perf_counter() - started
    per_size: dict[str, dict[str, float]] = {}
    for side in SIZES:
        picture = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        times = []
        for _ in range(args.pictures):
            t = time.perf_counter()
            censor.scores([picture])
            times.append(time.perf_counter() - t)
        per_size[f"{side}x{side}"] = {
            "median_s": round(statistics.median(times), 4),
            "max_s": round(max(times), 4),
        }
    write_result(
        "censor_cost",
        {
            "classifier": censor.name,
            "pictures_per_size": args.pictures,
            "first_use_s": round(load_s, 3),
            "per_picture": per_size,
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
