"""The stages of a job, their weights, checkpoints and retries.

A job is claimed with a lease, run stage by stage through the engine with a
`Reporter`, and ended through the lifecycle: finished, failed, or left alone
when it was cancelled or taken over. Transient engine errors are retried in
the same worker with exponential backoff; checkpoints (finished scene clips)
mean a retry redoes only the scene it failed in.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import posixpath
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.utils import timezone

from projects import estimates, lifecycle, storage
from projects.engines import engine_name_for, get_engine
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
from projects.progress import JobCancelled, JobTimedOut, Reporter, Stage, extend_lease

logger = logging.getLogger(__name__)

DOING = {Step.SCRIPT: "writing the script", Step.RENDER: "rendering the video"}


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
    """The project's work folder on this worker's disk: clips, an engine's work, uploads."""
    return Path(settings.MEDIA_ROOT) / "projects" / str(project_id)


def outgoing_dir(project_id: Any) -> Path:
    """Where results are made before they go to a storage that is not this disk."""
    return project_dir(project_id) / "outgoing"


# Results are named in the media storage (projects/storage.py); with the local
# default those names are paths under MEDIA_ROOT, the `*_dir`/`*_path` below.


def previews_folder(project_id: Any, preview_set: str = "") -> str:
    """The stored folder of one script's previews; `preview_set` "" is where they were before."""
    previews = f"projects/{project_id}/previews"
    return f"{previews}/{preview_set}" if preview_set else previews


def preview_name(project_id: Any, index: int, preview_set: str = "") -> str:
    return f"{previews_folder(project_id, preview_set)}/scene-{index}.webp"


def videos_folder(project_id: Any) -> str:
    return f"videos/{project_id}"


def previews_dir(project_id: Any, preview_set: str = "") -> Path:
    return Path(settings.MEDIA_ROOT) / previews_folder(project_id, preview_set)


def preview_path(project_id: Any, index: int, preview_set: str = "") -> Path:
    return Path(settings.MEDIA_ROOT) / preview_name(project_id, index, preview_set)


def videos_dir(project_id: Any) -> Path:
    return Path(settings.MEDIA_ROOT) / videos_folder(project_id)


class Job(Protocol):
    step: Step

    def stages(self) -> list[Stage]: ...

    def run(self, reporter: Reporter) -> Any: ...

    def finish(self, lease_owner: str, result: Any) -> bool: ...


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _run(project_id: Any, step: Step) -> None:
    lease_owner = _worker_name()
    engine_name = engine_name_for(step)
    queued = VideoProject.objects.filter(pk=project_id).first()
    basis = estimates.basis(queued, step, engine_name) if queued is not None else {}
    project = lifecycle.claim(project_id, step, lease_owner, basis)
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
    with Heartbeat(project.pk, lease_owner):
        finished = _run_attempts(project, job, reporter, lease_owner)
    if finished and project.run_started_at is not None:
        took = (timezone.now() - project.run_started_at).total_seconds()
        estimates.record(step, engine_name, estimates.size_of(project, step), took)


class Heartbeat:
    """Renews the job's lease every `JOB_HEARTBEAT_SECONDS` from a thread of its own.

    The lease must outlive whatever the engine is doing between two reports (a
    long ffmpeg call, a provider that is slow to answer), yet run out within
    seconds when the worker dies; so it is renewed by the clock, not by the
    engine. It stops when the job is no longer ours (the reporter notices that
    at its next write or check and stops the job).
    """

    def __init__(self, project_id: Any, lease_owner: str) -> None:
        self.project_id = project_id
        self.lease_owner = lease_owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        # Inside a caller's open transaction (a test's) another connection could
        # neither see the job nor get past its write lock: the reporter's own
        # writes renew the lease there.
        if not connection.in_atomic_block:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    if not extend_lease(self.project_id, self.lease_owner):
                        return
                except DatabaseError:
                    # A database restart: keep trying; the lease has some seconds to spare.
                    logger.warning("Could not renew the lease of %s", self.project_id)
                    _close_connection()
        finally:
            _close_connection()  # this thread's own


def _close_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()


def _wait_for_database(reporter: Reporter) -> bool:
    """After a lost connection: wait for the database to answer again, within the job's time."""
    delay = 0.2
    while time.monotonic() < reporter.deadline:
        _close_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    return False


def _job_for(project: VideoProject, step: Step, engine: Engine) -> Job:
    if step == Step.SCRIPT:
        return ScriptJob(project, engine)
    return RenderJob(project, engine)


