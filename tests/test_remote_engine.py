"""The remote render engine against a fake provider of the OpenAI videos API on 127.0.0.1.

The first tests call the engine directly with a recording `StageProgress`;
the last ones render a project through the API and a real `qcluster` worker.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from projects.engines.base import (
    EngineError,
    JobStopped,
    ProjectSpec,
    Scene,
    TransientEngineError,
)
from projects.engines.remote import RemoteVideoEngine
from projects.models import EventKind, VideoProject
from tests.conftest import SCRIPT, api_client_for
from tests.fakes.videos import API_KEY, CONTENT, CREATE, RETRIEVE, FakeVideoProvider
from tests.media import probe
from tests.waiting import wait_for

# The Sora endpoints of the openai package warn that they are deprecated; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")

SPEC = ProjectSpec(
    project_id="0b8a7c1e-0000-4000-8000-000000000001",
    title="Night trains of Europe",
    brief="A short film about night trains crossing Europe.",
    aspect_ratio="16:9",
    scene_count=2,
    seconds_per_scene=2,
    style="warm, calm",
)
SCENE = Scene(index=1, narration="Morning by the sea.", visual="A train along the sea", seconds=2.0)


class RecordingProgress:
    """A `StageProgress` that remembers every report and stops when told to."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, str | None]] = []
        self.lines: list[str] = []
        self.stopped = threading.Event()

    def update(self, fraction: float, message: str | None = None) -> None:
        self.check()
        self.updates.append((fraction, message))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def check(self) -> None:
        if self.stopped.is_set():
            raise JobStopped("cancelled")

    def messages(self) -> list[str]:
        return [message for _, message in self.updates if message]


@pytest.fixture
def provider() -> Iterator[FakeVideoProvider]:
    provider = FakeVideoProvider(queue_seconds=0.2, render_seconds=0.6).start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def remote(settings: Any, provider: FakeVideoProvider) -> FakeVideoProvider:
    settings.REMOTE_VIDEO_BASE_URL = provider.base_url
    settings.REMOTE_VIDEO_API_KEY = API_KEY
    settings.REMOTE_VIDEO_MODEL = "sora-2"
    settings.REMOTE_VIDEO_POLL_SECONDS = 0.1
    settings.REMOTE_VIDEO_TIMEOUT_SECONDS = 1.0
    settings.REMOTE_VIDEO_MAX_RETRIES = 3
    settings.REMOTE_VIDEO_RETRY_BACKOFF_SECONDS = 0.05
    return provider


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return tmp_path / "clips" / "scene-1-0123456789abcdef.mp4"


def render(clip: Path, progress: RecordingProgress | None = None) -> RecordingProgress:
    progress = progress or RecordingProgress()
    RemoteVideoEngine().render_scene(SPEC, SCENE, clip, progress)
    return progress


def checkpoint_of(clip: Path) -> Path:
    return clip.with_suffix(".remote.json")


def gaps(requests: list[Any]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]


# --- the engine on its own ---------------------------------------------------------------------


def test_it_renders_a_scene_into_a_playable_clip_of_the_asked_size_and_length(
    remote: FakeVideoProvider, clip: Path
) -> None:
    render(clip)

    info = probe(clip)
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")
    assert info.seconds == pytest.approx(2.0, abs=0.1)
    [post] = remote.calls(CREATE)
    assert post.form["model"] == "sora-2"
    assert (post.form["seconds"], post.form["size"]) == ("2", "1280x720")
    for part in ("A train along the sea", "Morning by the sea.", "warm, calm"):
        assert part in post.form["prompt"]
    assert post.headers["authorization"] == f"Bearer {API_KEY}"
    assert post.headers["idempotency-key"].startswith(clip.stem)
    assert not checkpoint_of(clip).exists()
    assert [path.name for path in clip.parent.iterdir()] == [clip.name]


def test_the_bar_carries_the_providers_percent_then_the_download(
    remote: FakeVideoProvider, clip: Path
) -> None:
    remote.render_seconds = 1.2

    progress = render(clip)

    fractions = [fraction for fraction, _ in progress.updates]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    messages = progress.messages()
    assert "Scene 2: queued at the provider" in messages
    rendering = [
        (fraction, message)
        for fraction, message in progress.updates
        if message and message.startswith("Scene 2: rendering at the provider, ")
    ]
    assert len({message for _, message in rendering}) >= 3, messages
    for fraction, message in rendering:
        percent = int(message.rsplit(" ", 1)[1].rstrip("%"))
        assert 0 <= percent < 100
        assert fraction == pytest.approx(0.9 * percent / 100)
    assert ("Scene 2: downloading the clip" in messages) and 0.9 in fractions


