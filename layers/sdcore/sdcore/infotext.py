"""The webui's generation-parameters text (PNG `parameters` chunk), parsed back into fields."""

from __future__ import annotations

import re

_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_infotext(text: str) -> dict[str, str]:
    """Split a webui infotext into {"Prompt", "Negative prompt", "Steps", "Sampler", ...}.

    As the webui does: the last line holding at least three `key: value` pairs is the
    parameter line; lines before it are the prompt, from `Negative prompt:` on the negative
    prompt; `Size: WxH` also gives `Size-1` and `Size-2`.
    """
    *lines, last = text.strip().split("\n") or [""]
    if len(_PAIR.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip()}
    for key, value in _PAIR.findall(last):
        key, value = key.strip(), value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
        size = _SIZE.match(value) if key == "Size" else None
        if size:
            out["Size-1"], out["Size-2"] = size.group(1), size.group(2)
    return out
