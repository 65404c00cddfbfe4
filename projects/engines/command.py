"""The command engine: a team's own pipeline script renders each scene.

`RENDER_COMMAND` runs once per scene as a child process in its own process
group. It learns what to render from `VIDEOCREATION_*` environment variables
(the scene as a JSON file, where to write the clip, a checkpoint file and a
work folder that both survive retries) and reports as it goes: every line it
prints, on stdout or stderr, is read as it comes, `PROGRESS <stage> <current>/<total>` and
`{"progress": 0.42, "message": "…"}` lines move the bar, the others go to the
job's log, and the checkpoint file's `completed_steps` move it too.

Exit 0 with a playable H.264 clip is success; exit 75 (EX_TEMPFAIL) asks for
another attempt; any other exit fails the job with the script's last lines.
A stop (cancel, lost lease, time limit, any error of ours) ends the whole
group: SIGTERM, a grace of `RENDER_COMMAND_STOP_GRACE_SECONDS`, then SIGKILL.
A worker that dies takes the script with it (Linux's parent-death signal),
and the group's id stays in a pid file in the job's work folder until the
group is reaped, so the next attempt ends whatever an earlier one left running.

The script runs in the scene's work folder, with an allow-listed environment:
the worker's secrets (SECRET_KEY, database and broker URLs, API keys) never
reach it; `RENDER_COMMAND_ENV` names what else may pass through.
The script job's stages stay the local engine's, as does `compose`, which
joins the clips without re-encoding them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from projects.engines.base import (
    EngineError,
    ProjectSpec,
    Scene,
    StageProgress,
    TransientEngineError,
)
from projects.engines.drawing import RENDER_FPS
from projects.engines.ffmpeg import POLL_SECONDS, ffmpeg_exe, probe_clip
from projects.engines.local import LocalEngine, check_scene, check_spec

# sysexits.h's "temporary failure; user is invited to retry".
EXIT_TRY_AGAIN = 75
TAIL_LINES = 10
# A script that prints without newlines still gets its output logged, in pieces.
MAX_LINE_BYTES = 64 * 1024
# The child exited but something it started still holds its pipes open.
DRAIN_SECONDS = 1.0
# What a script passes on from the worker's environment, beside RENDER_COMMAND_ENV.
# Enough to find programs (PATH), write caches and temporary files (HOME,
# TMPDIR), know who runs it (USER, LOGNAME: some tools ask) and read and print
# text and dates as the machine does (LANG, LANGUAGE, LC_*, TZ). Everything
# else, the product's secrets first, stays in the worker.
PASSED_ENV = ("PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ")
PASSED_ENV_PREFIXES = ("LC_",)
# Left in the job's work folder while a command runs: its process group id.
PID_FILE = "render-command.pid"
# linux/prctl.h: deliver a signal to this process when its parent dies.
_PR_SET_PDEATHSIG = 1

logger = logging.getLogger(__name__)
_PROGRESS_LINE = re.compile(
    r"^PROGRESS\s+(?:(?P<stage>.+?)\s+)?(?P<current>\d+)\s*/\s*(?P<total>\d+)\s*$"
)
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class ScenePaths:
    """Where one scene's run keeps its files, all beside the clip it makes."""

    clip: Path
    checkpoint: Path
    workdir: Path
    scene_file: Path

    @classmethod
    def beside(cls, clip_path: Path) -> ScenePaths:
        workdir = clip_path.with_suffix(".work")
        return cls(
            clip=clip_path,
            checkpoint=clip_path.with_suffix(".checkpoint.json"),
            workdir=workdir,
            scene_file=workdir / "scene.json",
        )


class CommandEngine(LocalEngine):
    name = "command"

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        check_spec(spec)
        check_scene(scene)
        command = command_from_settings()
        paths = ScenePaths.beside(clip_path)
        label = f"Scene {scene.index + 1}"
        paths.workdir.mkdir(parents=True, exist_ok=True)
        group = _Group(job_workdir(spec.project_id), spec.project_id)
        if group.reap_earlier():
            progress.log(f"{label}: stopped what an earlier try of the command left running")
        # The program's name only: a command line may carry a token.
        progress.log(f"{label}: running the render command ({Path(command[0]).name})")
        with _clip_output(clip_path) as output:
            paths.scene_file.write_text(json.dumps(scene_document(spec, scene, paths, output)))
            env = environment(spec, scene, paths, output)
            bar = _Bar(progress, paths.checkpoint, label)
            status, tail = _run(command, env, paths.workdir, group, bar, progress, label)
            _check_exit(status, tail, output, label)
            _check_clip(output, spec, label)
        # The clip is the checkpoint from now on; the script's own is spent.
        paths.checkpoint.unlink(missing_ok=True)
        shutil.rmtree(paths.workdir, ignore_errors=True)
        progress.update(1.0)
        progress.log(f"{label} rendered by the command: {clip_path.stat().st_size // 1024} KB")


