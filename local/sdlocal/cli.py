"""`sd`: the API from the command line.

    sd txt2img "a red circle" --steps 20 --wait --out images/
    sd img2img "a blue circle" --image in.png --mask mask.png --denoise 0.6 --wait
    sd tasks list --status succeeded --limit 5
    sd tasks show TASK_ID | sd tasks cancel TASK_ID
    sd models list [--type lora] | sd models show sd15 | sd models delete sd15
    sd models upload model.safetensors --name sd15 [--update] (resumes when run again)
    sd models import https://host/model.safetensors --name sd15 [--sha256 HEX]
    sd templates list|get|put|delete|export|import ... | sd batch PROMPT --folder TAG

--url (env SD_URL, default http://127.0.0.1:7860); --key (env SD_API_KEY, else the local stack's
${SD_DATA_DIR:-./local-data}/credentials.json: admin_key for `models upload|import|show|delete`,
user_key otherwise; admin_key for --shared templates). Exit status: 0 ok, 1 API error or failed
task (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from sdlocal import cli_assist, cli_templates
from sdlocal.cli_results import finish, print_json
from sdlocal.client import (
    AdminModel,
    ApiError,
    ChecksumError,
    Client,
    UploadEvent,
)

DEFAULT_URL = "http://127.0.0.1:7860"
MODEL_TYPES = ["checkpoint", "vae", "lora", "embedding", "upscaler", "controlnet",
               "face_restorer", "captioner", "tagger", "segmenter",
               "preprocessor"]  # fmt: skip
ADMIN_COMMANDS = {("models", a) for a in ("upload", "import", "show", "delete", "rename")}


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


def resolve_key(args: argparse.Namespace) -> str | None:
    """--key, else SD_API_KEY, else the local stack's credentials file (admin key for the admin
    commands, the user key otherwise); None when there is none."""
    if args.key:
        return str(args.key)
    path = Path(os.environ.get("SD_DATA_DIR") or "./local-data") / "credentials.json"
    if not path.is_file():
        return None
    try:
        creds = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    admin = (args.command, getattr(args, "action", None)) in ADMIN_COMMANDS
    wanted = "admin_key" if admin or getattr(args, "shared", False) else "user_key"
    key = creds.get(wanted) if isinstance(creds, dict) else None
    return str(key) if key else None


# --- generation ------------------------------------------------------------------------------


def _generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--negative", help="negative prompt")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--sampler", help="sampler_name, e.g. 'Euler a'")
    parser.add_argument("--cfg", type=float, help="cfg_scale")
    parser.add_argument("--batch", type=int, help="batch_size")
    parser.add_argument("--model", help="stable_diffusion_model")
    parser.add_argument(
        "--async", dest="async_", action="store_true", help="answer the task id at once"
    )
    parser.add_argument(
        "--wait", action="store_true", help="show progress until the task ends, then download"
    )
    parser.add_argument("--out", type=Path, help="download the images here (--wait: default .)")


def _common_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "negative_prompt": args.negative,
        "seed": args.seed,
        "steps": args.steps,
        "cfg_scale": args.cfg,
        "width": args.width,
        "height": args.height,
        "sampler_name": args.sampler,
        "batch_size": args.batch,
        "stable_diffusion_model": args.model,
    }


def cmd_txt2img(client: Client, args: argparse.Namespace) -> int:
    answer = client.txt2img(args.prompt, async_=args.async_ or args.wait, **_common_fields(args))
    return finish(client, args, answer)


def cmd_img2img(client: Client, args: argparse.Namespace) -> int:
    for path in (args.image, args.mask):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path}")
    answer = client.img2img(
        args.prompt,
        [args.image],
        mask=args.mask,
        denoising_strength=args.denoise,
        async_=args.async_ or args.wait,
        **_common_fields(args),
    )
    return finish(client, args, answer)


def cmd_remove(client: Client, args: argparse.Namespace) -> int:
    if not args.photo.is_file():
        raise UsageError(f"no such file: {args.photo}")
    args.wait = not args.async_  # the progress bar until the task ends, then the download
    answer = client.remove(
        args.photo,
        prompt=args.prompt,
        target=args.target,
        segmenter=args.segmenter,
        mask_mode="box" if args.box else None,
        dilate=args.dilate,
        blur=args.blur,
        denoising_strength=args.denoise,
        async_=True,
        **_common_fields(args),
    )
    return finish(client, args, answer)


def _remove_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photo", type=Path, help="the photo file")
    parser.add_argument("--prompt", default="", help="what to paint instead")
    parser.add_argument("--target", help="the class to remove (default: person)")
    parser.add_argument("--segmenter", help="a registered segmenter model (default: built-in)")
    parser.add_argument("--box", action="store_true", help="mask its bounding boxes")
    parser.add_argument("--dilate", type=int, help="px the mask grows by")
    parser.add_argument("--blur", type=int, help="px of blur on the mask's edge")
    parser.add_argument("--denoise", type=float, help="denoising_strength 0..1")
    for flag, kind, help_ in [("--negative", str, "negative prompt"), ("--steps", int, None),
                              ("--seed", int, None), ("--width", int, None),
                              ("--height", int, None), ("--sampler", str, "sampler_name"),
                              ("--cfg", float, "cfg_scale"),
                              ("--model", str, "stable_diffusion_model")]:  # fmt: skip
        parser.add_argument(flag, type=kind, help=help_)
    parser.add_argument(
        "--async", dest="async_", action="store_true", help="answer the task id at once"
    )
    parser.add_argument("--out", type=Path, help="download the photo and mask here (default .)")
    parser.set_defaults(run=cmd_remove, batch=None)


# --- tasks and models ------------------------------------------------------------------------


def cmd_tasks(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        print_json(list(client.list_tasks(status=args.status, limit=args.limit)))
    elif args.action == "show":
        print_json(client.result(args.task_id))
    else:
        print_json(client.cancel(args.task_id))
    return 0


class _ByteBars:
    """One tqdm byte bar per phase (sha256, upload, download, verify), shown one after the
    other: starting a phase closes the bar of the one before."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def show(self, phase: str, done: int, total: int | None) -> Any:
        from tqdm import tqdm

        bar = self.bars.get(phase)
        if bar is None:
            self.close()
            bar = self.bars[phase] = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=phase
            )
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        return bar

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _upload(client: Client, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    size = args.file.stat().st_size
    bars = _ByteBars()

    def on_progress(event: UploadEvent) -> None:
        if event.phase == "hash":
            bars.show("sha256", event.bytes_done, size)
            if event.sha256:
                bars.close()
                print(f"sha256 {event.sha256}", file=sys.stderr)
        elif event.phase == "part":
            bar = bars.show("upload", event.bytes_done, size)
            if event.skipped:
                bar.write(f"part {event.part_number} already on the server: skipped")
        elif event.phase == "verify":
            bars.show("verify", event.bytes_done, size)
        else:
            bars.close()

    try:
        done = client.upload_model(
            args.file,
            args.name,
            type=args.type,
            config=args.config,
            parallel=args.parallel,
            on_progress=on_progress,
            update=args.update,
        )
    finally:
        bars.close()
    print_json(done)
    return 0


def _import(client: Client, args: argparse.Namespace) -> int:
    bars = _ByteBars()

    def on_progress(model: AdminModel) -> None:
        pending = model.get("pending")
        if pending:
            phase = "download" if pending["stage"] == "importing" else "verify"
            bars.show(phase, pending["bytesDone"], pending.get("size") or None)

    try:
        model = client.import_model(
            args.source,
            args.name,
            type=args.type,
            sha256=args.sha256,
            config=args.config,
            update=args.update,
            on_progress=on_progress,
        )
    finally:
        bars.close()
    print_json(model)
    return 0


def cmd_models(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        print_json([m for m in client.models() if args.type in (None, m["type"])])
        return 0
    if args.action == "upload":
        return _upload(client, args)
    if args.action == "import":
        return _import(client, args)
    if args.action == "show":
        print_json(client.admin_model(args.name))
        return 0
    if args.action == "rename":
        print_json(client.rename_model(args.name, args.new_name))
        return 0
    print_json(client.delete_model(args.name))
    return 0


# --- entry point -----------------------------------------------------------------------------


def _connection_args(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--url", default=default, help=f"API base URL (env SD_URL, default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--key",
        default=default,
        help="API key (env SD_API_KEY, else ${SD_DATA_DIR:-./local-data}/credentials.json)",
    )
    parser.add_argument("--timeout", type=float, default=default, help="HTTP timeout in seconds")


def _new_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True)
    parser.add_argument("--type", default="checkpoint", choices=MODEL_TYPES)
    parser.add_argument(
        "--config", default="auto", help="auto (default: from the file), sd15, sd2, sdxl, ..."
    )
    parser.add_argument("--update", action="store_true", help="a new version of a model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sd", description="Client of the serverless Stable Diffusion API."
    )
    _connection_args(parser, argparse.SUPPRESS)
    # the same options after the command too (`sd tasks list --url ...`)
    common = argparse.ArgumentParser(add_help=False)
    _connection_args(common, argparse.SUPPRESS)
    parser.set_defaults(
        url=os.environ.get("SD_URL") or DEFAULT_URL,
        key=os.environ.get("SD_API_KEY") or None,
        timeout=60.0,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    txt2img = commands.add_parser("txt2img", parents=[common], help="text to image")
    _generation_args(txt2img)
    txt2img.set_defaults(run=cmd_txt2img)

    img2img = commands.add_parser(
        "img2img", parents=[common], help="image to image (inpainting with --mask)"
    )
    _generation_args(img2img)
    img2img.add_argument("--image", type=Path, required=True, help="init image file")
    img2img.add_argument("--mask", type=Path, help="mask image file (white = repaint)")
    img2img.add_argument("--denoise", type=float, help="denoising_strength 0..1")
    img2img.set_defaults(run=cmd_img2img)

    remove = commands.add_parser(
        "remove", parents=[common], help="remove people (or another class) from a photo"
    )
    _remove_args(remove)

    tasks = commands.add_parser("tasks", help="list, show or cancel tasks")
    task_actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = task_actions.add_parser(
        "list", parents=[common], help="your tasks, newest first (JSON)"
    )
    listing.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    task_actions.add_parser("show", parents=[common], help="a task's result (JSON)").add_argument(
        "task_id"
    )
    task_actions.add_parser("cancel", parents=[common], help="cancel a task").add_argument(
        "task_id"
    )
    tasks.set_defaults(run=cmd_tasks)

    models = commands.add_parser("models", help="list, upload, import, show or delete models")
    model_actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = model_actions.add_parser(
        "list", parents=[common], help="the models and their status (JSON)"
    )
    listing.add_argument("--type", choices=MODEL_TYPES, help="only models of this type")
    upload = model_actions.add_parser(
        "upload", parents=[common], help="upload a model file (admin key; resumes)"
    )
    upload.add_argument("file", type=Path)
    _new_model_args(upload)
    upload.add_argument("--parallel", type=int, default=4, help="parts in flight (default 4)")
    imported = model_actions.add_parser(
        "import", parents=[common], help="import a model from an http(s) URL (admin key)"
    )
    imported.add_argument("source", metavar="URL", help="http(s) address of the model file")
    imported.add_argument("--sha256", help="the file's SHA-256, checked if given")
    _new_model_args(imported)
    model_actions.add_parser(
        "show", parents=[common], help="one model, with an upload or import in progress (admin)"
    ).add_argument("name")
    rename = model_actions.add_parser("rename", parents=[common], help="rename a model (admin)")
    rename.add_argument("name")
    rename.add_argument("new_name")
    model_actions.add_parser(
        "delete", parents=[common], help="delete a model (admin key)"
    ).add_argument("name")
    models.set_defaults(run=cmd_models)
    cli_templates.add_commands(commands, common)
    cli_assist.add_commands(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if getattr(args, "limit", None) is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if getattr(args, "parallel", None) is not None and args.parallel < 1:
        parser.error("--parallel must be at least 1")
    try:
        with Client(args.url, api_key=resolve_key(args), timeout=args.timeout) as client:
            return int(args.run(client, args))
    except UsageError as exc:
        parser.error(str(exc))
    except ApiError as exc:
        print(f"sd: {exc}", file=sys.stderr)
    except ChecksumError as exc:
        print(f"sd: {exc}", file=sys.stderr)
    except httpx.HTTPError as exc:
        print(f"sd: cannot reach {args.url}: {exc}", file=sys.stderr)
    except TimeoutError as exc:
        print(f"sd: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("sd: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
