"""Shared fixtures. The default run is offline: no hub, no AWS (moto only)."""

from __future__ import annotations

import os

import tests.real_aws  # noqa: F401 (keeps the AWS settings the run started with, for -m aws)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tests")
# The NSFW censor costs ~0.1 s a picture and a classifier load per worker: the suite runs
# without it, except the tests of the censor itself (tests/unit/usecases/test_censor.py and
# the stack test there), which turn it on
os.environ.setdefault("SD_CENSOR", "off")
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_key, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"

from tests.support_stack import SOURCE_PATH  # noqa: E402

# processes the tests start (stacks, workers, the CLI) import this checkout's code
os.environ["PYTHONPATH"] = SOURCE_PATH


# --- IAM: every AWS call a function makes is held against its role in template.yaml ----------

import botocore.session  # noqa: E402
import pytest  # noqa: E402

from tests import iam  # noqa: E402
from tests.cloudformation import cloudformation  # noqa: E402, F401 (a fixture for every test)
from tests.moto_sagemaker import install as _install_update_endpoint  # noqa: E402

_install_update_endpoint()

CALLS: list[iam.Call] = []


def _record(params: dict, model: object, **_: object) -> None:
    function = iam.calling_function()
    if function is not None:
        service = model.service_model.endpoint_prefix  # type: ignore[attr-defined]
        CALLS.append(iam.Call(function, service, model.name, iam.params_of(params),  # type: ignore[attr-defined]
                              iam.snapshot_env()))  # fmt: skip


_create_client = botocore.session.Session.create_client


def _create_recorded_client(self: botocore.session.Session, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
    client = _create_client(self, *args, **kwargs)
    # before-parameter-build: API calls and presigned URLs alike (a URL's holder acts with the
    # signer's role)
    client.meta.events.register("before-parameter-build", _record)
    return client


botocore.session.Session.create_client = _create_recorded_client  # type: ignore[method-assign]


SEEN: set[tuple[str, str, str]] = set()  # (function, action, resource) the tests made


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With IAM_REPORT=<file>, write what each function's calls needed (to size the roles)."""
    path = os.environ.get("IAM_REPORT")
    if path:
        with open(path, "w") as fh:
            fh.writelines(f"{f}\t{a}\t{r}\n" for f, a, r in sorted(SEEN))


@pytest.fixture(autouse=True)
def _calls_within_the_roles() -> object:
    """Fails a test in which a function made an AWS call its role does not allow."""
    start = len(CALLS)
    yield
    SEEN.update((c.function, *need) for c in CALLS[start:] for need in iam.requests(c))
    denied = sorted({d for call in CALLS[start:] for d in iam.allowed(call)})
    del CALLS[start:]
    if denied:
        pytest.fail("not allowed by template.yaml:\n" + "\n".join(denied), pytrace=False)
