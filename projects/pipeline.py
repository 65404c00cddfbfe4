"""The stages of a job, their weights, checkpoints and retries.

A job is claimed with a lease, run stage by stage through the engine with a
`Reporter`, and ended through the lifecycle: finished, failed, or left alone
when it was cancelled or taken over. Transient engine errors are retried in
the same worker with exponential backoff; checkpoints (finished scene clips)
mean a retry redoes only the scene it failed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from projects import lifecycle
from projects.engines import get_engine
from projects.engines.base import (
    Engine,
    EngineError,
    InvalidInputError,
    ProjectSpec,
    Scene,
    Script,
    TransientEngineError,
    pause,
)
from projects.models import Step, VideoProject
from projects.progress import JobCancelled, JobTimedOut, Reporter, Stage

logger = logging.getLogger(__name__)


def generate_script(project_id: Any) -> None:
    _run(project_id, Step.SCRIPT)


def render(project_id: Any) -> None:
    _run(project_id, Step.RENDER)


def spec_of(project: VideoProject) -> ProjectSpec:
    return ProjectSpec(
        project_id=str(project.pk),
        title=project.title,
        brief=project.brief,
        aspect_ratio=project.aspect_ratio,
        scene_count=project.scene_count,
        seconds_per_scene=project.seconds_per_scene,
        style=project.style,
    )


def project_dir(project_id: Any) -> Path:
    return Path(settings.MEDIA_ROOT) / "projects" / str(project_id)


def preview_path(project_id: Any, index: int) -> Path:
    return project_dir(project_id) / "previews" / f"scene-{index}.webp"


class Job(Protocol):
    step: Step

    def stages(self) -> list[Stage]: ...

    def run(self, reporter: Reporter) -> Any: ...

    def finish(self, lease_owner: str, result: Any) -> bool: ...


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _run(project_id: Any, step: Step) -> None:
    lease_owner = _worker_name()
    project = lifecycle.claim(project_id, step, lease_owner)
    if project is None:
        logger.info(
            "Not running %s job of %s: not queued, or held by a live worker", step, project_id
        )
        return
    try:
        job = _job_for(project, step, get_engine())
    except EngineError as error:
        lifecycle.fail(project.pk, lease_owner, error.code, str(error))
        return
    reporter = Reporter(
        project.pk,
        step=step,
        lease_owner=lease_owner,
        stages=job.stages(),
        deadline=time.monotonic() + settings.JOB_TIME_LIMIT,
    )
    _run_attempts(project, job, reporter, lease_owner)


def _job_for(project: VideoProject, step: Step, engine: Engine) -> Job:
    if step == Step.SCRIPT:
        return ScriptJob(project, engine)
    return RenderJob(project, engine)


def _run_attempts(project: VideoProject, job: Job, reporter: Reporter, lease_owner: str) -> None:
    attempt = project.attempt
    while True:
        try:
            result = job.run(reporter)
            reporter.flush()
            job.finish(lease_owner, result)
            return
        except JobCancelled:
            logger.info("Project %s: job cancelled or taken over; stopping", project.pk)
            return
        except JobTimedOut:
            minutes = settings.JOB_TIME_LIMIT / 60
            lifecycle.fail(
                project.pk,
                lease_owner,
                "timeout",
                f"The {job.step} job ran past its limit of {minutes:g} minutes and was stopped.",
            )
            return
        except TransientEngineError as error:
            if attempt >= settings.JOB_MAX_ATTEMPTS:
                lifecycle.fail(
                    project.pk,
                    lease_owner,
                    error.code,
                    f"{error} (gave up after {attempt} attempts)",
                )
                return
            attempt += 1
            if not _back_off(project, reporter, lease_owner, attempt, error):
                return
        except EngineError as error:
            lifecycle.fail(project.pk, lease_owner, error.code, str(error))
            return
        except Exception as error:
            logger.exception("Project %s: %s job crashed", project.pk, job.step)
            lifecycle.fail(
                project.pk, lease_owner, "internal_error", f"Something went wrong: {error}"
            )
            return


def _back_off(
    project: VideoProject, reporter: Reporter, lease_owner: str, attempt: int, error: Exception
) -> bool:
    """Wait before the next attempt, still holding the lease and still cancellable."""
    delay = settings.JOB_RETRY_BACKOFF_SECONDS * 2 ** (attempt - 2)
    reason = (
        f"{error} — trying again in {delay:g} s (attempt {attempt} of {settings.JOB_MAX_ATTEMPTS})"
    )
    if not lifecycle.next_attempt(project.pk, lease_owner, attempt, reason):
        return False
    try:
        pause(reporter, delay, every=0.25)
    except JobCancelled:
        return False
    reporter.new_attempt()
    return True


class ScriptJob:
    """Read the brief, then write each scene with its animated preview."""

    step = Step.SCRIPT

    def __init__(self, project: VideoProject, engine: Engine) -> None:
        self.project = project
        self.engine = engine
        self.spec = spec_of(project)

    def stages(self) -> list[Stage]:
        count = self.spec.scene_count
        return [
            Stage("outline", "Reading the brief", 1.0),
            *(
                Stage(f"scene-{index}", f"Writing scene {index + 1} of {count}", 3.0)
                for index in range(count)
            ),
        ]

    def run(self, reporter: Reporter) -> dict[str, Any]:
        outline = self.engine.outline(self.spec, reporter.begin(0))
        if len(outline) != self.spec.scene_count:
            raise EngineError(
                f"The engine planned {len(outline)} scenes, "
                f"not the {self.spec.scene_count} asked for."
            )
        reporter.end_stage()
        scenes = []
        for index, planned in enumerate(outline):
            stage = reporter.begin(index + 1)
            target = preview_path(self.project.pk, index)
            target.parent.mkdir(parents=True, exist_ok=True)
            scenes.append(self.engine.write_scene(self.spec, planned, target, stage))
            stage.log(f"Scene {index + 1}: {scenes[-1].narration[:120]}")
            reporter.end_stage()
        return Script(title=self.spec.title, scenes=scenes).to_dict()

    def finish(self, lease_owner: str, result: dict[str, Any]) -> bool:
        return lifecycle.finish_script(self.project.pk, lease_owner, result)


class RenderJob:
    """Render each scene to a clip (a checkpoint), then join the clips into one MP4."""

    step = Step.RENDER
    COMPOSE_SHARE = 0.03

    def __init__(self, project: VideoProject, engine: Engine) -> None:
        if not project.script_data:
            raise InvalidInputError("The project has no script to render.")
        self.project = project
        self.engine = engine
        self.spec = spec_of(project)
        try:
            self.script = Script.from_dict(project.script_data)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"The script cannot be read: {error}") from error

    def stages(self) -> list[Stage]:
        count = len(self.script.scenes)
        total_seconds = sum(scene.seconds for scene in self.script.scenes)
        return [
            *(
                Stage(f"scene-{index}", f"Rendering scene {index + 1} of {count}", scene.seconds)
                for index, scene in enumerate(self.script.scenes)
            ),
            Stage(
                "compose", "Joining the scenes into one video", total_seconds * self.COMPOSE_SHARE
            ),
        ]

    def clip_path(self, scene: Scene) -> Path:
        """Named by what the clip shows: an edited scene never reuses an old checkpoint."""
        recipe = json.dumps(
            [self.engine.name, self.spec.aspect_ratio, self.spec.style, scene.to_dict()],
            sort_keys=True,
        )
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
        return project_dir(self.project.pk) / "clips" / f"scene-{scene.index}-{digest}.mp4"

    def run(self, reporter: Reporter) -> str:
        clips = []
        for index, scene in enumerate(self.script.scenes):
            stage = reporter.begin(index)
            clip = self.clip_path(scene)
            if clip.exists():
                stage.log(f"Scene {index + 1} was rendered before; using that clip")
            else:
                clip.parent.mkdir(parents=True, exist_ok=True)
                self.engine.render_scene(self.spec, scene, clip, stage)
            clips.append(clip)
            reporter.end_stage()
        name = f"videos/{self.project.pk}/{uuid.uuid4().hex[:12]}.mp4"
        video_path = Path(settings.MEDIA_ROOT) / name
        video_path.parent.mkdir(parents=True, exist_ok=True)
        self.engine.compose(self.spec, clips, video_path, reporter.begin(len(clips)))
        reporter.end_stage()
        return name

    def finish(self, lease_owner: str, result: str) -> bool:
        old_video = self.project.video.name
        if not lifecycle.finish_render(self.project.pk, lease_owner, result):
            (Path(settings.MEDIA_ROOT) / result).unlink(missing_ok=True)
            return False
        shutil.rmtree(project_dir(self.project.pk) / "clips", ignore_errors=True)
        if old_video and old_video != result:
            (Path(settings.MEDIA_ROOT) / old_video).unlink(missing_ok=True)
        return True
