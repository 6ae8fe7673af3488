"""Prompt filter cost with a 15,000-term list (half ASCII words, half Chinese).

Run: PYTHONPATH=layers/sdcore .venv/bin/python -m benchmarks.prompt_filter (the Makefile exports
PYTHONPATH). Writes benchmarks/results/prompt_filter.json.
Times the build once and `find` on ~200-character prompts (clean English, clean Chinese, mixed,
and one that hits a term), p50/p99 over 10,000 checks in total.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from sdcore.guards.prompt_filter import PromptFilter

RESULTS = Path(__file__).parent / "results"
TERMS = 15_000
CHECKS = 10_000
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _terms(rng: random.Random) -> list[str]:
    terms: set[str] = set()
    while len(terms) < TERMS:
        if len(terms) % 2:
            terms.add("".join(rng.choices(LETTERS, k=rng.randint(4, 12))))
        else:
            terms.add("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(2, 4))))
    return sorted(terms)


def _prompts(rng: random.Random, blocked: str) -> dict[str, str]:
    english = (
        "a photograph of an old lighthouse at dusk, dramatic clouds, volumetric light, "
        "highly detailed, 35mm film grain, masterpiece, best quality, ultra sharp focus, "
        "soft rim lighting, by a famous landscape photographer, trending on artstation"
    )[:200]
    chinese = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(200))
    mixed = (english[:100] + chinese[:100])[:200]
    hit = english[:150] + " " + blocked + " " + english[150:]
    return {"english": english, "chinese": chinese, "mixed": mixed, "hit": hit[:200]}


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    rng = random.Random(42)
    terms = _terms(rng)
    start = time.perf_counter()
    pf = PromptFilter(terms)
    build_s = time.perf_counter() - start
    ascii_terms = [t for t in terms if t.isascii()]
    prompts = _prompts(rng, ascii_terms[0])
    assert pf.find(prompts["hit"])

    per_kind: dict[str, dict[str, float]] = {}
    all_us: list[float] = []
    for kind, prompt in prompts.items():
        pf.find(prompt)  # warm
        samples = []
        for _ in range(CHECKS // len(prompts)):
            t0 = time.perf_counter_ns()
            pf.find(prompt)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        all_us += samples
        per_kind[kind] = {
            "chars": len(prompt),
            "blocked": pf.find(prompt),
            "p50_us": round(_pct(samples, 50), 2),
            "p99_us": round(_pct(samples, 99), 2),
        }

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "terms": len(pf),
        "build_s": round(build_s, 4),
        "checks": len(all_us),
        "check_p50_us": round(_pct(all_us, 50), 2),
        "check_p99_us": round(_pct(all_us, 99), 2),
        "check_max_us": round(max(all_us), 2),
        "by_prompt": per_kind,
        "note": "2 shared CPU cores; numbers say where time goes, not a pass/fail line",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prompt_filter.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