def _run_attempts(project: VideoProject, job: Job, reporter: Reporter, lease_owner: str) -> bool:
    """Run the job to its end; True if its result was saved."""
    attempt = project.attempt
    while True:
        try:
            result = job.run(reporter)
            reporter.flush()
            return job.finish(lease_owner, result)
        except JobCancelled:
            logger.info("Project %s: job cancelled or taken over; stopping", project.pk)
            return False
        except (OperationalError, InterfaceError):
            # The database went away (a restart, a failover). The attempt is not
            # the engine's fault: once it answers, the same attempt goes on from
            # its checkpoints, unless another worker took the job meanwhile.
            logger.warning("Project %s: lost the database; waiting for it", project.pk)
            if not _wait_for_database(reporter):
                return False
        except JobTimedOut:
            minutes = settings.JOB_TIME_LIMIT / 60
            lifecycle.fail(
                project.pk,
                lease_owner,
                "timeout",
                f"The {job.step} job ran past its limit of {minutes:g} minutes and was stopped.",
            )
            return False
        except TransientEngineError as error:
            if attempt >= settings.JOB_MAX_ATTEMPTS:
                lifecycle.fail(
                    project.pk,
                    lease_owner,
                    error.code,
                    f"{error} (gave up after {attempt} attempts)",
                )
                return False
            attempt += 1
            if not _back_off(project, reporter, lease_owner, attempt, error):
                return False
        except EngineError as error:
            lifecycle.fail(project.pk, lease_owner, error.code, str(error))
            return False
        except Exception:
            logger.exception("Project %s: %s job crashed", project.pk, job.step)
            lifecycle.fail(
                project.pk,
                lease_owner,
                "internal_error",
                # The exception's own words may name hosts, paths or internals:
                # they go to the worker's log above, the person gets a sentence.
                f"Something went wrong in the worker while {DOING[job.step]}; "
                "the job was stopped. Try again.",
            )
            return False


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
    """Read the brief, then write each scene with its animated preview.

    The previews go to a folder of their own (`preview_set`), saved with the
    script in one write: until then the saved script keeps its own previews,
    and a rewrite that is cancelled or fails leaves them as they were.
    """

    step = Step.SCRIPT

    def __init__(self, project: VideoProject, engine: Engine) -> None:
        self.project = project
        self.engine = engine
        self.spec = spec_of(project)
        self.preview_set = uuid.uuid4().hex[:12]

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
        self._remove_unsaved_sets()
        try:
            return self._write(reporter)
        except BaseException:
            # Cancelled, failed or about to be retried: these previews belong to
            # no saved script (a retry draws every scene again).
            storage.remove_folder(previews_folder(self.project.pk, self.preview_set))
            raise

    def _write(self, reporter: Reporter) -> dict[str, Any]:
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
            name = preview_name(self.project.pk, index, self.preview_set)
            scratch = outgoing_dir(self.project.pk)
            with storage.publishing(name, scratch, f"the preview of scene {index + 1}") as target:
                scenes.append(self.engine.write_scene(self.spec, planned, target, stage))
            stage.log(f"Scene {index + 1}: {scenes[-1].narration[:120]}")
            reporter.end_stage()
        return Script(title=self.spec.title, scenes=scenes).to_dict()

    def finish(self, lease_owner: str, result: dict[str, Any]) -> bool:
        saved = lifecycle.finish_script(
            self.project.pk, lease_owner, result, preview_set=self.preview_set
        )
        if not saved:
            storage.remove_folder(previews_folder(self.project.pk, self.preview_set))
            return False
        # Only now, after the commit that switched to the new set, is the old one unused.
        _remove_previews(self.project.pk, self.project.preview_set)
        return True

    def _remove_unsaved_sets(self) -> None:
        """Folders left by a job that died before it could clean up (killed worker)."""
        shutil.rmtree(outgoing_dir(self.project.pk), ignore_errors=True)
        previews = previews_folder(self.project.pk)
        for folder in storage.listdir(previews)[0]:
            if folder != self.project.preview_set:
                storage.remove_folder(posixpath.join(previews, folder))


def _remove_previews(project_id: Any, preview_set: str) -> None:
    if preview_set:
        storage.remove_folder(previews_folder(project_id, preview_set))
        return
    previews = previews_folder(project_id)
    for file in fnmatch.filter(storage.listdir(previews)[1], "scene-*.webp"):
        storage.delete(posixpath.join(previews, file))


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
        self._remove_unsaved_videos()
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
        name = f"{videos_folder(self.project.pk)}/{uuid.uuid4().hex[:12]}.mp4"
        # A half-joined video is never shown (nor stored); the clips stay as checkpoints.
        with storage.publishing(name, outgoing_dir(self.project.pk), "the video") as video_path:
            self.engine.compose(self.spec, clips, video_path, reporter.begin(len(clips)))
            reporter.end_stage()
        return name

    def finish(self, lease_owner: str, result: str) -> bool:
        old_video = self.project.video.name
        if not lifecycle.finish_render(self.project.pk, lease_owner, result):
            storage.delete(result)
            return False
        shutil.rmtree(project_dir(self.project.pk) / "clips", ignore_errors=True)
        # Only after the commit that made the new video current: until then the
        # old one is what the person watches and downloads.
        if old_video and old_video != result:
            storage.delete(old_video)
        return True

    def _remove_unsaved_videos(self) -> None:
        """Files of a render that died before it could clean up; the saved video stays."""
        shutil.rmtree(outgoing_dir(self.project.pk), ignore_errors=True)
        folder = videos_folder(self.project.pk)
        for leftover in storage.listdir(folder)[1]:
            name = posixpath.join(folder, leftover)
            if name != self.project.video.name:
                storage.delete(name)