def command_from_settings() -> list[str]:
    raw = settings.RENDER_COMMAND
    try:
        command = shlex.split(raw)
    except ValueError as error:
        raise EngineError(f"RENDER_COMMAND cannot be read ({error}): {raw!r}") from error
    if not command:
        raise EngineError(
            "RENDER_COMMAND is not set: the command render engine needs the command to run."
        )
    # The script runs in its work folder; a relative program path still means
    # what it meant where the worker was started.
    if os.sep in command[0] and not os.path.isabs(command[0]):
        command[0] = os.path.abspath(command[0])
    return command


def job_workdir(project_id: str) -> Path:
    """The job's own folder for the engine's bookkeeping, beside its clips."""
    return Path(settings.MEDIA_ROOT) / "projects" / project_id / "work"


def scene_document(
    spec: ProjectSpec, scene: Scene, paths: ScenePaths, output: Path
) -> dict[str, Any]:
    """What `VIDEOCREATION_SCENE` points at: everything the script needs in one file."""
    width, height = spec.size
    return {
        "project": asdict(spec),
        "scene": scene.to_dict(),
        "video": {
            "width": width,
            "height": height,
            "fps": RENDER_FPS,
            "seconds": scene.seconds,
            "codec": "h264",
            "pixel_format": "yuv420p",
        },
        "output": str(output),
        "checkpoint": str(paths.checkpoint),
        "workdir": str(paths.workdir),
    }


def environment(spec: ProjectSpec, scene: Scene, paths: ScenePaths, output: Path) -> dict[str, str]:
    width, height = spec.size
    return _passed_env() | {
        "VIDEOCREATION_SCENE": str(paths.scene_file),
        "VIDEOCREATION_OUTPUT": str(output),
        "VIDEOCREATION_CHECKPOINT": str(paths.checkpoint),
        "VIDEOCREATION_WORKDIR": str(paths.workdir),
        "VIDEOCREATION_PROJECT_ID": spec.project_id,
        "VIDEOCREATION_SCENE_INDEX": str(scene.index),
        "VIDEOCREATION_SCENE_COUNT": str(spec.scene_count),
        "VIDEOCREATION_WIDTH": str(width),
        "VIDEOCREATION_HEIGHT": str(height),
        "VIDEOCREATION_FPS": str(RENDER_FPS),
        "VIDEOCREATION_SECONDS": f"{scene.seconds:g}",
        "VIDEOCREATION_FFMPEG": ffmpeg_exe(),
        # Python scripts would otherwise hold their prints until they exit.
        "PYTHONUNBUFFERED": "1",
    }


def _passed_env() -> dict[str, str]:
    """The part of the worker's environment a script may see: an allow-list, never a deny-list."""
    named = set(PASSED_ENV) | set(settings.RENDER_COMMAND_ENV)
    return {
        name: value
        for name, value in os.environ.items()
        if name in named or name.startswith(PASSED_ENV_PREFIXES)
    }


@contextlib.contextmanager
def _clip_output(clip_path: Path) -> Iterator[Path]:
    """A path beside the clip, moved into place only if the block succeeds.

    Unlike the local engine's `_atomic_output`, the file is not created ahead
    (so "the script wrote nothing" is plain to see) and it ends in `.mp4`
    (so a script may hand it to ffmpeg, which picks the format by extension).
    """
    partial = clip_path.with_name(f".{clip_path.stem}-{uuid.uuid4().hex[:8]}.part.mp4")
    try:
        yield partial
        os.replace(partial, clip_path)
    finally:
        partial.unlink(missing_ok=True)


# --- Running the command ---------------------------------------------------------


