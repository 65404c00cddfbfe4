"""Running ffmpeg as a child process while reporting its progress live.

ffmpeg runs in its own process group so that a stop (cancel, lost lease,
time limit, Ctrl-C) can kill it and anything it spawned in one go, and it
reports through `-progress pipe:1`, which we read without ever blocking for
long, so that `progress.check()` keeps being called even when ffmpeg is quiet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import imageio_ffmpeg

from projects.engines.base import EngineError, StageProgress

logger = logging.getLogger(__name__)

Feed = Callable[[BinaryIO], None]

# Short enough that a stop is noticed quickly, long enough not to spin.
POLL_SECONDS = 0.5
# ffmpeg's default is 0.5 s: a short clip would report once or twice. Parsing
# a dozen lines ten times a second costs nothing; the Reporter coalesces writes.
STATS_PERIOD = "0.1"
STDERR_TAIL_LINES = 8
_OUT_TIME_KEYS = ("out_time_us", "out_time_ms")  # both are microseconds in ffmpeg


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Clip:
    """What ffmpeg reads in a file's header (and, if asked, whether its first frame decodes)."""

    codec: str
    pixel_format: str
    width: int
    height: int
    seconds: float | None
    decodes: bool
    has_audio: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


_VIDEO_STREAM = re.compile(r"Video: (\w+)[^,]*, (\w+)[^,]*(?:\([^)]*\))?, (\d+)x(\d+)")
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+\S*: Audio: ")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def probe_clip(path: Path, *, decode_first_frame: bool = False) -> Clip | None:
    """The file's first video stream as ffmpeg reads it, or None if it has none ffmpeg can read.

    With `decode_first_frame`, ffmpeg also decodes one frame: a file cut short
    can have a whole header and still not play.
    """
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    if decode_first_frame:
        args += ["-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"]
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return None
    stream = _VIDEO_STREAM.search(result.stderr)
    if not stream:
        return None
    codec, pixel_format, width, height = stream.groups()
    duration = _DURATION.search(result.stderr)
    seconds = None
    if duration:
        hours, minutes, rest = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest)
    return Clip(
        codec=codec,
        pixel_format=pixel_format,
        width=int(width),
        height=int(height),
        seconds=seconds,
        decodes=decode_first_frame and result.returncode == 0,
        has_audio=_AUDIO_STREAM.search(result.stderr) is not None,
    )


def run_ffmpeg(
    args: list[str],
    *,
    duration: float,
    progress: StageProgress,
    feed: Feed | None = None,
    label: str,
) -> None:
    """Run ffmpeg with `args`, reporting `out_time / duration` through `progress`.

    `feed`, if given, is called in a thread with ffmpeg's stdin and writes the
    input to it. Any exception here (JobStopped included) kills ffmpeg's process
    group before it propagates; a non-zero exit raises EngineError.
    """
    if duration <= 0:
        raise EngineError(f"{label}: output duration must be positive, not {duration}")
    with tempfile.TemporaryFile() as stderr_file:
        has_feed = feed is not None
        proc = _start(
            _command(args, has_feed=has_feed),
            stderr_file,
            label,
            stdin=subprocess.PIPE if has_feed else subprocess.DEVNULL,
        )
        feeder = _Feeder(proc, feed) if feed is not None else None
        try:
            if feeder is not None:
                feeder.start()
            ended = _follow(proc, duration, progress, feeder, label)
            proc.wait()
        except BaseException:
            _kill(proc)
            raise
        finally:
            if feeder is not None:
                feeder.join()
            _close_pipes(proc)
        if feeder is not None and feeder.error is not None:
            raise EngineError(f"{label}: writing frames failed: {feeder.error!r}") from feeder.error
        if proc.returncode != 0:
            tail = _tail(stderr_file)
            raise EngineError(f"{label}: ffmpeg exited with status {proc.returncode}: {tail}")
    if ended:
        progress.update(1.0)


