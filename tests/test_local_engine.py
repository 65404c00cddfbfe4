"""The local engine on its own: real frames, real ffmpeg, no database."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import imageio_ffmpeg
import pytest
from PIL import Image

from projects.engines.base import EngineError, InvalidInputError, JobStopped, ProjectSpec, Scene
from projects.engines.drawing import draw_frame
from projects.engines.ffmpeg import ffmpeg_exe, run_ffmpeg
from projects.engines.local import SPEECH_SHARE, LocalEngine

SPEC = ProjectSpec(
    project_id="test-project",
    title="Night trains of Europe",
    brief=(
        "A short film about night trains crossing Europe. Sleepers leave Vienna at dusk. "
        "By morning the passengers wake up by the sea."
    ),
    aspect_ratio="16:9",
    scene_count=2,
    seconds_per_scene=2,
    style="warm, calm",
)


class Recorder:
    """A StageProgress that remembers what it was told, and can play a cancel after N updates
    (counting only those past `counting_from`)."""

    def __init__(self, stop_after: int | None = None, counting_from: float = 0.0) -> None:
        self.fractions: list[float] = []
        self.messages: list[str] = []
        self.lines: list[str] = []
        self.stop_after = stop_after
        self.counting_from = counting_from
        self.stopped = False
        self.on_stop = lambda: None

    def update(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)
        if message:
            self.messages.append(message)
        counted = [f for f in self.fractions if f > self.counting_from]
        if self.stop_after is not None and len(counted) >= self.stop_after:
            self.stopped = True
        self.check()

    def log(self, line: str) -> None:
        self.lines.append(line)

    def check(self) -> None:
        if self.stopped:
            self.on_stop()
            raise JobStopped("cancelled by the test")


def probe(path: Path) -> dict[str, object]:
    """What ffmpeg itself reads from a file's header."""
    stderr = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    hours, minutes, seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", stderr).groups()
    video = next(line for line in stderr.splitlines() if "Video:" in line)
    width, height = re.search(r", (\d{2,5})x(\d{2,5})", video).groups()
    return {
        "duration": int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        "codec": re.search(r"Video: (\w+)", video).group(1),
        "pix_fmt": re.search(r"Video: [^,]+, (\w+)", video).group(1),
        "size": (int(width), int(height)),
        "has_audio": "Audio:" in stderr,
    }


