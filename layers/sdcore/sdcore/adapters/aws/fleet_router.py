"""The AWS fleets side by side: each checkpoint's function is on one of them. Its record says
which; a checkpoint without one goes on the default fleet (SD_INFERENCE_FLEET), and
batch-update's `fleet` moves it (its function on the old fleet is deleted, one on the new fleet
is made with the settings given)."""

from __future__ import annotations

import builtins
from typing import Any

from sdcore.domain.models import FunctionChanges, FunctionRecord, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import FunctionStore, ModelStore, WorkerFleet, function_name
from sdcore.settings import Settings

# what a move takes along to the new fleet (the rest belongs to the old one)
_CARRIED = ("env", "extraArgs")


class FleetRouter(WorkerFleet):
    def __init__(
        self,
        fleets: dict[str, WorkerFleet],
        functions: FunctionStore,
        models: ModelStore,
        settings: Settings,
    ) -> None:
        self.fleets = fleets
        self.functions = functions
        self.models = models
        self.settings = settings

    def _record(self, model_name: str) -> FunctionRecord | None:
        try:
            return self.functions.get(function_name(self.settings.function_prefix, model_name))
        except NotFoundError:
            return None

    def _fleet_name(self, record: FunctionRecord | None) -> str:
        if record is None:
            return self.settings.inference_fleet
        return str(record.resources.get("fleet") or "lambda")  # records from before the router

    def fleet_of(self, model_name: str) -> WorkerFleet:
        return self.fleets[self._fleet_name(self._record(model_name))]

    def ensure(self, model: Model) -> FunctionRecord:
        return self.fleet_of(model.name).ensure(model)

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        self.fleets[self._fleet_name(record)].invoke(record, payload)

    def delete(self, model_name: str) -> None:
        self.fleet_of(model_name).delete(model_name)

    def check(self, model_name: str, changes: FunctionChanges) -> None:
        """The fleet named exists, and the fleet the model will be on takes the changes."""
        if changes.fleet is not None and changes.fleet not in self.fleets:
            raise InvalidInputError("fleet", f"one of {', '.join(sorted(self.fleets))}")
        target = changes.fleet or self._fleet_name(self._record(model_name))
        self.fleets[target].check(model_name, changes.model_copy(update={"fleet": None}))

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        """Changes on the model's fleet; with another `fleet`, a move: the model's function
        there is made with these changes (and the old one's env and extra args), then the old
        one is deleted. A model without a function gets one on the fleet named."""
        self.check(model_name, changes)
        record = self._record(model_name)
        current = self._fleet_name(record)
        target = changes.fleet or current
        fleet = self.fleets[target]
        if record is not None and target == current:
            return fleet.update(model_name, changes)
        model = self.models.get(model_name)  # NotFoundError: no such model
        chosen: dict[str, Any] = {
            k: v for k, v in (record.resources if record else {}).items() if k in _CARRIED
        }
        given = {
            # the new fleet's image unless one was named (kept through deploys: pinned)
            "pinnedImage" if target == "lambda" else "imageUri": changes.image,
            "env": changes.env,
            "extraArgs": changes.extra_args,
            "instanceType": changes.instance_type,
            "minInstances": changes.min_instances,
            "maxInstances": changes.max_instances,
            "memoryMb": changes.memory_mb,
            "timeoutS": changes.timeout_s,
            "cpu": changes.cpu,
            "gpuMemoryMb": changes.gpu_memory_mb,
        }
        chosen.update({k: v for k, v in given.items() if v is not None})
        if record is not None:
            self.fleets[current].delete(model_name)
        name = function_name(self.settings.function_prefix, model_name)
        self.functions.put(
            FunctionRecord(
                name=name,
                model=model_name,
                status="pending",
                resources={**chosen, "fleet": target},
                created_at=record.created_at if record else 0.0,
            )
        )
        return fleet.ensure(model)

    def list(self) -> builtins.list[FunctionRecord]:
        return self.functions.list()

    def delete_all(self) -> builtins.list[str]:
        return [name for fleet in self.fleets.values() for name in fleet.delete_all()]

    def refuses(self, model: Model) -> str | None:
        """Asked at submit: the model's function record is read only when some fleet would
        refuse it (SDXL on Lambda), not on every submit."""
        if all(fleet.refuses(model) is None for fleet in self.fleets.values()):
            return None
        return self.fleet_of(model.name).refuses(model)

    def capacity(self, model_name: str) -> int | None:
        return self.fleet_of(model_name).capacity(model_name)

    def max_task_work(self, model_name: str) -> int | None:
        return self.fleet_of(model_name).max_task_work(model_name)

    def start_timeout_s(self, model_name: str) -> float | None:
        return self.fleet_of(model_name).start_timeout_s(model_name)
