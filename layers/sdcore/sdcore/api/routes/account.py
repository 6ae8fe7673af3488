"""The caller's own account: who they are, and their NSFW censor setting (which may only
tighten the deployment's SD_CENSOR)."""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict

from sdcore.api.routes.common import TASKS, documented, principal
from sdcore.composition import get_services
from sdcore.usecases import censor as censor_cases

router = APIGatewayRouter()
Mode = Literal["off", "flag", "blur", "block"]


class CensorSetting(BaseModel):
    """The NSFW censor: `deployment` (SD_CENSOR), `yours` (null: none set) and `effective`,
    the stricter of the two, which the caller's tasks get."""

    deployment: Mode
    yours: Mode | None
    effective: Mode


class Account(BaseModel):
    user: str
    role: str
    censor: CensorSetting


class CensorBody(BaseModel):
    """off < flag (scores recorded) < blur (pictures over the threshold blurred) < block (left
    out). Asking for less than the deployment's changes nothing: the stricter applies."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"censor": "blur"}]})
    censor: Mode | None


def _account() -> Account:
    who = principal(router)
    svc = get_services()
    own = censor_cases.user_censor(svc, who.user)
    setting = CensorSetting(
        deployment=svc.settings.censor,
        yours=own,  # type: ignore[arg-type]
        effective=censor_cases.strictest(svc.settings.censor, own),  # type: ignore[arg-type]
    )
    return Account(user=who.user, role=who.role.value, censor=setting)


@documented(router.get, "/account", tags=[TASKS])
def account() -> Account:
    """Who the key belongs to, and the NSFW censor their tasks get."""
    return _account()


@documented(router.put, "/account/censor", tags=[TASKS])
def put_censor(body: CensorBody) -> Account:
    """Set the caller's own NSFW censor (null: none). It may only tighten the deployment's."""
    censor_cases.set_user_censor(get_services(), principal(router).user, body.censor)
    return _account()
