"""The command engine: a team's pipeline script run as a child process, read live.

The first tests run the engine in this process with a recording StageProgress
and small scripts written for each test; the last ones run the example
pipeline through a real worker, as `make run` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from projects.engines.base import (
    EngineError,
    JobStopped,
    ProjectSpec,
    Scene,
    TransientEngineError,
)
from projects.engines.command import CommandEngine
from projects.models import EventKind, VideoProject
from tests.conftest import api_client_for
from tests.media import probe
from tests.waiting import wait_for

EXAMPLE = Path(django_settings.BASE_DIR) / "examples" / "pipeline.py"

SPEC = ProjectSpec(
    project_id="command-test",
    title="Night trains of Europe",
    brief="A short film about night trains crossing Europe.",
    aspect_ratio="1:1",
    scene_count=2,
    seconds_per_scene=1,
    style="warm, calm",
)
SCENE = Scene(index=0, narration="Sleepers leave Vienna at dusk.", visual="Dusk", seconds=1.0)

# What the small test scripts share: writing a valid clip, and waiting for the test.
PRELUDE = """\
import json, os, signal, subprocess, sys, time
from pathlib import Path

def make_clip(size=None):
    size = size or f"{os.environ['VIDEOCREATION_WIDTH']}x{os.environ['VIDEOCREATION_HEIGHT']}"
    subprocess.run(
        [os.environ["VIDEOCREATION_FFMPEG"], "-v", "error", "-f", "lavfi",
         "-i", f"color=c=navy:s={size}:d=1:r=24", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-y", os.environ["VIDEOCREATION_OUTPUT"]],
        check=True,
    )

def wait_for_file(path):
    # The test creates it once the engine has reported what the script did.
    deadline = time.monotonic() + 15
    while not Path(path).exists():
        if time.monotonic() > deadline:
            sys.exit(f"the test never created {path}")
        time.sleep(0.01)

def write_checkpoint(steps, total):
    Path(os.environ["VIDEOCREATION_CHECKPOINT"]).write_text(
        json.dumps({"completed_steps": steps, "total_steps": total})
    )
"""


class Recorder:
    """A StageProgress that remembers what it was told; hooks let a test act on a report."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.messages: list[str] = []
        self.lines: list[str] = []
        self.checks = 0
        self.stop_when: Callable[[], bool] = lambda: False
        self.on_update: Callable[[float], None] = lambda fraction: None
        self.on_line: Callable[[str], None] = lambda line: None
        self.on_check: Callable[[int], None] = lambda checks: None

    def update(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)
        if message:
            self.messages.append(message)
        self.on_update(fraction)
        self.check()

    def log(self, line: str) -> None:
        self.lines.append(line)
        self.on_line(line)

    def check(self) -> None:
        self.checks += 1
        self.on_check(self.checks)
        if self.stop_when():
            raise JobStopped("stopped by the test")


@pytest.fixture
def command(settings: Any, tmp_path: Path) -> Callable[..., str]:
    """Write a test script and make it RENDER_COMMAND; returns the command line."""
    settings.RENDER_COMMAND_STOP_GRACE_SECONDS = 0.5

    def use(body: str | None = None, *args: str) -> str:
        if body is None:
            script = EXAMPLE
        else:
            script = tmp_path / "team-script.py"
            script.write_text(PRELUDE + body)
        settings.RENDER_COMMAND = shlex.join([sys.executable, str(script), *args])
        return settings.RENDER_COMMAND

    return use


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return tmp_path / "clips" / "scene-0-abc.mp4"


@pytest.fixture(autouse=True)
def _no_stray_scripts(tmp_path: Path) -> Iterator[None]:
    yield
    # Whatever a failed test left running is killed, so it cannot slow the next one.
    for name in ("pids", "pipeline.pids"):
        for pid in pids_in(tmp_path / name):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def render(clip: Path, progress: Recorder) -> None:
    clip.parent.mkdir(parents=True, exist_ok=True)
    CommandEngine().render_scene(SPEC, SCENE, clip, progress)


def alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie waiting for its reaper does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


# --- The engine on its own -------------------------------------------------------


def test_the_example_pipeline_renders_a_playable_clip(
    command: Callable[..., str], clip: Path
) -> None:
    command()
    progress = Recorder()

    render(clip, progress)

    video = probe(clip)
    assert (video.codec, video.pixel_format, video.width, video.height) == (
        "h264",
        "yuv420p",
        720,
        720,
    )
    assert video.seconds == pytest.approx(1.0, abs=0.1)
    assert "pipeline: scene 1 of 2, 720x720, 1 s at 24 fps (24 frames)" in progress.lines
    assert any(line.startswith("frames: finished") for line in progress.lines)
    assert progress.fractions == sorted(progress.fractions)
    assert len(set(progress.fractions)) >= 10
    assert "Scene 1: frames 12/24" in progress.messages
    assert any(message.startswith("Scene 1: encode ") for message in progress.messages)
    assert progress.fractions[-1] == 1.0
    # The checkpoint and the frames were the script's until the clip was saved.
    assert sorted(path.name for path in clip.parent.iterdir()) == [clip.name]


def test_progress_lines_move_the_bar_and_other_lines_go_to_the_log(
    command: Callable[..., str], clip: Path
) -> None:
    command("""
print("loading the model")
for step in range(1, 5):
    print(f"PROGRESS draw {step}/4")
print(json.dumps({"progress": 0.2, "message": "going back is not allowed"}))
print(json.dumps({"event": "not progress"}))
print("a warning", file=sys.stderr)
make_clip()
""")
    progress = Recorder()

    render(clip, progress)

    assert progress.fractions == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert progress.messages[:5] == [
        "Scene 1: draw 1/4",
        "Scene 1: draw 2/4",
        "Scene 1: draw 3/4",
        "Scene 1: draw 4/4",
        "Scene 1: going back is not allowed",
    ]
    assert progress.lines[1:4] == ["loading the model", '{"event": "not progress"}', "a warning"]
    assert not any("PROGRESS" in line for line in progress.lines)


def test_json_lines_move_the_bar_with_their_message(
    command: Callable[..., str], clip: Path
) -> None:
    command("""
for share in (0.1, 0.42, 0.9):
    print(json.dumps({"progress": share, "message": f"{share:.0%} of the scene"}))
make_clip()
""")
    progress = Recorder()

    render(clip, progress)

    assert progress.fractions[:3] == [0.1, 0.42, 0.9]
    assert progress.messages[:3] == [
        "Scene 1: 10% of the scene",
        "Scene 1: 42% of the scene",
        "Scene 1: 90% of the scene",
    ]


def test_output_is_read_as_it_comes_and_check_runs_while_the_script_is_silent(
    command: Callable[..., str], clip: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    command(f"""
sys.stdout.buffer.write(b"half a ")
sys.stdout.buffer.flush()
sys.stdout.buffer.write(b"line \\xff\\r\\nready\\n")
sys.stdout.buffer.flush()
wait_for_file({str(go)!r})
sys.stdout.buffer.write(b"no newline at the end")
make_clip()
""")
    progress = Recorder()
    seen_at: dict[str, int] = {}
    progress.on_line = lambda line: seen_at.setdefault(line, progress.checks)

    def release(checks: int) -> None:
        # Only the engine's own checks can get us here: the script says nothing
        # until it sees the file, so three of them mean a second or more of silence.
        if "ready" in seen_at and checks >= seen_at["ready"] + 3:
            go.touch()

    progress.on_check = release

    render(clip, progress)

    assert progress.lines[1:4] == ["half a line \ufffd", "ready", "no newline at the end"]
    assert progress.lines[-1].startswith("Scene 1 rendered by the command")


def test_the_checkpoint_file_moves_the_bar_step_by_step(
    command: Callable[..., str], clip: Path, tmp_path: Path
) -> None:
    command(f"""
write_checkpoint(["fetch"], 4)
wait_for_file({str(tmp_path / "seen-0.25")!r})
print("PROGRESS draw 1/2")
wait_for_file({str(tmp_path / "seen-0.375")!r})
write_checkpoint(["fetch", "draw"], 4)
wait_for_file({str(tmp_path / "seen-0.5")!r})
make_clip()
""")
    progress = Recorder()
    progress.on_update = lambda fraction: (tmp_path / f"seen-{fraction:g}").touch()

    render(clip, progress)

    assert progress.fractions == [0.25, 0.375, 0.5, 1.0]
    assert progress.messages[:3] == [
        "Scene 1: fetch done (1 of 4 steps)",
        "Scene 1: draw 1/2",
        "Scene 1: draw done (2 of 4 steps)",
    ]
    assert "Step done: draw (2 of 4)" in progress.lines
    assert not clip.with_suffix(".checkpoint.json").exists()


def test_a_failing_command_fails_with_its_exit_code_and_last_lines(
    command: Callable[..., str], clip: Path
) -> None:
    command("""
write_checkpoint(["fetch"], 2)
for number in range(1, 16):
    print(f"line {number}", file=sys.stderr if number % 2 else sys.stdout)
raise SystemExit(3)
""")

    with pytest.raises(EngineError) as raised:
        render(clip, Recorder())

    message = str(raised.value)
    assert message.startswith(
        "Scene 1: the render command failed with exit code 3. Its last lines:"
    )
    assert message.splitlines()[1:] == [f"line {number}" for number in range(6, 16)]
    assert not isinstance(raised.value, TransientEngineError)
    assert not clip.exists()
    # Kept for the next try, which may skip what the script finished.
    assert clip.with_suffix(".checkpoint.json").exists()


@pytest.mark.parametrize(
    ("body", "error", "expected"),
    [
        ("print('no clip today')", EngineError, "exited 0 but wrote no clip"),
        ("os.kill(os.getpid(), signal.SIGKILL)", EngineError, "was killed by SIGKILL"),
        ("print('GPU busy'); sys.exit(75)", TransientEngineError, "asked to be run again"),
        ("make_clip('320x240')", EngineError, "must be h264 yuv420p at 720x720"),
        (
            "Path(os.environ['VIDEOCREATION_OUTPUT']).write_text('not a video')",
            EngineError,
            "is not a video ffmpeg can play",
        ),
    ],
)
def test_what_the_command_leaves_behind_is_checked(
    command: Callable[..., str], clip: Path, body: str, error: type[Exception], expected: str
) -> None:
    command(body)

    with pytest.raises(error, match=expected):
        render(clip, Recorder())

    assert sorted(path.suffix for path in clip.parent.iterdir()) == [".work"]


def test_a_missing_or_unusable_command_is_a_clear_error(settings: Any, clip: Path) -> None:
    settings.RENDER_COMMAND = "  "
    with pytest.raises(EngineError, match="RENDER_COMMAND is not set"):
        render(clip, Recorder())
    settings.RENDER_COMMAND = "/nowhere/pipeline --fast"
    with pytest.raises(EngineError, match=r"could not be started: .*No such file"):
        render(clip, Recorder())
    settings.RENDER_COMMAND = "python 'unclosed"
    with pytest.raises(EngineError, match="RENDER_COMMAND cannot be read"):
        render(clip, Recorder())


GROUP_SCRIPT = """
# A grandchild that shrugs off SIGTERM, as a stuck encoder might.
grandchild = subprocess.Popen([
    sys.executable, "-c",
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
    "signal.pause()",
], stdout=subprocess.PIPE)
grandchild.stdout.readline()
Path({pids!r}).write_text(f"{{os.getpid()}}\\n{{grandchild.pid}}\\n")
print("working")
"""


def test_a_stop_kills_the_whole_process_group(
    command: Callable[..., str], clip: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command(GROUP_SCRIPT.format(pids=str(pids)) + "signal.pause()\n")
    progress = Recorder()
    progress.stop_when = lambda: len(pids_in(pids)) == 2

    with pytest.raises(JobStopped):
        render(clip, progress)

    assert len(pids_in(pids)) == 2
    wait_for(lambda: not any(alive(pid) for pid in pids_in(pids)), "the group to be gone", 10)
    assert sorted(path.suffix for path in clip.parent.iterdir()) == [".work"]


def test_a_grandchild_left_running_after_success_is_ended_too(
    command: Callable[..., str], clip: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    # The grandchild keeps the script's stdout open: the engine may not wait for EOF.
    command(
        GROUP_SCRIPT.format(pids=str(pids))
        .replace("stdout=subprocess.PIPE", "stdout=None")
        .replace("grandchild.stdout.readline()", "")
        + "make_clip()\n"
    )

    render(clip, Recorder())

    assert probe(clip).codec == "h264"
    wait_for(lambda: not any(alive(pid) for pid in pids_in(pids)), "the stray to be gone", 10)


def test_a_rerun_skips_the_steps_the_checkpoint_lists(
    command: Callable[..., str], clip: Path
) -> None:
    # Encoding at a tenth of playback speed: the stop lands while it runs.
    command(None, "--max-speed", "0.1")
    stopped = Recorder()
    stopped.stop_when = lambda: any(line.startswith("frames: finished") for line in stopped.lines)
    with pytest.raises(JobStopped):
        render(clip, stopped)
    assert not clip.exists()

    command()
    resumed = Recorder()
    render(clip, resumed)

    assert "The checkpoint of an earlier try has frames done" in resumed.lines
    assert "frames: done in an earlier run, skipping" in resumed.lines
    assert not any(re.search(r"frames \d+/\d+", message) for message in resumed.messages)
    assert resumed.fractions[0] == 0.5
    assert all(a <= b for a, b in pairwise(resumed.fractions))
    assert probe(clip).seconds == pytest.approx(1.0, abs=0.1)
    assert sorted(path.name for path in clip.parent.iterdir()) == [clip.name]


# --- Through a real worker -------------------------------------------------------


def _worker_env(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("RENDER_ENGINE", "command")
    monkeypatch.setenv("RENDER_COMMAND", shlex.join(command))
    monkeypatch.setenv("RENDER_COMMAND_STOP_GRACE_SECONDS", "1")
    monkeypatch.setenv("PROGRESS_MIN_INTERVAL", "0.05")


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _worker_env(monkeypatch, [sys.executable, str(EXAMPLE)])


@pytest.fixture
def failing_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(
        "import sys\n"
        "print('pipeline: starting')\n"
        "for n in range(1, 13):\n"
        "    print(f'render: tile {n} of 12 failed', file=sys.stderr)\n"
        "sys.exit(4)\n"
    )
    _worker_env(monkeypatch, [sys.executable, str(script)])


@pytest.fixture
def slow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pids = tmp_path / "pipeline.pids"
    _worker_env(
        monkeypatch,
        [sys.executable, str(EXAMPLE), "--max-speed", "0.1", "--pid-file", str(pids)],
    )
    return pids


def _start_render(project: VideoProject) -> tuple[Any, str]:
    api = api_client_for(project.owner)
    base = f"/api/video-creation/projects/{project.pk}"
    response = api.post(f"{base}/render")
    assert response.status_code == 202, response.json()
    return api, base


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_renders_with_the_example_pipeline_and_reports_live(
    pipeline_env: None,
    qcluster: subprocess.Popen[bytes],
    scripted_project: VideoProject,
    tmp_path: Path,
) -> None:
    api, base = _start_render(scripted_project)
    answers: list[dict[str, Any]] = []
    script_spoke_while_running = False
    deadline = time.monotonic() + 60
    while not answers or answers[-1]["status"] == "RENDERING":
        assert time.monotonic() < deadline, f"the render did not end: {answers[-1]}"
        log = api.get(f"{base}/log").json()["lines"]
        answers.append(api.get(f"{base}/status").json())
        if answers[-1]["status"] == "RENDERING" and "frames: finished" in " ".join(log):
            script_spoke_while_running = True
        time.sleep(0.1)

    finished = answers[-1]
    assert finished["status"] == "COMPLETED", finished["error"]
    during = [answer["progress"] for answer in answers if answer["status"] == "RENDERING"]
    assert during == sorted(during)
    assert len({value for value in during if 0 < value < 100}) >= 4, during
    messages = {answer["progressMessage"] for answer in answers}
    assert any(re.fullmatch(r"Scene 2: frames \d+/48", message) for message in messages), messages
    log = api.get(f"{base}/log").json()["lines"]
    assert "pipeline: scene 1 of 2, 1280x720, 2 s at 24 fps (48 frames)" in log
    assert "pipeline: scene 2 of 2, 1280x720, 2 s at 24 fps (48 frames)" in log
    assert script_spoke_while_running
    saved = tmp_path / "video.mp4"
    saved.write_bytes(b"".join(api.get(finished["videoUrl"]).streaming_content))
    video = probe(saved)
    assert (video.codec, video.width, video.height) == ("h264", 1280, 720)
    assert video.seconds == pytest.approx(4.0, abs=0.3)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_failing_command_fails_the_job_with_its_last_lines(
    failing_env: None, qcluster: subprocess.Popen[bytes], scripted_project: VideoProject
) -> None:
    api, base = _start_render(scripted_project)

    wait_for(
        lambda: api.get(f"{base}/status").json()["status"] == "FAILED", "the job to fail", 60, 0.1
    )

    error = api.get(f"{base}/status").json()["error"]
    assert error["code"] == "engine_error"
    assert error["message"].startswith("Scene 1: the render command failed with exit code 4.")
    assert error["message"].splitlines()[-1] == "render: tile 12 of 12 failed"
    assert "render: tile 3 of 12 failed" in error["message"]
    assert "Traceback" not in error["message"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_cancel_kills_the_script_and_its_encoder(
    slow_env: Path, qcluster: subprocess.Popen[bytes], scripted_project: VideoProject
) -> None:
    pids = slow_env
    api, base = _start_render(scripted_project)
    # The script's pid, then its ffmpeg's once the slow encode has begun.
    wait_for(lambda: len(pids_in(pids)) == 2, "the pipeline to start encoding", 60, 0.05)
    assert all(alive(pid) for pid in pids_in(pids))
    assert api.get(f"{base}/status").json()["status"] == "RENDERING"

    assert api.post(f"{base}/cancel").status_code == 202

    wait_for(
        lambda: not any(alive(pid) for pid in pids_in(pids)),
        "the script and its ffmpeg to be killed",
        15,
        0.05,
    )
    status = api.get(f"{base}/status").json()
    assert status["status"] == "DRAFT"
    assert status["videoUrl"] is None


# --- What the script may see, where it runs, and what outlives a dead worker ------------


def test_the_script_sees_an_allow_listed_environment_in_its_work_folder(
    command: Callable[..., str],
    clip: Path,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "SCRIPT_LLM_API_KEY", "SOME_API_KEY")
    for name in secrets:
        monkeypatch.setenv(name, "not-for-the-script")
    monkeypatch.setenv("TEAM_RENDER_TOKEN", "for-the-script")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    settings.RENDER_COMMAND_ENV = ["TEAM_RENDER_TOKEN"]
    seen = tmp_path / "seen.json"
    command(f"""
Path({str(seen)!r}).write_text(json.dumps({{"env": dict(os.environ), "cwd": os.getcwd()}}))
make_clip()
""")

    render(clip, Recorder())

    script = json.loads(seen.read_text())
    env: dict[str, str] = script["env"]
    assert "not-for-the-script" not in env.values()
    assert env["TEAM_RENDER_TOKEN"] == "for-the-script"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"]
    allowed = {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ"}
    allowed |= {"TEAM_RENDER_TOKEN", "PYTHONUNBUFFERED"}
    unexpected = {
        name
        for name in env
        if name not in allowed and not name.startswith(("LC_", "VIDEOCREATION_"))
    }
    assert unexpected == set()
    assert script["cwd"] == str(clip.with_suffix(".work"))
    assert Path(script["cwd"]) != Path(django_settings.BASE_DIR)


# The engine in a process of its own, so that the test can kill it as a worker dies.
ENGINE_PROCESS = """
import sys
from pathlib import Path

import django

django.setup()
from projects.engines.command import CommandEngine
from tests.test_command_engine import SCENE, SPEC, Recorder

CommandEngine().render_scene(SPEC, SCENE, Path(sys.argv[1]), Recorder())
"""


def test_a_dead_workers_script_dies_and_the_next_try_ends_what_it_left(
    command: Callable[..., str], clip: Path, tmp_path: Path, media_root: Path
) -> None:
    pids = tmp_path / "pids"
    command(GROUP_SCRIPT.format(pids=str(pids)) + "signal.pause()\n")
    clip.parent.mkdir(parents=True)
    worker = subprocess.Popen(
        [sys.executable, "-c", ENGINE_PROCESS, str(clip)],
        cwd=django_settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "videocreation.settings",
            "RENDER_COMMAND": django_settings.RENDER_COMMAND,
            "MEDIA_ROOT": str(media_root),
        },
        start_new_session=True,
    )
    pid_file = media_root / "projects" / SPEC.project_id / "work" / "render-command.pid"
    try:
        wait_for(lambda: len(pids_in(pids)) == 2, "the script and its grandchild to start")
        script, grandchild = pids_in(pids)
        assert pid_file.read_text().split() == [str(script)]  # the group is the script's

        worker.kill()
        worker.wait()

        wait_for(lambda: not alive(script), "the script to die with its worker", 10)
        assert alive(grandchild)  # the signal reaches the child only; the pid file remembers
        command("make_clip()\n")
        retry = Recorder()
        render(clip, retry)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    wait_for(lambda: not alive(grandchild), "the next try to end the leftover group", 10)
    assert "Scene 1: stopped what an earlier try of the command left running" in retry.lines
    assert not pid_file.exists()
    assert probe(clip).codec == "h264"


def test_a_pid_file_naming_someone_elses_group_kills_nothing(
    command: Callable[..., str], clip: Path, media_root: Path
) -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    pid_file = media_root / "projects" / SPEC.project_id / "work" / "render-command.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{stranger.pid}\n")
    command("make_clip()\n")
    progress = Recorder()
    try:
        render(clip, progress)

        assert alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
    assert not any("earlier try" in line for line in progress.lines)
    assert not pid_file.exists()


CHATTY_LINES = 100_000  # per scene: two scenes, 200,000 lines


@pytest.fixture
def chatty_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(
        PRELUDE
        + "scene = os.environ['VIDEOCREATION_SCENE_INDEX']\n"
        + f"for number in range({CHATTY_LINES}):\n"
        + "    print(f'scene {scene} line {number}')\n"
        + "make_clip()\n"
    )
    _worker_env(monkeypatch, [sys.executable, str(script)])
    monkeypatch.setenv("PROGRESS_MIN_INTERVAL", "0.25")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_chatty_command_logs_every_line_in_a_few_events_a_second(
    chatty_env: None, qcluster: subprocess.Popen[bytes], scripted_project: VideoProject
) -> None:
    api, base = _start_render(scripted_project)
    wait_for(
        lambda: api.get(f"{base}/status").json()["status"] != "RENDERING", "the render", 120, 0.2
    )
    assert api.get(f"{base}/status").json()["status"] == "COMPLETED"

    lines, offset = [], 0
    while page := api.get(f"{base}/log", {"offset": offset}).json()["lines"]:
        lines += page
        offset += len(page)
    printed = [line for line in lines if line.startswith("scene ")]
    expected = [f"scene {scene} line {n}" for scene in (0, 1) for n in range(CHATTY_LINES)]
    assert printed == expected
    events = scripted_project.events.filter(kind=EventKind.LOG).order_by("seq")
    seconds = (events.last().created_at - events.first().created_at).total_seconds()
    assert events.count() <= 5 * seconds + 10, (events.count(), seconds)