def _run(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    group: _Group,
    bar: _Bar,
    progress: StageProgress,
    label: str,
) -> tuple[int, list[str]]:
    """Run the command to its end, reporting as it goes; its exit status and last lines."""
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # One pipe for both keeps the lines in the order the script wrote
            # them, so the last lines of a failure are the last it wrote.
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
    except OSError as error:
        logger.warning("RENDER_COMMAND %r could not be started", command[0], exc_info=True)
        reason = error.strerror or type(error).__name__
        raise EngineError(f"{label}: the render command could not be started: {reason}") from error
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        group.record(proc.pid)
        bar.start()
        _follow(proc, bar, progress, tail)
        status = _wait(proc, progress)
    except BaseException:
        _stop_group(proc)
        group.forget()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    # Anything the script left running in its group goes with it.
    _stop_group(proc)
    group.forget()
    return status, list(tail)


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec so that it dies with the worker (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, before the fork: the child should do as little as it can.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The worker died between the fork and the prctl: nobody will send the signal.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def _follow(
    proc: subprocess.Popen[bytes], bar: _Bar, progress: StageProgress, tail: deque[str]
) -> None:
    """Read the output as it comes until the pipe closes (or the child is long gone)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    lines = _Lines()
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while lines.open:
            progress.check()
            bar.refresh()
            if selector.select(POLL_SECONDS):
                for line in lines.read(fd):
                    _take_line(line, bar, progress, tail)
            if proc.poll() is not None:
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > DRAIN_SECONDS:
                    return


class _Lines:
    """Whole lines out of a pipe read in chunks; a last line without a newline counts too."""

    def __init__(self) -> None:
        self.pending = b""
        self.open = True

    def read(self, fd: int) -> list[str]:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            self.open = False
            return _decode([self.pending])
        *lines, self.pending = _LINE_BREAK.split(self.pending + chunk)
        if len(self.pending) > MAX_LINE_BYTES:
            lines.append(self.pending)
            self.pending = b""
        return _decode(lines)


def _decode(lines: list[bytes]) -> list[str]:
    decoded = (line.decode("utf-8", "replace").rstrip() for line in lines)
    return [line for line in decoded if line]


def _take_line(line: str, bar: _Bar, progress: StageProgress, tail: deque[str]) -> None:
    # Progress lines move the bar and its message; logging them too would bury
    # the script's real output under one line per frame.
    if bar.read_line(line):
        return
    progress.log(line)
    tail.append(line[:300])


def _wait(proc: subprocess.Popen[bytes], progress: StageProgress) -> int:
    # The pipes are closed, yet the child may still be working; keep checking.
    while True:
        progress.check()
        try:
            return proc.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's whole process group, a grace to tidy up, then SIGKILL; reap it."""
    # start_new_session made the child a group leader: its pgid is its pid,
    # and the group outlives it while anything it started is still running.
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + settings.RENDER_COMMAND_STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _signal_group(pgid, 0):
                break
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False if nothing is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


class _Group:
    """The pid file that remembers a running command's process group, and its use after a crash.

    The child dies with the worker, but what it started lives on in its group.
    A process whose group and environment match the file is ours for sure: a
    group id cannot be handed out again while a process of the group lives.
    """

    def __init__(self, workdir: Path, project_id: str) -> None:
        self.pid_file = workdir / PID_FILE
        self.marker = f"VIDEOCREATION_PROJECT_ID={project_id}".encode()

    def record(self, pgid: int) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{pgid}\n")

    def forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)

    def reap_earlier(self) -> bool:
        """Kill the group an earlier attempt left running, if it is still ours; True if it was."""
        try:
            pgid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            self.forget()
            return False
        ours = pgid > 1 and any(self._is_ours(pid) for pid in _members(pgid))
        if ours:
            logger.warning("Killing process group %s left by an earlier render attempt", pgid)
            _signal_group(pgid, signal.SIGKILL)
        self.forget()
        return ours

    def _is_ours(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return self.marker in environ.split(b"\0")


def _members(pgid: int) -> list[int]:
    """The processes of group `pgid`, read from /proc (empty where there is none)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # The fields after the command name (which may hold spaces and parentheses).
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


# --- Reading its progress --------------------------------------------------------


class _Bar:
    """The scene's share of the bar, from the command's lines and its checkpoint file.

    A `PROGRESS` line counts within the step it names: when the checkpoint
    says how many steps there are, the bar is (steps done + current/total) /
    total_steps. A JSON line's `progress` is the scene's share as it stands.
    The bar never moves back within the scene.
    """

    def __init__(self, progress: StageProgress, checkpoint: Path, label: str) -> None:
        self.progress = progress
        self.checkpoint = checkpoint
        self.label = label
        self.best = 0.0
        self.completed: list[str] = []
        self.total_steps: int | None = None
        self.seen: tuple[int, int] | None = None
        self.started = False

    def start(self) -> None:
        """Read what a previous attempt left in the checkpoint, before the command runs."""
        self.refresh()
        self.started = True

    def read_line(self, line: str) -> bool:
        """Report `line` if it is a progress line; False if it is not one."""
        self.refresh()
        match = _PROGRESS_LINE.match(line)
        if match:
            return self._step_line(match)
        if line.startswith("{"):
            return self._json_line(line)
        return False

    def refresh(self) -> None:
        """Re-read the checkpoint file if it changed since the last look."""
        try:
            stat = self.checkpoint.stat()
        except FileNotFoundError:
            return
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self.seen:
            return
        try:
            state = json.loads(self.checkpoint.read_text())
            steps = [str(step) for step in state["completed_steps"]]
        except (OSError, ValueError, KeyError, TypeError):
            return  # half written, most likely: look again next time
        self.seen = signature
        total = state.get("total_steps")
        if isinstance(total, int) and not isinstance(total, bool) and total > 0:
            self.total_steps = total
        self._steps_done(steps)

    def _steps_done(self, steps: list[str]) -> None:
        new = [step for step in steps if step not in self.completed]
        if not new:
            return
        self.completed = steps
        of_total = f" of {self.total_steps}" if self.total_steps else ""
        if self.started:
            self.progress.log(f"Step done: {', '.join(new)} ({len(steps)}{of_total})")
        else:
            self.progress.log(f"The checkpoint of an earlier try has {', '.join(new)} done")
        fraction = len(steps) / self.total_steps if self.total_steps else self.best
        self._report(fraction, f"{new[-1]} done ({len(steps)}{of_total} steps)")

    def _step_line(self, match: re.Match[str]) -> bool:
        current, total = int(match["current"]), int(match["total"])
        if total == 0:
            return False
        stage = match["stage"] or ""
        message = f"{stage} {current}/{total}".strip()
        fraction = current / total
        if self.total_steps:
            done = len(self.completed)
            # The step's last line may be read after the checkpoint that ends it.
            share = 0.0 if stage in self.completed else fraction
            fraction = (done + share) / self.total_steps
        self._report(fraction, message)
        return True

    def _json_line(self, line: str) -> bool:
        try:
            report = json.loads(line)
        except ValueError:
            return False
        if not isinstance(report, dict):
            return False
        fraction = report.get("progress")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            return False
        message = report.get("message")
        self._report(float(fraction), str(message) if message is not None else None)
        return True

    def _report(self, fraction: float, message: str | None) -> None:
        self.best = max(self.best, min(max(fraction, 0.0), 1.0))
        # The message stands in for the stage's "Rendering scene 2 of 4": keep the scene.
        self.progress.update(self.best, f"{self.label}: {message}" if message else None)


# --- Checking what it made -------------------------------------------------------


def _check_exit(status: int, tail: list[str], output: Path, label: str) -> None:
    said = _said(tail)
    if status == EXIT_TRY_AGAIN:
        raise TransientEngineError(
            f"{label}: the render command asked to be run again (exit code 75). {said}"
        )
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else "a signal"
        raise EngineError(f"{label}: the render command was killed by {name}. {said}")
    if status != 0:
        raise EngineError(f"{label}: the render command failed with exit code {status}. {said}")
    if not output.is_file() or output.stat().st_size == 0:
        raise EngineError(
            f"{label}: the render command exited 0 but wrote no clip to VIDEOCREATION_OUTPUT. "
            f"{said}"
        )


def _said(tail: list[str]) -> str:
    if not tail:
        return "It printed nothing."
    return "Its last lines:\n" + "\n".join(tail)


def _check_clip(path: Path, spec: ProjectSpec, label: str) -> None:
    """The clips are joined without re-encoding, so each must be H.264 yuv420p at the size."""
    clip = probe_clip(path)
    if clip is None or clip.seconds is None:
        raise EngineError(f"{label}: the file the command wrote is not a video ffmpeg can play.")
    if (clip.codec, clip.pixel_format, clip.size) != ("h264", "yuv420p", spec.size):
        raise EngineError(
            f"{label}: the command wrote a {clip.codec} {clip.pixel_format} video at "
            f"{clip.width}x{clip.height}; it must be h264 yuv420p at {spec.size[0]}x{spec.size[1]}."
        )
