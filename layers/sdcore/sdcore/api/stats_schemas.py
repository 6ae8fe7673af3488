"""The admin summary's answer (`GET /admin/stats`), in the API's vocabulary."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sdcore.usecases.stats import Distribution, Figures, Stats, Window


class DistributionBody(BaseModel):
    count: int = Field(description="tasks that have the figure")
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, d: Distribution) -> DistributionBody:
        return cls(count=d.count, p50=d.p50, p95=d.p95, p99=d.p99, max=d.max)


class FiguresBody(BaseModel):
    submitted: int = Field(description="tasks created in the window")
    started: int
    succeeded: int
    failed: int
    cancelled: int
    queued: int = Field(description="of the window's tasks, still queued")
    running: int
    failureReasons: dict[str, int] = Field(description="failed tasks by reason")
    queueWaitSeconds: DistributionBody = Field(description="submit to start of run")
    runSeconds: DistributionBody = Field(description="start of run to end")
    endToEndSeconds: DistributionBody = Field(description="submit to end, succeeded tasks")
    stepsPerSecond: DistributionBody = Field(description="sampling steps per second of run")

    @classmethod
    def of(cls, f: Figures) -> FiguresBody:
        return cls(
            submitted=f.submitted,
            started=f.started,
            succeeded=f.succeeded,
            failed=f.failed,
            cancelled=f.cancelled,
            queued=f.queued,
            running=f.running,
            failureReasons=f.failure_reasons,
            queueWaitSeconds=DistributionBody.of(f.queue_wait_s),
            runSeconds=DistributionBody.of(f.run_s),
            endToEndSeconds=DistributionBody.of(f.end_to_end_s),
            stepsPerSecond=DistributionBody.of(f.steps_per_second),
        )


class ModelFiguresBody(FiguresBody):
    model: str
    fleet: str


class WindowBody(BaseModel):
    window: str = Field(description="hour or day")
    since: float = Field(description="epoch seconds: tasks created from then on")
    truncated: bool = Field(description="more tasks than the scan reads: counts are at least")
    total: FiguresBody
    models: list[ModelFiguresBody]

    @classmethod
    def of(cls, w: Window) -> WindowBody:
        models = [
            ModelFiguresBody(model=m.model, fleet=m.fleet, **FiguresBody.of(m.figures).model_dump())
            for m in w.models
        ]
        return cls(window=w.name, since=w.since, truncated=w.truncated,
                   total=FiguresBody.of(w.total), models=models)  # fmt: skip


class StatsBody(BaseModel):
    generatedAt: float
    scanLimit: int = Field(description="tasks read at most per status")
    scanned: int = Field(description="tasks read for this answer")
    windows: list[WindowBody]

    @classmethod
    def of(cls, s: Stats) -> StatsBody:
        return cls(generatedAt=s.generated_at, scanLimit=s.scan_limit, scanned=s.scanned,
                   windows=[WindowBody.of(w) for w in s.windows])  # fmt: skip
