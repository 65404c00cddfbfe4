"""How long a job will take, from how long jobs took on this installation.

Each finished job leaves a `JobTiming`: its step, the engine that did it, its
size (scenes for a script, seconds of video for a render) and how long it ran,
from its claim to its result. A job's expected duration is the median of the
last `HISTORY` rates (seconds per unit of size) of the same step and engine,
times its size; the worker writes it on the row when it claims the job
(`VideoProject.estimate_seconds`), so reading the time left needs no query.

`VideoProject.seconds_left` blends that expectation with the job's own pace.
Without any finished job of that step and engine there is no basis, and the
answer is null, not a guess.
"""

from __future__ import annotations

import statistics
from typing import Any

from django.utils import timezone

from projects.models import JobTiming, Step, VideoProject

HISTORY = 20
# The OpenAI stream's bar before this installation has finished any job.
DEFAULT_SCRIPT_SHARE = 0.2


def size_of(project: VideoProject, step: Step) -> float:
    """Scenes to write, or seconds of video to render (the script's, else the brief's)."""
    if step == Step.SCRIPT:
        return float(project.scene_count)
    return project.video_seconds()


def record(step: Step, engine: str, size: float, seconds: float) -> None:
    if size > 0 and seconds >= 0:
        JobTiming.objects.create(step=step, engine=engine, size=size, seconds=seconds)


def expected_seconds(step: Step, size: float, engine: str | None = None) -> float | None:
    """The median pace of recent jobs of this step (and engine: else the latest one used)."""
    timings = JobTiming.objects.filter(step=step)
    if engine is None:
        engine = timings.order_by("-finished_at").values_list("engine", flat=True).first()
    recent = timings.filter(engine=engine).order_by("-finished_at")[:HISTORY]
    rates = [seconds / size_ for size_, seconds in recent.values_list("size", "seconds")]
    if not rates:
        return None
    return statistics.median(rates) * size


def script_share(project: VideoProject) -> float:
    """How much of one bar across both jobs is the script's, by this installation's record."""
    script = expected_seconds(Step.SCRIPT, size_of(project, Step.SCRIPT))
    render = expected_seconds(Step.RENDER, size_of(project, Step.RENDER))
    if script is None or render is None or script + render <= 0:
        return DEFAULT_SCRIPT_SHARE
    return min(max(script / (script + render), 0.01), 0.99)


def basis(project: VideoProject, step: Step, engine: str) -> dict[str, Any]:
    """What the worker writes on the row as it claims the job."""
    return {
        "estimate_seconds": expected_seconds(step, size_of(project, step), engine),
        "run_started_at": timezone.now(),
    }
