#!/usr/bin/env python3
"""A team's scene pipeline, as the `command` render engine runs it.

Two steps, each checkpointed so a re-run skips what is done:

  frames   draw every frame of the scene as a PNG in the work folder (Pillow)
  encode   encode the PNGs to H.264 with ffmpeg, a child process of this script

then the encoded clip is copied to the output path. It prints
`PROGRESS <step> <current>/<total>` as it goes, a JSON progress line at the
end, and writes `{"completed_steps": [...], "total_steps": 2}` to the
checkpoint after each step. Bad input: a message on stderr and exit 2; a
failed encode: ffmpeg's last lines on stderr and exit 1.

The videocreation worker passes everything through VIDEOCREATION_* environment
variables; run by hand, give the same as options:

  python examples/pipeline.py --scene scene.json --output clip.mp4

where scene.json holds at least {"video": {"width": 1280, "height": 720,
"fps": 24, "seconds": 2}, "scene": {"narration": "Hello"}}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
from PIL import Image, ImageDraw, ImageFont

STEPS = ("frames", "encode")


class BadInput(Exception):
    """The scene cannot be rendered as given; exit 2 with the message."""


@dataclass(frozen=True)
class Job:
    width: int
    height: int
    fps: int
    seconds: float
    narration: str
    title: str
    style: str
    index: int
    count: int

    @property
    def frame_count(self) -> int:
        return max(1, round(self.seconds * self.fps))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        job = read_job(args.scene)
    except BadInput as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return 2
    workdir = args.workdir or args.output.with_suffix(".work")
    checkpoint = args.checkpoint or workdir / "checkpoint.json"
    workdir.mkdir(parents=True, exist_ok=True)
    if args.pid_file:
        _note_pid(args.pid_file, os.getpid())
    print(
        f"pipeline: scene {job.index + 1} of {job.count}, {job.width}x{job.height}, "
        f"{job.seconds:g} s at {job.fps} fps ({job.frame_count} frames)"
    )
    done = read_checkpoint(checkpoint)
    # Saying how many steps there are up front lets the engine place each
    # step's PROGRESS lines in its share of the bar.
    write_checkpoint(checkpoint, done)
    for step in STEPS:
        if step in done and _kept(step, job, workdir):
            print(f"{step}: done in an earlier run, skipping")
            continue
        if step in done:
            done.remove(step)
        started = time.monotonic()
        if step == "frames":
            draw_frames(job, workdir / "frames")
        else:
            code = encode(job, workdir, args.max_speed, args.pid_file)
            if code != 0:
                return code
        done.append(step)
        write_checkpoint(checkpoint, done)
        print(f"{step}: finished in {time.monotonic() - started:.1f} s")
    shutil.copyfile(workdir / "scene.mp4", args.output)
    kilobytes = args.output.stat().st_size // 1024
    print(json.dumps({"progress": 1.0, "message": f"Clip written ({kilobytes} KB)"}))
    return 0


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="Render one scene to an H.264 clip: draw frames, then encode them."
    )
    parser.add_argument(
        "--scene",
        type=Path,
        default=env("VIDEOCREATION_SCENE"),
        required=not env("VIDEOCREATION_SCENE"),
        help="the scene JSON file (default: $VIDEOCREATION_SCENE)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=env("VIDEOCREATION_OUTPUT"),
        required=not env("VIDEOCREATION_OUTPUT"),
        help="where to write the clip (default: $VIDEOCREATION_OUTPUT)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=env("VIDEOCREATION_CHECKPOINT"),
        help="the checkpoint JSON (default: $VIDEOCREATION_CHECKPOINT, else in the work folder)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=env("VIDEOCREATION_WORKDIR"),
        help="where frames are kept between runs (default: $VIDEOCREATION_WORKDIR, "
        "else OUTPUT with .work)",
    )
    parser.add_argument(
        "--max-speed",
        type=float,
        default=None,
        help="encode at most this many times faster than playback (ffmpeg -readrate), "
        "to leave the CPU to others or to watch the progress",
    )
    parser.add_argument(
        "--pid-file", type=Path, help="append this script's pid and its encoder's for supervisors"
    )
    return parser


def read_job(path: Path) -> Job:
    try:
        document = json.loads(path.read_text())
        video = document["video"]
        scene = document.get("scene", {})
        project = document.get("project", {})
        job = Job(
            width=int(video["width"]),
            height=int(video["height"]),
            fps=int(video["fps"]),
            seconds=float(video["seconds"]),
            narration=str(scene.get("narration", "")),
            title=str(project.get("title", "")),
            style=str(project.get("style", "")),
            index=int(scene.get("index", 0)),
            count=int(project.get("scene_count", 1)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadInput(f"cannot read the scene file {path}: {error!r}") from error
    if job.width % 2 or job.height % 2 or min(job.width, job.height) < 16:
        raise BadInput(f"the frame size must be even and at least 16, not {job.width}x{job.height}")
    if not (0 < job.seconds <= 600 and 1 <= job.fps <= 120):
        raise BadInput(f"cannot render {job.seconds} s at {job.fps} fps")
    return job


# --- Checkpoint ----------------------------------------------------------------


def read_checkpoint(path: Path) -> list[str]:
    try:
        return [str(step) for step in json.loads(path.read_text())["completed_steps"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as error:
        print(f"pipeline: ignoring an unreadable checkpoint {path}: {error!r}", file=sys.stderr)
        return []


def write_checkpoint(path: Path, done: list[str]) -> None:
    # Whole or not at all: whoever reads it never sees half a file.
    state = json.dumps({"completed_steps": done, "total_steps": len(STEPS)})
    _write_atomically(path, state.encode())


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(handle, "wb") as file:
        file.write(content)
    os.replace(name, path)


def _kept(step: str, job: Job, workdir: Path) -> bool:
    """Whether what `step` made is still there (a checkpoint may outlive its files)."""
    if step == "frames":
        return len(list((workdir / "frames").glob("frame-*.png"))) == job.frame_count
    return (workdir / "scene.mp4").is_file()


def _note_pid(path: Path, pid: int) -> None:
    with path.open("a") as file:
        file.write(f"{pid}\n")


# --- Step 1: frames --------------------------------------------------------------


def draw_frames(job: Job, folder: Path) -> None:
    """Draw each frame once: frames left by an interrupted run are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    background = _background(job)
    text = _text_layer(job)
    total = job.frame_count
    for number in range(1, total + 1):
        path = folder / f"frame-{number:05d}.png"
        if not path.exists():
            frame = _frame(job, background, text, (number - 1) / max(total - 1, 1))
            partial = path.with_suffix(".part")
            frame.save(partial, format="PNG", compress_level=1)
            os.replace(partial, path)
        print(f"PROGRESS frames {number}/{total}")


