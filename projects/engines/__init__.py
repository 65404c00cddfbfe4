"""Engines: how each stage of a job is done.

`SCRIPT_ENGINE` picks the one that writes scripts, `RENDER_ENGINE` the one
that renders them; either left empty means `VIDEO_ENGINE`. Each is a name from
`ENGINES` or a dotted path to an engine class.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from projects.engines.base import Engine, ProjectSpec, Scene, StageProgress

ENGINES = {
    "local": "projects.engines.local.LocalEngine",
    "llm": "projects.engines.llm.LlmScriptEngine",
    "remote": "projects.engines.remote.RemoteVideoEngine",
    "command": "projects.engines.command.CommandEngine",
}


def get_engine() -> Engine:
    script_engine = settings.SCRIPT_ENGINE or settings.VIDEO_ENGINE
    render_engine = settings.RENDER_ENGINE or settings.VIDEO_ENGINE
    script = _load(script_engine)
    if render_engine == script_engine:
        return script
    return StagedEngine(script, _load(render_engine))


def _load(name: str) -> Engine:
    return import_string(ENGINES.get(name, name))()


class StagedEngine:
    """The script job's stages from one engine, the render job's from another."""

    def __init__(self, script: Engine, render: Engine) -> None:
        self.script = script
        self.render = render
        # Clip checkpoints are named after the engine that rendered them.
        self.name = render.name

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        return self.script.outline(spec, progress)

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        return self.script.write_scene(spec, scene, preview_path, progress)

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        self.render.render_scene(spec, scene, clip_path, progress)

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        self.render.compose(spec, clip_paths, video_path, progress)