def processes_mentioning(marker: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if marker in text:
            pids.append(int(cmdline.parent.name))
    return pids


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def rising(fractions: list[float]) -> bool:
    return all(a <= b for a, b in pairwise(fractions))


def scene(index: int = 0, seconds: float = 2.0) -> Scene:
    spec = replace(SPEC, seconds_per_scene=int(seconds))
    return LocalEngine(seed=1).outline(spec, Recorder())[index]


# --- outline ------------------------------------------------------------------


def test_outline_plans_the_scenes_asked_for_and_is_deterministic_for_its_seed() -> None:
    spec = replace(SPEC, scene_count=4, seconds_per_scene=3)
    progress = Recorder()

    scenes = LocalEngine(seed=7).outline(spec, progress)

    assert scenes == LocalEngine(seed=7).outline(spec, Recorder())
    assert [s.index for s in scenes] == [0, 1, 2, 3]
    assert all(s.narration.strip() and s.visual.strip() for s in scenes)
    assert all(s.seconds == 3.0 for s in scenes)
    assert "Night trains of Europe" in scenes[0].narration
    assert "Night trains of Europe" in scenes[-1].narration  # a closing line names it again
    assert "Vienna" in " ".join(s.narration for s in scenes)
    assert progress.fractions[-1] == pytest.approx(1.0)
    assert rising(progress.fractions)
    assert any("Outlined 4 scenes" in line and "seed 7" in line for line in progress.lines)


def test_each_engine_writes_with_a_seed_of_its_own() -> None:
    # The pipeline makes an engine per job: a rewrite gets a new seed.
    assert len({LocalEngine().seed for _ in range(20)}) > 1


def test_outline_with_more_scenes_than_sentences_still_fills_every_scene() -> None:
    spec = replace(
        SPEC, brief="Why bees matter, and how cities can help them thrive", scene_count=5
    )

    scenes = LocalEngine(seed=3).outline(spec, Recorder())

    assert len(scenes) == 5
    assert all(s.narration.strip() for s in scenes)
    assert len({s.narration for s in scenes}) == 5


@pytest.mark.parametrize(
    "change",
    [
        {"aspect_ratio": "4:3"},
        {"scene_count": 0},
        {"seconds_per_scene": 0},
        {"brief": "", "title": ""},
    ],
)
def test_outline_rejects_input_it_cannot_work_on(change: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        LocalEngine().outline(replace(SPEC, **change), Recorder())


def test_render_rejects_a_scene_without_duration(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        LocalEngine().render_scene(
            SPEC, replace(scene(), seconds=0.0), tmp_path / "c.mp4", Recorder()
        )
    assert list(tmp_path.iterdir()) == []


# --- frames and previews ------------------------------------------------------


def test_a_frame_is_a_pure_function_of_its_arguments() -> None:
    first = draw_frame(SPEC, scene(), 30, (640, 360)).tobytes()

    assert draw_frame(SPEC, scene(), 30, (640, 360)).tobytes() == first
    assert draw_frame(SPEC, scene(), 31, (640, 360)).tobytes() != first
    assert draw_frame(SPEC, scene(), 30, (1280, 720)).size == (1280, 720)


def test_the_first_frames_of_a_long_video_draw_a_bar_too_thin_to_see(tmp_path: Path) -> None:
    # 12 scenes of 10 s: a frame's share of the whole bar is well under a pixel at first.
    long = replace(SPEC, scene_count=12, seconds_per_scene=10)
    first = Scene(index=0, narration="Sleepers leave Vienna.", visual="Dusk", seconds=10)

    frames = [draw_frame(long, first, index, (640, 360), 24) for index in range(3)]
    LocalEngine().write_scene(long, first, tmp_path / "preview.webp", Recorder())

    assert all(frame.size == (640, 360) for frame in frames)
    assert (tmp_path / "preview.webp").stat().st_size > 0


def test_write_scene_writes_an_animated_webp_preview(tmp_path: Path) -> None:
    preview = tmp_path / "scene-0.webp"
    progress = Recorder()

    written = LocalEngine().write_scene(SPEC, scene(), preview, progress)

    assert written.narration and written.seconds == 2.0
    with Image.open(preview) as image:
        assert image.format == "WEBP"
        assert image.is_animated
        assert image.n_frames == 48  # 2 s at 24 fps
        assert image.size == (640, 360)
    assert progress.fractions[-1] == pytest.approx(1.0)
    assert len(set(progress.fractions)) > 10
    assert rising(progress.fractions)
    assert [p.name for p in tmp_path.iterdir()] == ["scene-0.webp"]


def test_portrait_preview_is_640_high(tmp_path: Path) -> None:
    spec = replace(SPEC, aspect_ratio="9:16")
    LocalEngine().write_scene(spec, scene(), tmp_path / "p.webp", Recorder())

    with Image.open(tmp_path / "p.webp") as image:
        assert image.size == (360, 640)


# --- clips and the video ------------------------------------------------------


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1"])
def test_render_scene_writes_an_h264_clip_of_the_scene(tmp_path: Path, aspect_ratio: str) -> None:
    spec = replace(SPEC, aspect_ratio=aspect_ratio)
    clip = tmp_path / "scene-0.mp4"
    progress = Recorder()

    LocalEngine().render_scene(spec, scene(), clip, progress)

    info = probe(clip)
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert info["size"] == spec.size
    assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(clip))
    assert frames == 48
    # Progress flowed while ffmpeg ran, not only at the end.
    between = [f for f in progress.fractions if 0 < f < 1]
    assert len(set(between)) >= 2, progress.fractions
    assert rising(progress.fractions)
    assert progress.fractions[-1] == pytest.approx(1.0)
    assert any("rendered" in line and "KB" in line for line in progress.lines)
    assert [p.name for p in tmp_path.iterdir()] == ["scene-0.mp4"]


def test_compose_joins_clips_into_one_video_a_browser_plays(tmp_path: Path) -> None:
    engine = LocalEngine()
    clips = [tmp_path / "clips" / f"scene-{i}.mp4" for i in range(2)]
    for index, clip in enumerate(clips):
        engine.render_scene(SPEC, scene(index), clip, Recorder())
    video = tmp_path / "videos" / "video.mp4"
    progress = Recorder()

    engine.compose(SPEC, clips, video, progress)

    info = probe(video)
    assert info["duration"] == pytest.approx(4.0, abs=0.15)
    assert (info["codec"], info["pix_fmt"], info["size"]) == ("h264", "yuv420p", (1280, 720))
    data = video.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: plays before fully loaded
    assert progress.fractions[-1] == pytest.approx(1.0)
    assert [p.name for p in video.parent.iterdir()] == ["video.mp4"]


def test_compose_without_clips_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        LocalEngine().compose(SPEC, [], tmp_path / "video.mp4", Recorder())


# --- stopping and failing -----------------------------------------------------


def test_a_stop_mid_encode_kills_ffmpeg_and_leaves_no_clip(tmp_path: Path) -> None:
    workdir = tmp_path / "stop-me"  # every path ffmpeg is given lies under this
    clip = workdir / "scene-0.mp4"
    # Past the narration, which is spoken before the frames are encoded.
    progress = Recorder(stop_after=2, counting_from=SPEECH_SHARE)
    seen_at_stop: list[int] = []
    progress.on_stop = lambda: seen_at_stop.extend(processes_mentioning(str(workdir)))

    with pytest.raises(JobStopped):
        LocalEngine().render_scene(SPEC, scene(seconds=4), clip, progress)

    assert seen_at_stop, "ffmpeg should have been running when the job was stopped"
    assert progress.fractions[-1] < 1.0
    assert wait_until(lambda: not processes_mentioning(str(workdir)))
    assert not clip.exists()
    assert list(workdir.iterdir()) == []


def test_ffmpeg_failure_raises_engine_error_with_its_stderr(tmp_path: Path) -> None:
    args = [
        "-f",
        "lavfi",
        "-i",
        "testsrc=duration=1",
        "-c:v",
        "no_such_codec",
        str(tmp_path / "x.mp4"),
    ]

    with pytest.raises(EngineError) as raised:
        run_ffmpeg(args, duration=1.0, progress=Recorder(), label="Bad encode")

    message = str(raised.value)
    assert "Bad encode" in message
    assert "no_such_codec" in message


def test_a_failing_frame_feed_surfaces_as_engine_error_and_kills_ffmpeg(tmp_path: Path) -> None:
    output = tmp_path / "feed-fails.mp4"

    def feed(stdin: BinaryIO) -> None:
        stdin.write(bytes(64 * 64 * 3))
        raise ValueError("a frame could not be drawn")

    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x64", "-r", "24", "-i", "pipe:0"]
    with pytest.raises(EngineError, match="a frame could not be drawn"):
        run_ffmpeg(
            [*args, "-y", str(output)], duration=1.0, progress=Recorder(), feed=feed, label="x"
        )

    assert wait_until(lambda: not processes_mentioning(str(output)))
