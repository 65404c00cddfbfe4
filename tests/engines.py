"""Engines that misbehave the way real ones do, built on the real local engine.

Each keeps a log of its calls in a class attribute; `reset()` clears it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import ClassVar

from django.conf import settings

from projects.engines.base import (
    EngineError,
    InvalidInputError,
    ProjectSpec,
    Scene,
    StageProgress,
    TransientEngineError,
    pause,
)
from projects.engines.local import LocalEngine


class RecordingEngine(LocalEngine):
    calls: ClassVar[list[str]] = []

    @classmethod
    def reset(cls) -> None:
        cls.calls = []

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        self.calls.append("outline")
        return super().outline(spec, progress)

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        self.calls.append(f"render {scene.index}")
        super().render_scene(spec, scene, clip_path, progress)


class FlakyEngine(RecordingEngine):
    """The second scene's first render fails half way, as a provider's 503 would."""

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        if scene.index == 1 and "render 1" not in self.calls:
            self.calls.append("render 1")
            progress.update(0.5, "Rendering scene 2")
            raise TransientEngineError("The renderer answered 503 Service Unavailable")
        super().render_scene(spec, scene, clip_path, progress)


class DownEngine(RecordingEngine):
    """A renderer that is down for good: every call is a transient error."""

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        self.calls.append(f"render {scene.index}")
        raise TransientEngineError("The renderer timed out")


class PickyEngine(RecordingEngine):
    """Refuses the brief: retrying would fail the same way."""

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        self.calls.append("outline")
        raise InvalidInputError("The brief has nothing that can be filmed.")


def hold_file() -> Path:
    """While this file exists, `HeldEngine` holds its jobs (a test acts in the meantime)."""
    return Path(settings.MEDIA_ROOT) / "hold"


class HeldEngine(LocalEngine):
    """Holds a script job after its first preview and a render half way through joining.

    The join writes part of the video first, as an engine that streams its
    output does, so a stopped render leaves a partial file behind it.
    """

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        written = super().write_scene(spec, scene, preview_path, progress)
        _wait_while_held(progress)
        return written

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        video_path.write_bytes(b"the first part of a video")
        _wait_while_held(progress)
        super().compose(spec, clip_paths, video_path, progress)


def _wait_while_held(progress: StageProgress) -> None:
    while hold_file().exists():
        pause(progress, 0.05)


class HalfWayEngine(LocalEngine):
    """Fails for good after the first scene's preview, and half way through joining."""

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        if scene.index > 0:
            raise EngineError("The writer lost the thread.")
        return super().write_scene(spec, scene, preview_path, progress)

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        video_path.write_bytes(b"the first part of a video")
        raise EngineError("The joiner ran out of disk.")


class QuietEngine(RecordingEngine):
    """Each scene waits on a provider that says nothing for `QUIET_SECONDS` before it renders.

    No progress, no check, no log while it waits: only the heartbeat keeps the lease.
    """

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        threading.Event().wait(float(os.environ["QUIET_SECONDS"]))
        super().render_scene(spec, scene, clip_path, progress)
