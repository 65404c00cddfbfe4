"""What a person would check about a video file, read from ffmpeg's own description of it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg


@dataclass(frozen=True)
class VideoInfo:
    seconds: float
    codec: str
    pixel_format: str
    width: int
    height: int


def probe(path: Path) -> VideoInfo:
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text = result.stderr
    duration = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", text)
    stream = re.search(r"Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)", text)
    assert duration and stream, f"ffmpeg does not see a video in {path}:\n{text}"
    hours, minutes, seconds = duration.groups()
    return VideoInfo(
        seconds=int(hours) * 3600 + int(minutes) * 60 + float(seconds),
        codec=stream.group(1),
        pixel_format=stream.group(2),
        width=int(stream.group(3)),
        height=int(stream.group(4)),
    )


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (e.g. a project's work folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