@pytest.mark.parametrize(
    ("poll_after_ms", "poll_seconds", "expected"),
    [(300, 1.0, 0.3), (None, 0.25, 0.25)],
    ids=["header", "setting"],
)
def test_it_polls_as_often_as_openai_poll_after_ms_says_or_else_the_setting(
    remote: FakeVideoProvider,
    clip: Path,
    settings: Any,
    poll_after_ms: int | None,
    poll_seconds: float,
    expected: float,
) -> None:
    remote.poll_after_ms = poll_after_ms
    remote.render_seconds = 1.6
    settings.REMOTE_VIDEO_POLL_SECONDS = poll_seconds

    render(clip)

    # The POST's answer has no header, so the first poll waits as the setting says;
    # every GET's answer has it (or not), and so sets the wait before the next.
    intervals = gaps(remote.calls(RETRIEVE))
    assert len(intervals) >= 2, intervals
    assert all(expected - 0.02 <= gap < expected + 0.4 for gap in intervals), intervals


def test_transient_errors_are_retried_without_a_second_submission(
    remote: FakeVideoProvider, clip: Path
) -> None:
    remote.fault(RETRIEVE, on=1, times=2, status=503)
    remote.fault(CONTENT, on=1, status=500)

    progress = render(clip)

    assert probe(clip).width == 1280
    assert len(remote.calls(CREATE)) == 1
    assert len(remote.videos) == 1
    assert len(remote.calls(CONTENT)) == 2
    retries = [line for line in progress.lines if "retry" in line]
    assert len(retries) == 3, progress.lines
    assert "answered 503: The server had an error" in retries[0]
    assert "retry 1 of 3" in retries[0] and "retry 2 of 3" in retries[1]


def test_a_post_whose_answer_was_lost_is_sent_again_with_the_same_key(
    remote: FakeVideoProvider, clip: Path
) -> None:
    # The provider accepts the video, then answers too late: the client times out.
    remote.fault(CREATE, on=1, delay=1.5)

    progress = render(clip)

    first, second = remote.calls(CREATE)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert len(remote.videos) == 1
    assert any("did not answer within 1 s" in line for line in progress.lines)
    assert probe(clip).seconds == pytest.approx(2.0, abs=0.1)


def test_a_429_waits_as_long_as_retry_after_says(remote: FakeVideoProvider, clip: Path) -> None:
    remote.fault(RETRIEVE, on=1, status=429, retry_after=1, message="Rate limit reached.")

    progress = render(clip)

    limited, after = remote.calls(RETRIEVE)[:2]
    assert after.at - limited.at >= 1.0
    assert any("answered 429: Rate limit reached." in line for line in progress.lines)
    assert len(remote.calls(CREATE)) == 1


def test_past_its_retries_it_raises_a_transient_error_and_keeps_the_checkpoint(
    remote: FakeVideoProvider, clip: Path, settings: Any
) -> None:
    settings.REMOTE_VIDEO_MAX_RETRIES = 2
    remote.fault(RETRIEVE, on=1, times=100, status=503)

    with pytest.raises(TransientEngineError, match="after 3 tries: the provider answered 503"):
        render(clip)

    assert len(remote.calls(RETRIEVE)) == 3
    [video_id] = remote.videos
    assert json.loads(checkpoint_of(clip).read_text())["video_id"] == video_id
    assert not clip.exists()


def test_an_unreachable_provider_is_retried_and_its_address_stays_in_the_worker(
    remote: FakeVideoProvider, clip: Path, settings: Any
) -> None:
    settings.REMOTE_VIDEO_MAX_RETRIES = 1
    remote.stop()  # nothing listens at its address any more

    with pytest.raises(TransientEngineError) as raised:
        render(clip, progress := RecordingProgress())

    said = [str(raised.value), *progress.lines, *progress.messages()]
    assert "the connection to the provider failed (check REMOTE_VIDEO_BASE_URL)" in said[0]
    assert not any("127.0.0.1" in text or "http" in text for text in said), said


def test_a_checkpointed_video_is_resumed_without_a_post(
    remote: FakeVideoProvider, clip: Path
) -> None:
    video = remote.create({"prompt": "earlier", "seconds": "2", "size": "1280x720"}, None)
    clip.parent.mkdir(parents=True)
    checkpoint_of(clip).write_text(json.dumps({"video_id": video.id, "idempotency_key": "k"}))

    progress = render(clip)

    assert remote.calls(CREATE) == []
    assert {request.video_id for request in remote.calls()} == {video.id}
    assert any(f"resuming {video.id}" in line for line in progress.lines)
    assert probe(clip).seconds == pytest.approx(2.0, abs=0.1)
    assert not checkpoint_of(clip).exists()


