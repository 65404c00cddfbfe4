"""Engines that misbehave the way real ones do, built on the real local engine.

Each keeps a log of its calls in a class attribute; `reset()` clears it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from projects.engines.base import (
    InvalidInputError,
    ProjectSpec,
    Scene,
    StageProgress,
    TransientEngineError,
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
