"""The local engine: plans scenes from the brief, then draws and encodes them on this machine.

The script's words come from `writing` and every frame from `drawing`; this
module checks the inputs, encodes frames with ffmpeg and joins the clips, each
output written whole or not at all.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from projects.engines.base import (
    ASPECT_SIZES,
    EngineError,
    InvalidInputError,
    ProjectSpec,
    Scene,
    StageProgress,
)
from projects.engines.drawing import RENDER_FPS, draw_frame
from projects.engines.ffmpeg import pipe_frames, probe_clip, run_ffmpeg
from projects.engines.writing import outline_scenes, tidy_scene

# The preview moves exactly as the render will, at a third of its size.
PREVIEW_FPS = RENDER_FPS
PREVIEW_LONG_SIDE = 640
MAX_SCENE_SECONDS = 600.0
# Drawing the preview's frames is most of write_scene; encoding the WebP is the rest.
PREVIEW_DRAW_SHARE = 0.9


class LocalEngine:
    name = "local"

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        check_spec(spec)
        scenes = outline_scenes(spec)
        count = spec.scene_count
        for index in range(count):
            progress.update((index + 1) / count, f"Planned scene {index + 1} of {count}")
        progress.log(f"Outlined {count} scenes from a {len(spec.brief)}-character brief")
        return scenes

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        scene = tidy_scene(scene)
        self.draw_preview(spec, scene, preview_path, progress)
        return scene

    def draw_preview(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> None:
        """The scene's animated preview (WebP), moving exactly as its render will."""
        check_spec(spec)
        check_scene(scene)
        width, height = preview_size(spec.size)
        count = frame_count(scene.seconds, PREVIEW_FPS)

        def frames() -> Iterator[bytes]:
            # One frame at a time into the encoder: memory stays flat with the scene's length.
            for frame_index in range(count):
                yield draw_frame(spec, scene, frame_index, (width, height), PREVIEW_FPS).tobytes()
                progress.update(PREVIEW_DRAW_SHARE * (frame_index + 1) / count)
            progress.check()

        with _atomic_output(preview_path) as partial:
            args = [
                *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
                *("-r", str(PREVIEW_FPS), "-i", "pipe:0"),
                *(
                    "-c:v",
                    "libwebp_anim",
                    "-quality",
                    "75",
                    "-compression_level",
                    "0",
                    "-loop",
                    "0",
                ),
                *("-f", "webp", "-y", str(partial)),
            ]
            pipe_frames(args, frames(), label=f"Scene {scene.index + 1} preview")
        progress.update(1.0)

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        check_spec(spec)
        check_scene(scene)
        width, height = spec.size
        count = frame_count(scene.seconds, RENDER_FPS)
        label = f"Scene {scene.index + 1}"
        progress.log(f"{label}: rendering {count} frames at {width}x{height}")
        started = time.monotonic()

        def feed(stdin: BinaryIO) -> None:
            for frame_index in range(count):
                stdin.write(draw_frame(spec, scene, frame_index, (width, height)).tobytes())

        with _atomic_output(clip_path) as partial:
            args = [
                *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
                *("-r", str(RENDER_FPS), "-i", "pipe:0", "-an"),
                *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-movflags", "+faststart", "-f", "mp4", "-y", str(partial)),
            ]
            run_ffmpeg(args, duration=count / RENDER_FPS, progress=progress, feed=feed, label=label)
        kilobytes = clip_path.stat().st_size / 1024
        elapsed = time.monotonic() - started
        progress.log(f"{label} rendered: {kilobytes:.0f} KB in {elapsed:.1f} s")

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        if not clip_paths:
            raise InvalidInputError("There are no scene clips to join.")
        missing = [path.name for path in clip_paths if not path.is_file()]
        if missing:
            raise EngineError(f"Scene clips are missing: {', '.join(missing)}")
        duration = sum(_seconds_of(path) or spec.seconds_per_scene for path in clip_paths)
        with tempfile.TemporaryDirectory(prefix="compose-") as workdir:
            list_file = Path(workdir) / "list.txt"
            list_file.write_text("".join(f"file {_concat_quote(p)}\n" for p in clip_paths))
            with _atomic_output(video_path) as partial:
                args = [
                    *("-f", "concat", "-safe", "0", "-i", str(list_file), "-c", "copy"),
                    *("-movflags", "+faststart", "-f", "mp4", "-y", str(partial)),
                ]
                run_ffmpeg(args, duration=duration, progress=progress, label="Joining scenes")
        kilobytes = video_path.stat().st_size / 1024
        progress.log(f"Joined {len(clip_paths)} scenes: {duration:.1f} s, {kilobytes:.0f} KB")


# --- Checks and small helpers -------------------------------------------------


def check_spec(spec: ProjectSpec) -> None:
    if spec.aspect_ratio not in ASPECT_SIZES:
        raise InvalidInputError(f"Unknown aspect ratio {spec.aspect_ratio!r}.")
    if spec.scene_count < 1:
        raise InvalidInputError("A video needs at least one scene.")
    if not 0 < spec.seconds_per_scene <= MAX_SCENE_SECONDS:
        raise InvalidInputError(
            f"Seconds per scene must be positive, not {spec.seconds_per_scene}."
        )
    if not (spec.brief.strip() or spec.title.strip()):
        raise InvalidInputError("The project has neither a title nor a brief to work from.")


def check_scene(scene: Scene) -> None:
    if not (math.isfinite(scene.seconds) and 0 < scene.seconds <= MAX_SCENE_SECONDS):
        raise InvalidInputError(
            f"Scene {scene.index + 1} must last a positive number of seconds, not {scene.seconds}."
        )


def frame_count(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


def preview_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = PREVIEW_LONG_SIDE / max(width, height)
    # Even sizes keep every video tool happy should a preview ever be re-encoded.
    return 2 * round(width * scale / 2), 2 * round(height * scale / 2)


def _seconds_of(path: Path) -> float | None:
    clip = probe_clip(path)
    return clip.seconds if clip else None


def _concat_quote(path: Path) -> str:
    # The concat demuxer's own quoting: inside '…', a quote is written '\''.
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved into place only if the block succeeds.

    So a preview, clip or video is whole or absent: a clip that exists is a
    checkpoint the render may resume from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