def _background(job: Job) -> Image.Image:
    seed = hashlib.sha256(f"{job.style}|{job.index}".encode()).digest()
    # A dark sky above a lighter horizon, coloured by the style.
    top = [value // 3 for value in seed[:3]]
    bottom = [128 + value // 2 for value in seed[3:6]]
    strip = Image.new("RGB", (1, 256))
    for y in range(256):
        colour = (round(a + (b - a) * y / 255) for a, b in zip(top, bottom, strict=True))
        strip.putpixel((0, y), tuple(colour))
    return strip.resize((job.width, job.height), Image.Resampling.BILINEAR)


def _text_layer(job: Job) -> Image.Image:
    layer = Image.new("RGBA", (job.width, job.height))
    draw = ImageDraw.Draw(layer)
    size = max(12, job.height // 18)
    font = ImageFont.load_default(size=size)
    words, lines, line = job.narration.split(), [], ""
    for word in words:
        if line and draw.textlength(f"{line} {word}", font=font) > job.width * 0.8:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    top = job.height - (len(lines) + 2) * size * 1.3
    for number, text in enumerate(lines):
        y = top + number * size * 1.3
        draw.text((job.width * 0.1 + 2, y + 2), text, font=font, fill=(0, 0, 0, 160))
        draw.text((job.width * 0.1, y), text, font=font, fill=(255, 255, 255, 255))
    draw.text((size, size), job.title, font=font, fill=(255, 255, 255, 200))
    return layer


def _frame(job: Job, background: Image.Image, text: Image.Image, share: float) -> Image.Image:
    """The sun crosses the sky over the scene; the words stay put."""
    frame = background.copy()
    radius = job.height // 8
    x = round(-radius + share * (job.width + 2 * radius))
    y = round(job.height * 0.35 - radius * 1.5 * (1 - (2 * share - 1) ** 2))
    ImageDraw.Draw(frame).ellipse(
        (x - radius, y - radius, x + radius, y + radius), fill=(255, 236, 180)
    )
    frame.paste(text, (0, 0), text)
    return frame


# --- Step 2: encode ----------------------------------------------------------------


def encode(job: Job, workdir: Path, max_speed: float | None, pid_file: Path | None) -> int:
    """Encode the frames to workdir/scene.mp4, reporting ffmpeg's frame count as it goes."""
    ffmpeg = os.environ.get("VIDEOCREATION_FFMPEG") or imageio_ffmpeg.get_ffmpeg_exe()
    target = workdir / "scene.mp4"
    partial = workdir / "scene.part.mp4"
    command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error"]
    command += ["-progress", "pipe:1", "-stats_period", "0.1", "-nostats"]
    if max_speed:
        command += ["-readrate", f"{max_speed:g}"]
    command += ["-framerate", str(job.fps), "-i", str(workdir / "frames" / "frame-%05d.png")]
    command += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    command += ["-r", str(job.fps), "-movflags", "+faststart", "-y", str(partial)]
    with tempfile.TemporaryFile() as errors:
        encoder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        if pid_file:
            _note_pid(pid_file, encoder.pid)
        assert encoder.stdout is not None
        for raw in encoder.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "frame" and value.isdigit():
                print(f"PROGRESS encode {min(int(value), job.frame_count)}/{job.frame_count}")
        code = encoder.wait()
        if code != 0:
            errors.seek(0)
            print(errors.read().decode(errors="replace").strip()[-2000:], file=sys.stderr)
            print(f"pipeline: ffmpeg failed with exit code {code}", file=sys.stderr)
            return 1
    os.replace(partial, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
