"""`sd templates ...` and `sd batch ...`: templates as JSON files (export, edit, diff, import) and
batches of them followed with a progress bar until their comparison grid is in.

    sd templates list | sd templates get NAME | sd templates delete NAME
    sd templates put poster.json [--name poster] [--shared]
    sd templates export DIR [--shared] | sd templates import DIR [--shared]
    sd templates run poster "a red fox" [--image in.png] [--set steps=30] [--async] [--out DIR]
    sd batch "a red fox" --folder posters --out grids/ [--set seed=7]
    sd batch "a red fox" --templates poster,anime --no-grid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from sdlocal.cli_results import finish
from sdlocal.client import Client, TaskResult

# what the API answers about a stored template that is not part of the document a user edits
READ_ONLY = ("shared", "version", "updatedAt")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def document(template: dict[str, Any]) -> dict[str, Any]:
    """A stored template as the file a designer edits and diffs: without its version, time and
    ownership, keys sorted (the API's stable order)."""
    return {k: template[k] for k in sorted(template) if k not in READ_ONLY}


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"sd: {path}: not a JSON document ({exc})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"sd: {path}: a template is a JSON object")
    return value


def _put(client: Client, path: Path, name: str | None, shared: bool) -> dict[str, Any]:
    body = _read(path)
    name = name or str(body.pop("name", None) or path.stem)
    body.pop("name", None)
    return client.put_template(name, body, shared=shared)


def overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set FIELD=VALUE` pairs as request fields: a VALUE that parses as JSON is that value
    (`steps=30`, `enable_hr=true`), else the string (`sampler_name=Euler a`)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field:
            raise SystemExit(f"sd: --set {pair}: give FIELD=VALUE")
        try:
            out[field] = json.loads(text)
        except ValueError:
            out[field] = text
    return out


def _run(client: Client, args: argparse.Namespace) -> int:
    for path in args.image:
        if not path.is_file():
            raise SystemExit(f"sd: no such file: {path}")
    args.wait = not args.async_  # the progress bar until the task ends, then the download
    answer = client.run_template(
        args.name,
        args.prompt,
        init_images=list(args.image) or None,
        overrides=overrides(args.set),
        async_=True,
    )
    return finish(client, args, answer)


def cmd_templates(client: Client, args: argparse.Namespace) -> int:
    if args.action == "run":
        return _run(client, args)
    if args.action == "list":
        _print_json(client.templates())
    elif args.action == "get":
        _print_json(client.template(args.name, shared=args.shared))
    elif args.action == "put":
        _print_json(_put(client, args.file, args.name, args.shared))
    elif args.action == "delete":
        client.delete_template(args.name, shared=args.shared)
    elif args.action == "export":
        args.dir.mkdir(parents=True, exist_ok=True)
        for t in client.templates():
            if t["shared"] == args.shared:
                path = args.dir / f"{t['name']}.json"
                path.write_text(json.dumps(document(t), indent=2, ensure_ascii=False) + "\n")
                print(path)
    else:  # import: every *.json of the folder, each as the next version of its template
        files = sorted(args.dir.glob("*.json"))
        if not files:
            print(f"sd: no *.json in {args.dir}", file=sys.stderr)
            return 1
        for path in files:
            saved = _put(client, path, None, args.shared)
            print(f"{saved['name']}: version {saved['version']}")
    return 0


def cmd_batch(client: Client, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    names = [n for n in (args.templates or "").split(",") if n] or None
    batch = client.batch(
        args.prompt,
        templates=names,
        folder=args.folder,
        grid=args.grid,
        overrides=overrides(args.set),
    )
    if not args.wait:
        _print_json(batch)
        return 0
    total = len(batch["tasks"])
    form = "{l_bar}{bar}| {postfix}"
    with tqdm(total=100, unit="%", desc=batch["batchId"][:12], bar_format=form) as bar:

        def on_progress(state: dict[str, Any]) -> None:
            ended = sum(t["status"] not in ("queued", "running") for t in state["tasks"])
            bar.n = round(100 * float(state["progress"]))
            bar.set_postfix_str(f"{state['status']} {ended}/{total} tasks", refresh=False)
            bar.refresh()

        state = client.wait_batch(batch["batchId"], poll_s=0.5, on_progress=on_progress)
    out: dict[str, Any] = dict(state)
    if state.get("gridUrl") and args.out is not None:
        grid = {"taskId": f"{state['batchId']}-grid", "urls": [state["gridUrl"]]}
        out["files"] = [str(p) for p in client.download(cast(TaskResult, grid), args.out)]
    _print_json(out)
    if state["status"] != "succeeded":
        print(f"batch {state['batchId']} {state['status']}", file=sys.stderr)
        return 1
    return 0


def _set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a request field over the template's (JSON value, else text); repeatable",
    )


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`templates` and `batch` under the `sd` parser's subcommands."""
    templates = commands.add_parser("templates", help="your and the shared templates")
    actions = templates.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="yours, then the shared ones (JSON)")
    for action, what in (("get", "one template (JSON)"), ("delete", "remove a template")):
        one = actions.add_parser(action, parents=[common], help=what)
        one.add_argument("name")
        one.add_argument("--shared", action="store_true", help="the shared one (admin changes)")
    put = actions.add_parser("put", parents=[common], help="save a JSON file as a template")
    put.add_argument("file", type=Path)
    put.add_argument("--name", help="default: the file's `name`, else its stem")
    put.add_argument("--shared", action="store_true", help="a shared template (admin key)")
    for action, what in (("export", "write each template to DIR/NAME.json"),
                         ("import", "save every DIR/*.json (its next version)")):  # fmt: skip
        folder = actions.add_parser(action, parents=[common], help=what)
        folder.add_argument("dir", type=Path, metavar="DIR")
        folder.add_argument("--shared", action="store_true", help="the shared templates")
    run = actions.add_parser("run", parents=[common], help="one task of a template, downloaded")
    run.add_argument("name")
    run.add_argument("prompt", nargs="?", default="", help="merged into the template's prompt")
    run.add_argument("--image", type=Path, action="append", default=[], help="an input image")
    _set_argument(run)
    run.add_argument("--async", dest="async_", action="store_true", help="print the task id")
    run.add_argument("--out", type=Path, help="the pictures' folder (default .)")
    templates.set_defaults(run=cmd_templates)

    batch = commands.add_parser(
        "batch", parents=[common], help="run templates as a batch; a comparison grid"
    )
    batch.add_argument("prompt")
    which = batch.add_mutually_exclusive_group(required=True)
    which.add_argument("--templates", help="template names, comma-separated")
    which.add_argument("--folder", help="every template with this folder tag")
    batch.add_argument("--no-grid", dest="grid", action="store_false", help="no grid")
    _set_argument(batch)
    batch.add_argument("--no-wait", dest="wait", action="store_false", help="print the batch id")
    batch.add_argument("--out", type=Path, default=Path("."), help="the grid's folder (default .)")
    batch.set_defaults(run=cmd_batch)
