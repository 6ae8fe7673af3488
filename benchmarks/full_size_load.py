"""Full-size SD 2.x and SDXL single files through the real loading path, with `config: auto`.

For each architecture: a random-weight model of the real size is built from the shipped config
(fp16), written as one `.safetensors` file in the webui (LDM) key layout, then loaded in a fresh
process by `DiffusersEngine` with no config given, so the architecture is read from the keys and
the shipped config chosen, as a registered `auto` checkpoint is; then one 64x64 2-step image is
generated. The pictures are noise (random weights); this measures that real-size files of each
layout load with the shipped configs, how long that takes and the memory it needs.

Run: .venv/bin/python -m benchmarks.full_size_load [--arch sd2 sdxl]
Writes benchmarks/results/full_size_load.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result

LOAD = """
import json, resource, sys, time
started = time.perf_counter()
from sdcore.domain.models import GenerationParams
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import EngineInputs
imported = time.perf_counter()
engine = DiffusersEngine(sys.argv[1], "full-size", "0" * 64, config_dir=None, device="cpu")
engine.load()
loaded = time.perf_counter()
params = GenerationParams(
    kind="txt2img", prompt="a lighthouse", steps=2, width=64, height=64, seed=1
)
result = engine.run(params, EngineInputs(), lambda info: False)
done = time.perf_counter()
print(json.dumps({
    "architecture": engine.architecture,
    "prediction_type": engine.model.scheduler_config["prediction_type"],
    "native_size": list(engine.native_size),
    "import_s": round(imported - started, 2),
    "load_s": round(loaded - imported, 2),
    "generate_64px_2_steps_s": round(done - loaded, 2),
    "image_size": list(result.images[0].size),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}))
"""

BUILD = """
import sys, time, torch
from safetensors.torch import save_file
from sdlocal.demo import tiny
torch.set_default_dtype(torch.float16)
pipe = tiny.build_pipeline(seed=0, name=sys.argv[1])
state = tiny.to_ldm_state_dict(pipe, tiny.ARCHITECTURES[sys.argv[1]])
del pipe
save_file(state, sys.argv[2], metadata={"format": "pt"})
"""


def run_arch(arch: str, root: Path) -> dict[str, object]:
    path = root / f"{arch}.safetensors"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BUILD, arch, str(path)], check=True)
    built = time.perf_counter() - started
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)], check=True, capture_output=True, text=True
    )
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    path.unlink()
    return {"config": arch, "file_bytes": size, "build_and_write_s": round(built, 1), **measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["sd2", "sdxl"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_arch(arch, Path(tmp)) for arch in args.arch]
    for run in runs:
        print(json.dumps(run))
    write_result(
        "full_size_load",
        {
            "what": "random-weight full-size fp16 single files (LDM layout) loaded with no "
            "config (auto): architecture from the keys, shipped config, CPU fp32",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
