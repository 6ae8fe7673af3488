"""`sd assist TEXT`: the prompt assistant from the command line. The reply is shown on stderr as
it is written; the prompt (and the negative prompt, on a line of its own) goes to stdout.

    sd assist "红色的圆形，白色背景"
    sd assist "一只狐狸" --template poster --style grain --json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sdlocal.client import Client


def cmd_assist(client: Client, args: argparse.Namespace) -> int:
    options = {"template": args.template, "style": args.style, "language": args.language}
    if args.stream:
        answer: dict[str, Any] = {}
        for name, data in client.assist_events(args.text, **options):
            if name == "token":
                print(data["text"], end="", file=sys.stderr, flush=True)
            elif name == "done":
                answer = data
        print(file=sys.stderr)
    else:
        answer = client.assist(args.text, **options)
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
        return 0
    print(answer["prompt"])
    if answer.get("negative_prompt"):
        print(f"Negative prompt: {answer['negative_prompt']}")
    return 0


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """`assist` under the `sd` parser's subcommands."""
    assist = commands.add_parser(
        "assist", parents=[common], help="a few words (Chinese too) to an English prompt"
    )
    assist.add_argument("text")
    assist.add_argument("--template", help="a template: its system prompt and prompt skeleton")
    assist.add_argument("--style", help="one of your prompt styles, applied last")
    assist.add_argument("--language", help="the language TEXT is in (zh, en, ...)")
    assist.add_argument(
        "--no-stream", dest="stream", action="store_false", help="one answer, not streamed"
    )
    assist.add_argument("--json", action="store_true", help='print {"prompt", "negative_prompt"}')
    assist.set_defaults(run=cmd_assist)
