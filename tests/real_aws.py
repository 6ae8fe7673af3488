"""The AWS settings the test run was started with, kept before tests/conftest.py replaces them
with fake credentials (every default test is offline). Only `pytest -m aws` puts them back."""

from __future__ import annotations

import os

NAMES = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
         "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL")  # fmt: skip
STARTED_WITH = {name: os.environ[name] for name in NAMES if name in os.environ}