def test_a_checkpointed_video_the_provider_forgot_is_submitted_afresh_next_time(
    remote: FakeVideoProvider, clip: Path
) -> None:
    clip.parent.mkdir(parents=True)
    checkpoint_of(clip).write_text(json.dumps({"video_id": "video_gone", "idempotency_key": "k"}))

    with pytest.raises(TransientEngineError, match="no longer knows video_gone"):
        render(clip)
    assert not checkpoint_of(clip).exists()

    render(clip)

    [post] = remote.calls(CREATE)
    assert post.headers["idempotency-key"] != "k"
    assert probe(clip).width == 1280


def test_a_failed_video_is_an_error_with_the_providers_message(
    remote: FakeVideoProvider, clip: Path
) -> None:
    remote.fail_next_video("The prompt was blocked by moderation.", code="moderation_blocked")

    with pytest.raises(EngineError) as raised:
        render(clip)

    assert not isinstance(raised.value, TransientEngineError)
    assert str(raised.value) == (
        "Scene 2: the provider could not render it: "
        "The prompt was blocked by moderation. (moderation_blocked)"
    )
    assert not checkpoint_of(clip).exists()
    assert not clip.exists()
    assert remote.calls(CONTENT) == []


def test_a_wrong_key_is_a_clear_error_and_not_retried(
    remote: FakeVideoProvider, clip: Path, settings: Any
) -> None:
    settings.REMOTE_VIDEO_API_KEY = "sk-wrong"

    with pytest.raises(EngineError) as raised:
        render(clip)

    assert not isinstance(raised.value, TransientEngineError)
    assert str(raised.value) == (
        "Scene 2: the provider refused to submit the scene: 401 Incorrect API key provided. "
        "(check REMOTE_VIDEO_API_KEY)"
    )
    assert len(remote.calls()) == 1
    assert not checkpoint_of(clip).exists()


def test_a_length_the_provider_does_not_offer_is_refused_with_its_message(
    remote: FakeVideoProvider, clip: Path
) -> None:
    remote.allowed_seconds = {"4", "8", "12"}

    with pytest.raises(EngineError, match="Supported values are: '4', '8', '12'"):
        render(clip)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("REMOTE_VIDEO_BASE_URL", "", "REMOTE_VIDEO_BASE_URL is not set"),
        ("REMOTE_VIDEO_BASE_URL", "api.example.com/v1", "must start with http:// or https://"),
        ("REMOTE_VIDEO_API_KEY", " ", "REMOTE_VIDEO_API_KEY is not set"),
        ("REMOTE_VIDEO_MODEL", "", "REMOTE_VIDEO_MODEL is not set"),
    ],
)
def test_missing_settings_are_clear_errors(
    remote: FakeVideoProvider, clip: Path, settings: Any, setting: str, value: str, message: str
) -> None:
    setattr(settings, setting, value)

    with pytest.raises(EngineError, match=message):
        render(clip)

    assert remote.calls() == []


@pytest.mark.parametrize("waiting_for", ["the next poll", "a retry"])
def test_a_cancel_stops_the_wait_at_once_and_nothing_more_is_sent(
    remote: FakeVideoProvider, clip: Path, waiting_for: str
) -> None:
    remote.render_seconds = 30
    # Waits far longer than the test allows, so only a wait that checks can stop in time.
    remote.poll_after_ms = 3000
    if waiting_for == "a retry":
        remote.fault(RETRIEVE, on=1, status=429, retry_after=30)
    progress = RecordingProgress()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            render(clip, progress)
        except BaseException as error:
            raised.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for(lambda: remote.calls(RETRIEVE), "the engine to poll")
        cancelled_at = time.monotonic()
        progress.stopped.set()
        worker.join(timeout=5)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        progress.stopped.set()
        worker.join(timeout=5)

    assert not worker.is_alive()
    assert [type(error) for error in raised] == [JobStopped]
    assert stopped_after < 0.5
    assert [request for request in remote.calls() if request.at > cancelled_at] == []
    # The provider keeps the video: the next try resumes it instead of paying again.
    assert checkpoint_of(clip).exists()


# --- through the API and a real worker -----------------------------------------------------------


@pytest.fixture
def remote_worker_env(
    monkeypatch: pytest.MonkeyPatch, provider: FakeVideoProvider
) -> FakeVideoProvider:
    """Request before `qcluster`: the worker copies the environment when it starts."""
    for name, value in {
        "RENDER_ENGINE": "remote",
        "REMOTE_VIDEO_BASE_URL": provider.base_url,
        "REMOTE_VIDEO_API_KEY": API_KEY,
        "REMOTE_VIDEO_POLL_SECONDS": "0.1",
        "REMOTE_VIDEO_TIMEOUT_SECONDS": "2",
        "REMOTE_VIDEO_MAX_RETRIES": "1",
        "REMOTE_VIDEO_RETRY_BACKOFF_SECONDS": "0.05",
        "JOB_RETRY_BACKOFF_SECONDS": "0.2",
    }.items():
        monkeypatch.setenv(name, value)
    return provider


