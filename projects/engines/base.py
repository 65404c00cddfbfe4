"""The interface every engine implements, and the errors it may raise.

An engine knows *how* a stage is done (draw frames, call a remote API, run a
command); the pipeline knows *which* stages a job has, their weights, the
checkpoints and the retries. Engines never touch the database: they report
through the `StageProgress` they are handed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "1:1": (720, 720),
}


class EngineError(Exception):
    """The stage failed for a reason that another try would not fix."""

    code = "engine_error"


class TransientEngineError(EngineError):
    """The stage failed for a reason that may pass (a timeout, a 5xx, a rate limit)."""

    code = "transient_error"


class InvalidInputError(EngineError):
    """The project's own input cannot be worked on; retrying would fail the same way."""

    code = "invalid_input"


class JobStopped(Exception):
    """The job must stop now: cancelled, its lease lost, or past its time limit.

    Engines let it pass through after killing whatever child process they run.
    """


@dataclass(frozen=True)
class ProjectSpec:
    """What the person asked for, as plain values an engine can use without the ORM."""

    project_id: str
    title: str
    brief: str
    aspect_ratio: str
    scene_count: int
    seconds_per_scene: int
    style: str

    @property
    def size(self) -> tuple[int, int]:
        return ASPECT_SIZES[self.aspect_ratio]


@dataclass(frozen=True)
class Scene:
    index: int
    narration: str
    visual: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Script:
    title: str
    scenes: list[Scene]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "scenes": [scene.to_dict() for scene in self.scenes]}

    @classmethod
    def from_dict(cls, script_data: dict[str, Any]) -> Script:
        scenes = [
            Scene(
                index=int(scene["index"]),
                narration=str(scene["narration"]),
                visual=str(scene["visual"]),
                seconds=float(scene["seconds"]),
            )
            for scene in script_data["scenes"]
        ]
        return cls(title=str(script_data["title"]), scenes=scenes)


class StageProgress(Protocol):
    """How an engine reports from inside one stage of a job.

    `update` and `check` raise `JobStopped` when the job must stop; an engine
    running a child process kills it before letting the exception go on.
    """

    def update(self, fraction: float, message: str | None = None) -> None:
        """The share of this stage done so far (0.0 to 1.0), and optionally what is happening."""

    def log(self, line: str) -> None:
        """One line for the job's live log."""

    def check(self) -> None:
        """Raise `JobStopped` if the job must stop; cheap enough to call often."""


class Engine(Protocol):
    """How the stages of the script and render jobs are done."""

    name: str

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        """Read the brief and plan `spec.scene_count` scenes."""

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        """Finish one planned scene and write its animated preview (WebP) to `preview_path`."""

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        """Render one scene to an H.264 clip at `clip_path` (written whole or not at all)."""

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        """Join the clips, in order, into one MP4 a browser plays, at `video_path`."""


def pause(progress: StageProgress, seconds: float, every: float = 0.1) -> None:
    """Wait `seconds` in short slices, calling `progress.check()`: a stop ends the wait at once."""
    until = time.monotonic() + seconds
    while True:
        progress.check()
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(every, left))
