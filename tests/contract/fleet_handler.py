"""A stand-in inference handler for the fleet contract's local worker processes: it records each
event it gets in the file SD_TEST_HANDLED names (one JSON line each), and loads nothing."""

from __future__ import annotations

import json
import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with open(os.environ["SD_TEST_HANDLED"], "a") as out:
        out.write(json.dumps(event) + "\n")
    return {"handled": True}