def start_render(project: VideoProject) -> tuple[APIClient, str]:
    api = api_client_for(project.owner)
    base = f"/api/video-creation/projects/{project.pk}"
    response = api.post(f"{base}/render")
    assert response.status_code == 202, response.content
    return api, base


def follow(api: APIClient, base: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every status answer, polled every 0.1 s as a client would, until the job ends."""
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers.append(api.get(f"{base}/status").json())
        if answers[-1]["status"] in ("COMPLETED", "FAILED"):
            return answers
        time.sleep(0.1)
    raise AssertionError(f"The render did not end in {timeout} s; last status: {answers[-1]}")


def log_lines(project: VideoProject) -> list[str]:
    events = project.events.filter(kind=EventKind.LOG).order_by("seq")
    return [event.payload["line"] for event in events]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_renders_the_script_at_the_provider_with_a_moving_bar(
    remote_worker_env: FakeVideoProvider,
    qcluster: subprocess.Popen[bytes],
    scripted_project: VideoProject,
    tmp_path: Path,
) -> None:
    provider = remote_worker_env
    provider.render_seconds = 2.0
    api, base = start_render(scripted_project)

    answers = follow(api, base)

    finished = answers[-1]
    assert finished["status"] == "COMPLETED", finished["error"]
    during = [answer["progress"] for answer in answers if answer["status"] == "RENDERING"]
    assert during == sorted(during)
    assert len({value for value in during if 0 < value < 100}) >= 4, during
    messages = {answer["progressMessage"] for answer in answers}
    assert any("rendering at the provider" in message for message in messages), messages
    saved = tmp_path / "video.mp4"
    saved.write_bytes(b"".join(api.get(finished["videoUrl"]).streaming_content))
    info = probe(saved)
    total = sum(scene["seconds"] for scene in SCRIPT["scenes"])
    assert info.seconds == pytest.approx(total, abs=0.3)
    assert (info.width, info.height) == (1280, 720)
    prompts = [request.form["prompt"] for request in provider.calls(CREATE)]
    assert len(prompts) == 2
    assert prompts[0].startswith("Dusk") and prompts[1].startswith("Sea")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_fault_past_the_engines_retries_is_retried_by_the_job_without_a_second_post(
    remote_worker_env: FakeVideoProvider,
    qcluster: subprocess.Popen[bytes],
    scripted_project: VideoProject,
) -> None:
    provider = remote_worker_env
    # The first scene's video is accepted, then its 2nd and 3rd polls fail: with
    # REMOTE_VIDEO_MAX_RETRIES=1 the engine gives up and the job tries again.
    provider.fault(RETRIEVE, on=2, times=2, status=503)
    api, base = start_render(scripted_project)

    finished = follow(api, base)[-1]

    assert finished["status"] == "COMPLETED", finished["error"]
    assert len(provider.calls(CREATE)) == 2
    assert len(provider.videos) == 2
    project = VideoProject.objects.get(pk=scripted_project.pk)
    assert project.attempt == 2
    lines = log_lines(project)
    assert any("could not check on video_" in line and "after 2 tries" in line for line in lines)
    assert any("Scene 1: resuming video_" in line for line in lines), lines


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_cancel_stops_the_workers_polling(
    remote_worker_env: FakeVideoProvider,
    qcluster: subprocess.Popen[bytes],
    scripted_project: VideoProject,
    media_root: Path,
) -> None:
    provider = remote_worker_env
    provider.render_seconds = 60
    api, base = start_render(scripted_project)
    wait_for(lambda: len(provider.calls(RETRIEVE)) >= 3, "the worker to poll the provider")
    [video_id] = provider.videos

    assert api.post(f"{base}/cancel").status_code == 202
    cancelled_at = time.monotonic()

    def quiet_for_a_second() -> bool:
        return time.monotonic() - provider.calls(video_id=video_id)[-1].at > 1.0

    wait_for(quiet_for_a_second, "the worker to stop polling", timeout=10)
    last_poll = provider.calls(video_id=video_id)[-1].at
    assert last_poll - cancelled_at < 1.5
    assert api.get(f"{base}/status").json()["status"] == "DRAFT"
    assert len(provider.calls(CREATE)) == 1
    checkpoints = list((media_root / "projects" / str(scripted_project.pk)).rglob("*.remote.json"))
    assert [json.loads(path.read_text())["video_id"] for path in checkpoints] == [video_id]
    assert qcluster.poll() is None
