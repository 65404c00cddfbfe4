"""The local engine: plans scenes from the brief, then draws and encodes them on this machine.

The script's words come from `writing`, every frame (captions included) from
`drawing`, the spoken narration from `speech`; this module checks the inputs,
encodes frames with ffmpeg and joins the clips and their narration, each
output written whole or not at all.

Each engine instance writes with a seed of its own, and the pipeline makes an
engine per job: so "Rewrite the script" writes a different script, while a
retry inside the same job writes the same one again.

A scene's narration is spoken while its clip is rendered (part of that scene's
step on the bar) and stored in the clip as uncompressed PCM: the clip stays the
one checkpoint a retried render skips, and PCM, unlike AAC, starts and ends
exactly with the picture. Joining the clips lays their sound end to end, each
fitted to its clip's length, and encodes it once as AAC: the track is exactly
as long as the video. Without a synthesizer the video is silent and the
render's log says why, once.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from projects.engines import speech
from projects.engines.base import (
    ASPECT_SIZES,
    EngineError,
    InvalidInputError,
    ProjectSpec,
    Scene,
    StageProgress,
)
from projects.engines.drawing import RENDER_FPS, caption_chunks, draw_frame
from projects.engines.ffmpeg import Clip, pipe_frames, probe_clip, read_sound, run_ffmpeg
from projects.engines.writing import outline_scenes, tidy_scene

# The preview moves exactly as the render will, at a third of its size.
PREVIEW_FPS = RENDER_FPS
PREVIEW_LONG_SIDE = 640
MAX_SCENE_SECONDS = 600.0
# Drawing the preview's frames is most of write_scene; encoding the WebP is the rest.
PREVIEW_DRAW_SHARE = 0.9
# Speaking a scene took about 1% of rendering it (7 ms for 3 s of speech
# against ~1 s to draw and encode 48 frames at 1280x720); 5% leaves room for
# a slower machine and a second, faster reading to fit the scene.
SPEECH_SHARE = 0.05
AUDIO_BITRATE = "96k"
AUDIO_SAMPLE_RATE = 44100


class LocalEngine:
    name = "local"

    def __init__(self, seed: int | None = None) -> None:
        # The pipeline makes an engine for each job: a new seed per script job.
        self.seed = secrets.randbits(32) if seed is None else seed

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        check_spec(spec)
        scenes = outline_scenes(spec, self.seed)
        count = spec.scene_count
        for index in range(count):
            progress.update((index + 1) / count, f"Planned scene {index + 1} of {count}")
        progress.log(
            f"Outlined {count} scenes from a {len(spec.brief)}-character brief "
            f"(wording seed {self.seed})"
        )
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
        encoding = _Share(progress, SPEECH_SHARE, 1.0)

        def feed(stdin: BinaryIO) -> None:
            for frame_index in range(count):
                stdin.write(draw_frame(spec, scene, frame_index, (width, height)).tobytes())

        with tempfile.TemporaryDirectory(prefix="narration-") as workdir:
            narration = _narrate(scene, count / RENDER_FPS, Path(workdir), progress, label)
            args = [
                *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
                *("-r", str(RENDER_FPS), "-i", "pipe:0"),
                *(
                    ("-i", str(narration), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "pcm_s16le")
                    if narration
                    else ("-an",)
                ),
                *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-movflags", "+faststart", "-f", "mp4", "-y"),
            ]
            with _atomic_output(clip_path) as partial:
                run_ffmpeg(
                    [*args, str(partial)],
                    duration=count / RENDER_FPS,
                    progress=encoding,
                    feed=feed,
                    label=label,
                )
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
        clips = [probe_clip(path) for path in clip_paths]
        durations = [_seconds(clip, spec.seconds_per_scene) for clip in clips]
        duration = sum(durations)
        sounds = [bool(clip and clip.has_audio) for clip in clips]
        with tempfile.TemporaryDirectory(prefix="compose-") as workdir:
            list_file = Path(workdir) / "list.txt"
            list_file.write_text("".join(f"file {_concat_quote(p)}\n" for p in clip_paths))
            args = ["-f", "concat", "-safe", "0", "-i", str(list_file)]
            if any(sounds):
                track = Path(workdir) / "sound.wav"
                join_sound(clip_paths, sounds, durations, track, progress)
                args += [
                    *("-i", str(track), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"),
                    *("-c:a", "aac", "-b:a", AUDIO_BITRATE),
                ]
            else:
                args += ["-c", "copy"]
            with _atomic_output(video_path) as partial:
                args += ["-movflags", "+faststart", "-f", "mp4", "-y", str(partial)]
                run_ffmpeg(args, duration=duration, progress=progress, label="Joining scenes")
        kilobytes = video_path.stat().st_size / 1024
        sound = "with sound" if any(sounds) else "silent"
        progress.log(
            f"Joined {len(clip_paths)} scenes: {duration:.1f} s, {kilobytes:.0f} KB, {sound}"
        )
        if not any(sounds):
            reason = speech.unavailable_reason() or "the scenes were rendered without sound"
            progress.log(f"No spoken narration: {reason}; the video is silent.")


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


def _seconds(clip: Clip | None, fallback: float) -> float:
    return clip.seconds if clip and clip.seconds else float(fallback)


# --- Narration ----------------------------------------------------------------


def _narrate(
    scene: Scene, seconds: float, workdir: Path, progress: StageProgress, label: str
) -> Path | None:
    """Speak the scene's captions, each as it shows, into a WAV exactly `seconds` long.

    Reports through the first `SPEECH_SHARE` of the scene's step. Without a
    synthesizer it returns None: the join says once why the video is silent.
    """
    lines = [
        speech.Line(caption.text, caption.start)
        for caption in caption_chunks(scene.narration, scene.seconds)
    ]
    share = _Share(progress, 0.0, SPEECH_SHARE)
    try:
        narration = speech.narrate(lines, seconds, check=progress.check, on_progress=share.update)
    except speech.SpeechUnavailable as error:
        if speech.unavailable_reason() is None:  # the synthesizer works, this scene did not
            progress.log(f"{label}: no spoken narration: {error}")
        return None
    path = workdir / "narration.wav"
    narration.write_wav(path)
    said = f"{label}: narration spoken in {narration.spoken_seconds:.1f} s of {seconds:.1f} s"
    if narration.words_per_minute != speech.CALM_RATE:
        said += f", faster than usual ({narration.words_per_minute} words a minute) to fit"
    progress.log(said)
    if narration.cut_seconds > 0:
        progress.log(
            f"{label}: the narration is {narration.cut_seconds:.1f} s longer than the scene "
            "even spoken fast; its end is cut. Shorten the narration or lengthen the scene."
        )
    return path


def join_sound(
    clip_paths: list[Path],
    sounds: list[bool],
    durations: list[float],
    track: Path,
    progress: StageProgress,
) -> None:
    """One WAV of the clips' sound end to end, each fitted to its clip's length.

    A clip without sound is silent for its length, so every later scene stays
    in step with its picture. Read a block at a time: memory stays flat.
    """
    width = speech.SAMPLE_WIDTH
    with wave.open(str(track), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(AUDIO_SAMPLE_RATE)
        for path, sound, seconds in zip(clip_paths, sounds, durations, strict=True):
            progress.check()
            wanted = round(seconds * AUDIO_SAMPLE_RATE)
            written = 0
            if sound:
                with contextlib.closing(read_sound(path, AUDIO_SAMPLE_RATE)) as blocks:
                    for block in blocks:
                        block = block[: (wanted - written) * width]
                        out.writeframes(block)
                        written += len(block) // width
                        if written >= wanted:
                            break
            out.writeframes(bytes((wanted - written) * width))


class _Share:
    """A part of a stage's progress: fractions 0..1 reported as `start`..`end` of the stage."""

    def __init__(self, progress: StageProgress, start: float, end: float) -> None:
        self._progress = progress
        self._start = start
        self._end = end

    def update(self, fraction: float, message: str | None = None) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self._progress.update(self._start + (self._end - self._start) * fraction, message)

    def log(self, line: str) -> None:
        self._progress.log(line)

    def check(self) -> None:
        self._progress.check()


def _concat_quote(path: Path) -> str:
    # The concat demuxer's own quoting: inside '…', a quote is written '\''.
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


@contextlib.contextmanager
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
