"""What a person sees and hears in a local video: captions timed across each scene, the
narration spoken with them, and a script written for the brief (and a new one on rewrite)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from projects import lifecycle, tasks
from projects.engines import speech
from projects.engines.base import ProjectSpec, Scene
from projects.engines.drawing import (
    CAPTION_WORDS,
    MIN_CAPTION_SECONDS,
    caption_at,
    caption_chunks,
    draw_frame,
)
from projects.engines.ffmpeg import ffmpeg_exe
from projects.engines.local import LocalEngine
from projects.engines.writing import outline_scenes
from projects.models import Status, Step, VideoProject
from tests.test_local_engine import Recorder

SPEC = ProjectSpec(
    project_id="narrated",
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
NARRATION = "Sleepers leave Vienna at dusk, and by morning the passengers wake up by the sea."

needs_speech = pytest.mark.skipif(
    speech.unavailable_reason() is not None,
    reason=f"no speech synthesizer here: {speech.unavailable_reason()}",
)


def no_synthesizer() -> None:
    raise speech.SpeechUnavailable("the espeakng-loader package (eSpeak NG) is not installed")


def render(spec: ProjectSpec, scenes: list[Scene], folder: Path, progress: Recorder) -> Path:
    engine = LocalEngine(seed=1)
    clips = []
    for scene in scenes:
        clip = folder / "clips" / f"scene-{scene.index}.mp4"
        engine.render_scene(spec, scene, clip, progress)
        clips.append(clip)
    video = folder / "video.mp4"
    engine.compose(spec, clips, video, progress)
    return video


def ffmpeg_says(*args: str) -> str:
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False).stderr


def decoded_seconds(video: Path, stream: str) -> float:
    """How long a stream plays, by decoding all of it (not what the header claims)."""
    said = ffmpeg_says("-i", str(video), "-map", f"0:{stream}:0", "-f", "null", "-")
    hours, minutes, seconds = re.findall(r"time=(\d+):(\d+):([\d.]+)", said)[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def frame_at(video: Path, seconds: float, size: tuple[int, int]) -> Image.Image:
    command = [ffmpeg_exe(), "-v", "error", "-ss", f"{seconds}", "-i", str(video)]
    command += ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    return Image.frombytes("RGB", size, raw)


def mean_difference(first: Image.Image, second: Image.Image, box: tuple[int, ...]) -> float:
    difference = ImageChops.difference(first.crop(box), second.crop(box)).convert("L")
    return ImageStat.Stat(difference).mean[0]


# --- captions: chunks and their timing ------------------------------------------


def test_captions_share_the_scene_by_word_count() -> None:
    captions = caption_chunks(NARRATION, 6.0)
    words = NARRATION.split()

    assert " ".join(caption.text for caption in captions) == NARRATION
    assert len(captions) >= 2
    assert captions[0].start == 0.0
    assert captions[-1].end == pytest.approx(6.0)
    for before, after in pairwise(captions):
        assert before.end == pytest.approx(after.start)
    for caption in captions:
        share = len(caption.text.split()) / len(words)
        assert caption.end - caption.start == pytest.approx(6.0 * share)
        assert len(caption.text.split()) <= CAPTION_WORDS + 2


def test_a_caption_ends_at_a_pause_when_one_is_near() -> None:
    captions = caption_chunks(NARRATION, 6.0)

    assert captions[0].text == "Sleepers leave Vienna at dusk,"


def test_a_long_narration_in_a_short_scene_gets_fewer_longer_captions() -> None:
    narration = " ".join(f"word{k}" for k in range(30))

    captions = caption_chunks(narration, 2.0)

    assert len(captions) <= 2
    assert all(c.end - c.start >= MIN_CAPTION_SECONDS - 1e-9 for c in captions)


def test_no_caption_is_left_with_a_word_or_two() -> None:
    captions = caption_chunks("One two three four five six seven eight", 8.0)

    assert all(len(caption.text.split()) >= 3 for caption in captions)


def test_the_caption_on_screen_follows_the_clock() -> None:
    captions = caption_chunks(NARRATION, 6.0)

    assert caption_at(captions, 0.0) == 0
    assert caption_at(captions, captions[1].start) == 1
    assert caption_at(captions, 6.0) == len(captions) - 1
    assert caption_at(captions, 6.5) is None
    assert caption_chunks("", 6.0) == []


# --- captions on the frames -----------------------------------------------------


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1"])
def test_a_frame_shows_its_caption_low_wide_enough_and_large_enough(aspect_ratio: str) -> None:
    spec = replace(SPEC, aspect_ratio=aspect_ratio)
    size = spec.size
    scene = Scene(index=0, narration=NARRATION, visual="Dusk", seconds=6.0)
    silent = replace(scene, narration="")

    with_caption = draw_frame(spec, scene, 10, size)
    without = draw_frame(spec, silent, 10, size)

    box = ImageChops.difference(with_caption, without).getbbox()
    assert box is not None, "the caption should change the frame"
    left, top, right, bottom = box
    width, height = size
    assert top > height / 2, "captions sit in the lower part of the frame"
    assert bottom < height - 0.05 * height, "clear of the progress bar and a player's controls"
    assert left > 0 and right < width, "wrapped inside the frame"
    # Three lines at most, each at least 4% of the short side: legible at phone width.
    assert bottom - top >= 0.04 * min(size)
    later = draw_frame(spec, scene, int(5.5 * 24), size)
    assert ImageChops.difference(later, with_caption).crop(box).getbbox() is not None


# --- spoken narration -----------------------------------------------------------


@needs_speech
def test_each_caption_is_spoken_as_it_appears() -> None:
    lines = [speech.Line("Hello there.", 0.0), speech.Line("Goodbye now.", 2.0)]

    narration = speech.narrate(lines, 4.0)

    rate = narration.sample_rate
    samples = memoryview(narration.pcm).cast("h")
    assert len(samples) == 4 * rate  # exactly the scene's length
    assert narration.words_per_minute == speech.CALM_RATE
    assert narration.cut_seconds == 0
    loudest = max(abs(s) for s in samples[int(1.6 * rate) : int(1.95 * rate)])
    assert loudest < 300, "a pause before the second caption"
    assert max(abs(s) for s in samples[int(2.0 * rate) : int(2.5 * rate)]) > 2000
    assert max(abs(s) for s in samples[int(3.9 * rate) :]) < 300


@needs_speech
def test_speech_too_long_for_its_scene_is_spoken_faster_then_cut() -> None:
    words = "The night train leaves Vienna at dusk and reaches the sea by morning light."

    narration = speech.narrate([speech.Line(words, 0.0)], 1.0)

    assert narration.words_per_minute == speech.FASTEST_RATE
    assert narration.cut_seconds > 0
    assert len(narration.pcm) == narration.sample_rate * speech.SAMPLE_WIDTH


@needs_speech
def test_a_rendered_video_has_captions_and_a_narration_as_long_as_it(tmp_path: Path) -> None:
    scenes = [
        Scene(index=0, narration="Sleepers leave Vienna.", visual="Dusk", seconds=1.0),
        Scene(index=1, narration="Morning by the sea.", visual="Sea", seconds=2.0),
    ]
    progress = Recorder()

    video = render(SPEC, scenes, tmp_path, progress)

    header = ffmpeg_says("-i", str(video))
    assert re.search(r"Stream #0:1\S*: Audio: aac", header), header
    video_seconds = decoded_seconds(video, "v")
    assert video_seconds == pytest.approx(3.0, abs=0.1)
    assert decoded_seconds(video, "a") == pytest.approx(video_seconds, abs=0.2)
    loudness = ffmpeg_says(
        "-i", str(video), "-map", "0:a", "-af", "volumedetect", "-f", "null", "-"
    )
    peak = float(re.search(r"max_volume: (-?[\d.]+) dB", loudness).group(1))
    assert peak > -20, "the narration is heard, not silence"
    # The caption of the second scene is on its frames, as drawn (H.264 blurs it a little).
    picture = frame_at(video, 1.5, SPEC.size)
    bare = draw_frame(SPEC, replace(scenes[1], narration=""), 12, SPEC.size)
    captioned = draw_frame(SPEC, scenes[1], 12, SPEC.size)
    box = ImageChops.difference(captioned, bare).getbbox()
    assert mean_difference(picture, bare, box) > 25
    assert mean_difference(picture, captioned, box) < 8
    assert any("Joined 2 scenes" in line and "with sound" in line for line in progress.lines)
    assert not any(line.startswith("No spoken narration") for line in progress.lines)


@needs_speech
def test_speaking_is_part_of_each_scenes_progress(tmp_path: Path) -> None:
    scene = Scene(index=0, narration=NARRATION, visual="Dusk", seconds=2.0)
    progress = Recorder()

    LocalEngine(seed=1).render_scene(SPEC, scene, tmp_path / "scene-0.mp4", progress)

    spoken = [f for f in progress.fractions if 0 < f <= 0.05]
    assert spoken, "the narration moves the bar before the frames do"
    assert progress.fractions == sorted(progress.fractions)
    assert progress.fractions[-1] == pytest.approx(1.0)
    assert any("faster than usual" in line for line in progress.lines)


def test_without_a_synthesizer_the_video_is_silent_and_the_log_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(speech, "_synthesizer", no_synthesizer)
    scenes = [Scene(index=k, narration=NARRATION, visual="Dusk", seconds=1.0) for k in range(2)]
    progress = Recorder()

    video = render(SPEC, scenes, tmp_path, progress)

    assert "Audio:" not in ffmpeg_says("-i", str(video))
    assert decoded_seconds(video, "v") == pytest.approx(2.0, abs=0.1)
    why = [line for line in progress.lines if "narration" in line.lower()]
    assert why == [
        "No spoken narration: the espeakng-loader package (eSpeak NG) is not installed; "
        "the video is silent."
    ]
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "scene-0.mp4",
        "scene-1.mp4",
    ]


# --- the writer -----------------------------------------------------------------

TEMPLATE_PHRASES = (
    "Now a closer look at",
    "There is more to train",
    "than meets the eye",
    "Take a moment to think about",
    "This is Night trains",
    "And that brings",
)


def test_the_script_is_written_from_the_brief_in_varied_words() -> None:
    spec = replace(SPEC, scene_count=4, seconds_per_scene=4)
    scripts = [outline_scenes(spec, seed) for seed in range(20)]

    for scenes in scripts:
        text = " ".join(scene.narration for scene in scenes)
        for brief_words in ("night trains crossing Europe", "Vienna at dusk", "by the sea"):
            assert brief_words.lower() in text.lower()
        assert "A short film about" not in text
        assert not [phrase for phrase in TEMPLATE_PHRASES if phrase in text], text
        assert "Night trains of Europe" in scenes[0].narration
    narrations = {tuple(scene.narration for scene in scenes) for scenes in scripts}
    assert len(narrations) >= 15
    assert outline_scenes(spec, 5) == outline_scenes(spec, 5)


def test_a_scene_without_a_sentence_of_its_own_returns_to_the_subject_in_the_briefs_words() -> None:
    spec = replace(SPEC, brief="Why honey bees matter to every city garden", scene_count=4)

    scenes = outline_scenes(spec, 11)

    middle = " ".join(scene.narration for scene in scenes[1:-1])
    assert "honey bees" in middle.lower()
    assert all(scene.narration for scene in scenes)


@pytest.mark.django_db
def test_two_script_jobs_on_the_same_project_write_different_scripts(
    make_project: Any, settings: Any
) -> None:
    settings.VIDEO_ENGINE = "local"
    project = make_project()
    scripts = []
    for _ in range(2):
        lifecycle.start_job(VideoProject.objects.get(pk=project.pk), Step.SCRIPT)
        tasks.generate_script(str(project.pk))
        written = VideoProject.objects.get(pk=project.pk)
        assert written.status == Status.DRAFT, written.error_message
        scripts.append(written.script_data)

    assert scripts[0] != scripts[1]
    for script in scripts:
        assert "Vienna" in " ".join(scene["narration"] for scene in script["scenes"])
