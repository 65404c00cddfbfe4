"""Engines: how each stage of a job is done.

`SCRIPT_ENGINE` picks the one that writes scripts, `RENDER_ENGINE` the one
that renders them; either left empty means `VIDEO_ENGINE`. Each is a name from
`ENGINES` or a dotted path to an engine class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from projects.engines.base import Engine, EngineError, ProjectSpec, Scene, StageProgress

ENGINES = {
    "local": "projects.engines.local.LocalEngine",
    "llm": "projects.engines.llm.LlmScriptEngine",
    "remote": "projects.engines.remote.RemoteVideoEngine",
    "command": "projects.engines.command.CommandEngine",
}


def get_engine() -> Engine:
    """The engine for both stages, or a `MisconfiguredEngine` error naming the setting at fault."""
    script_setting, script_name = _chosen("SCRIPT_ENGINE")
    render_setting, render_name = _chosen("RENDER_ENGINE")
    script = _load(script_setting, script_name)
    if render_name == script_name:
        return script
    return StagedEngine(script, _load(render_setting, render_name))


def engine_name_for(step: str) -> str:
    """The name of the engine this worker uses for a step (as set: `local`, a dotted path…)."""
    return _chosen("SCRIPT_ENGINE" if step == "script" else "RENDER_ENGINE")[1]


def _chosen(setting: str) -> tuple[str, str]:
    """Which setting names the stage's engine (its own, or VIDEO_ENGINE), and the name."""
    own = getattr(settings, setting)
    return (setting, own) if own else ("VIDEO_ENGINE", settings.VIDEO_ENGINE)


def _load(setting: str, name: str) -> Engine:
    return engine_class(setting, name)()


def engine_class(setting: str, name: str) -> type[Engine]:
    try:
        return import_string(ENGINES.get(name, name))
    except ImportError as error:
        raise MisconfiguredEngine(
            f"{setting} is {name!r}, which is not an engine: use one of "
            f"{', '.join(ENGINES)} or the dotted path of an engine class ({error})."
        ) from error


def check_engine_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """A system check: a worker refuses to start with an engine name that loads nothing."""
    problems = []
    for setting in ("VIDEO_ENGINE", "SCRIPT_ENGINE", "RENDER_ENGINE"):
        name = getattr(settings, setting)
        if not name:
            continue
        try:
            engine_class(setting, name)
        except MisconfiguredEngine as error:
            problems.append(checks.Error(str(error), id="projects.E001"))
    return problems


class MisconfiguredEngine(EngineError):
    """An engine setting names something that cannot be loaded."""

    code = "misconfigured"


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
