"""What the `sd` commands that make a task share: a progress bar until the task ends, the
download of its pictures, and the answer printed as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sdlocal.client import TERMINAL_STATUSES, Client, Progress, TaskResult


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _wait_with_bar(client: Client, task_id: str) -> TaskResult:
    from tqdm import tqdm

    with tqdm(total=100, unit="%", desc=task_id[:12], bar_format="{l_bar}{bar}| {postfix}") as bar:

        def on_progress(p: Progress) -> None:
            state = p.get("state") or {}
            bar.n = round(100 * float(p.get("progress") or 0.0))
            postfix: str = p["status"]
            if state.get("samplingSteps"):
                postfix += f" step {state['samplingStep']}/{state['samplingSteps']}"
            if (state.get("jobCount") or 0) > 1:
                postfix += f" job {state.get('jobNo', 0) + 1}/{state['jobCount']}"
            if p["status"] == "running" and p.get("etaRelative"):
                postfix += f" eta {p['etaRelative']:.1f}s"
            bar.set_postfix_str(postfix, refresh=False)
            bar.refresh()

        return client.wait(task_id, on_progress=on_progress, poll_s=0.3)


def finish(client: Client, args: argparse.Namespace, answer: TaskResult) -> int:
    """Wait (--wait), download (--wait or --out), print the result; 1 if the task failed."""
    if args.async_ and not args.wait:
        print_json(answer)
        return 0
    result = answer
    if args.wait and answer["status"] not in TERMINAL_STATUSES:
        result = _wait_with_bar(client, answer["taskId"])
    elif answer["status"] not in TERMINAL_STATUSES:  # a sync request that outlasted the wait
        print_json(answer)
        print(
            f"task {answer['taskId']} is still {answer['status']}: "
            f"`sd tasks show {answer['taskId']}` later, or use --wait",
            file=sys.stderr,
        )
        return 0
    out: dict[str, Any] = dict(result)
    out_dir = args.out if args.out is not None else (Path(".") if args.wait else None)
    if result["status"] == "succeeded" and out_dir is not None:
        out["files"] = [str(p) for p in client.download(result, out_dir)]
    print_json(out)
    if result["status"] != "succeeded":
        reason = result.get("error") or result["status"]
        print(f"task {result['taskId']} {result['status']}: {reason}", file=sys.stderr)
        return 1
    return 0