def pipe_frames(args: list[str], frames: Iterable[bytes], *, label: str) -> None:
    """Run ffmpeg with `args`, writing `frames` to its stdin from this thread, one at a time.

    For encoders that report no progress until they finish (the animated WebP
    encoder assembles its file at the end): the caller reports progress as it
    makes each frame, and nothing holds more than one frame. Any exception
    (JobStopped included) kills ffmpeg before it propagates.
    """
    with tempfile.TemporaryFile() as stderr_file:
        command = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", *args]
        proc = _start(command, stderr_file, label, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        try:
            for frame in frames:
                proc.stdin.write(frame)
            proc.stdin.close()
            proc.wait()
        except BrokenPipeError:
            proc.wait()  # ffmpeg stopped reading: its own words say why, below
        except BaseException:
            _kill(proc)
            raise
        finally:
            _close_quietly(proc.stdin)
        if proc.returncode != 0:
            tail = _tail(stderr_file)
            raise EngineError(f"{label}: ffmpeg exited with status {proc.returncode}: {tail}")


def read_sound(path: Path, sample_rate: int) -> Generator[bytes, None, None]:
    """The file's first audio stream as 16-bit mono PCM at `sample_rate`, a block at a time.

    Closing the generator early kills ffmpeg; a file whose sound cannot be
    decoded raises EngineError.
    """
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path)]
    command += ["-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "pipe:1"]
    label = f"Reading the sound of {path.name}"
    with tempfile.TemporaryFile() as stderr_file:
        proc = _start(command, stderr_file, label, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            while block := proc.stdout.read(65536):
                yield block
            proc.wait()
        finally:
            _kill(proc)  # only if it still runs: the caller stopped reading
            _close_quietly(proc.stdout)
        if proc.returncode != 0:
            tail = _tail(stderr_file)
            raise EngineError(f"{label}: ffmpeg exited with status {proc.returncode}: {tail}")


def _command(args: list[str], *, has_feed: bool) -> list[str]:
    head = [ffmpeg_exe(), "-hide_banner"]
    if not has_feed:
        head.append("-nostdin")
    head += ["-progress", "pipe:1", "-stats_period", STATS_PERIOD, "-nostats"]
    return [*head, "-loglevel", "error", *args]


def _start(
    cmd: list[str],
    stderr_file: IO[bytes],
    label: str,
    *,
    stdin: int,
    stdout: int = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """ffmpeg in a process group of its own (so a kill reaches what it starts)."""
    try:
        return subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=stdout,
            # A file, not a pipe: nobody reads stderr while ffmpeg runs, and a
            # full pipe would block ffmpeg forever.
            stderr=stderr_file,
            start_new_session=True,
        )
    except OSError as exc:
        # The binary's path is for the worker's log; the job's error gets the reason.
        logger.warning("%s: could not start %s", label, cmd[0], exc_info=True)
        reason = exc.strerror or type(exc).__name__
        raise EngineError(f"{label}: could not start ffmpeg: {reason}") from exc


def _follow(
    proc: subprocess.Popen[bytes],
    duration: float,
    progress: StageProgress,
    feeder: _Feeder | None,
    label: str,
) -> bool:
    """Read `-progress` output until ffmpeg closes stdout; True if it reported the end."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    ended = False
    last = 0.0
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            progress.check()
            if feeder is not None and feeder.error is not None:
                raise EngineError(
                    f"{label}: writing frames failed: {feeder.error!r}"
                ) from feeder.error
            if not selector.select(POLL_SECONDS):
                continue
            # os.read, not readline: it returns what is there instead of
            # waiting for a whole line.
            chunk = os.read(fd, 65536)
            if not chunk:
                return ended
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                key, _, value = line.decode("utf-8", "replace").strip().partition("=")
                if key == "progress" and value == "end":
                    ended = True
                fraction = _fraction(key, value, duration)
                # out_time_us and out_time_ms repeat the same value; report once.
                if fraction is not None and fraction > last:
                    last = fraction
                    progress.update(fraction)


def _fraction(key: str, value: str, duration: float) -> float | None:
    if key not in _OUT_TIME_KEYS:
        return None
    try:
        microseconds = int(value)
    except ValueError:  # "N/A" before the first frame is out
        return None
    return min(max(microseconds / 1_000_000 / duration, 0.0), 1.0)


class _Feeder:
    """Writes ffmpeg's input from a thread, so the caller can keep reading progress."""

    def __init__(self, proc: subprocess.Popen[bytes], feed: Feed) -> None:
        assert proc.stdin is not None
        self.error: BaseException | None = None
        self._stdin = proc.stdin
        self._feed = feed
        self._thread = threading.Thread(target=self._run, name="ffmpeg-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            self._feed(self._stdin)
        except BrokenPipeError:
            # ffmpeg died or was killed; its exit status tells why. Closing is still right.
            _close_quietly(self._stdin)
            return
        except BaseException as exc:
            # Leave stdin open: closing it would let ffmpeg finish a truncated
            # output as if it were whole. The caller sees the error and kills it.
            self.error = exc
            return
        _close_quietly(self._stdin)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:
        # start_new_session made ffmpeg a group leader, so its pgid is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            _close_quietly(stream)


def _close_quietly(stream: IO[bytes]) -> None:
    # Unflushed frames for a dead ffmpeg, or a stream closed already.
    with contextlib.suppress(BrokenPipeError, ValueError):
        stream.close()


def _tail(stderr_file: IO[bytes]) -> str:
    stderr_file.seek(0)
    lines = stderr_file.read().decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-STDERR_TAIL_LINES:]) or "(no error output)"
