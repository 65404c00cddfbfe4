"""Jobs run in this process through the real local engine (Pillow and ffmpeg)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from projects import lifecycle, progress, tasks
from projects.models import EventKind, Status, Step, VideoProject
from tests.conftest import api_client_for, events_of
from tests.engines import DownEngine, FlakyEngine, PickyEngine, RecordingEngine
from tests.media import probe, processes_mentioning
from tests.waiting import wait_for


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


def progress_seen(project: VideoProject) -> list[int]:
    return [
        event.payload["progress"]
        for event in events_of(project)
        if event.kind in (EventKind.PROGRESS, EventKind.STATUS)
        and event.payload["status"] in ("GENERATING_SCRIPT", "RENDERING")
    ]


def log_lines(project: VideoProject) -> list[str]:
    return [
        line
        for event in events_of(project)
        if event.kind == EventKind.LOG
        for line in event.payload["lines"]
    ]


@pytest.fixture
def engine(settings: Any) -> type[RecordingEngine]:
    settings.VIDEO_ENGINE = "tests.engines.RecordingEngine"
    settings.JOB_RETRY_BACKOFF_SECONDS = 0.01
    # Every report is written, so the log shows each step the engine took.
    settings.PROGRESS_MIN_INTERVAL = 0
    RecordingEngine.reset()
    return RecordingEngine


@pytest.mark.django_db
def test_the_script_job_writes_scenes_with_previews(make_project: Any, engine: Any) -> None:
    project = lifecycle.start_job(make_project(scene_count=3), Step.SCRIPT)

    tasks.generate_script(str(project.pk))

    done = reload(project)
    assert done.status == Status.DRAFT
    assert done.progress == 100
    assert done.completed_steps == done.total_steps == 4
    scenes = done.script_data["scenes"]
    assert [scene["index"] for scene in scenes] == [0, 1, 2]
    assert all(scene["narration"] and scene["visual"] for scene in scenes)
    api = api_client_for(done.owner)
    preview = api.get(f"/api/video-creation/projects/{done.pk}/scenes/2/preview")
    assert preview.status_code == 200
    assert preview["Content-Type"] == "image/webp"


@pytest.mark.django_db
def test_script_progress_rises_through_values_between_0_and_100(
    make_project: Any, engine: Any
) -> None:
    project = lifecycle.start_job(make_project(scene_count=3), Step.SCRIPT)

    tasks.generate_script(str(project.pk))

    seen = progress_seen(reload(project))
    assert seen == sorted(seen)
    assert len({value for value in seen if 0 < value < 100}) >= 3
    done = reload(project)
    assert [event.seq for event in events_of(done)] == list(range(1, done.version + 1))


@pytest.mark.django_db
def test_the_render_job_makes_a_playable_mp4(
    scripted_project: Any, engine: Any, media_root: Path
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    tasks.render_video(str(project.pk))

    done = reload(project)
    assert done.status == Status.COMPLETED, done.error_message
    assert done.progress == 100
    assert done.completed_steps == done.total_steps == 3
    video = probe(media_root / done.video.name)
    assert video.codec == "h264"
    assert video.pixel_format == "yuv420p"
    assert (video.width, video.height) == (1280, 720)
    assert video.seconds == pytest.approx(4.0, abs=0.2)
    seen = progress_seen(done)
    assert seen == sorted(seen)
    assert len({value for value in seen if 0 < value < 100}) >= 4
    messages = {
        event.payload["progressMessage"] for event in events_of(done) if event.kind != "log"
    }
    assert {"Rendering scene 1 of 2", "Rendering scene 2 of 2"} <= messages
    assert not (media_root / "projects" / str(done.pk) / "clips").exists()


@pytest.mark.django_db
def test_the_finished_video_downloads_through_the_api(
    scripted_project: Any, engine: Any, media_root: Path, tmp_path: Path
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    tasks.render_video(str(project.pk))
    api = api_client_for(project.owner)

    status = api.get(f"/api/video-creation/projects/{project.pk}/status").json()
    download = api.get(status["videoUrl"])

    assert download.status_code == 200
    saved = tmp_path / "downloaded.mp4"
    saved.write_bytes(b"".join(download.streaming_content))
    assert probe(saved).seconds == pytest.approx(4.0, abs=0.2)


@pytest.mark.django_db
def test_a_second_delivery_under_a_live_lease_does_nothing(
    scripted_project: Any, engine: Any
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "the-first-worker")
    before = reload(project).version

    tasks.render_video(str(project.pk))

    assert engine.calls == []
    after = reload(project)
    assert after.version == before
    assert after.lease_owner == "the-first-worker"


@pytest.mark.django_db
def test_a_task_for_a_finished_project_is_skipped(scripted_project: Any, engine: Any) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    tasks.render_video(str(project.pk))
    finished = reload(project)
    engine.reset()

    tasks.render_video(str(project.pk))

    assert engine.calls == []
    assert reload(project).version == finished.version


@pytest.mark.django_db
def test_a_transient_failure_is_retried_from_the_last_checkpoint(
    scripted_project: Any, engine: Any, settings: Any
) -> None:
    settings.VIDEO_ENGINE = "tests.engines.FlakyEngine"
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    tasks.render_video(str(project.pk))

    done = reload(project)
    assert done.status == Status.COMPLETED, done.error_message
    assert done.attempt == 2
    # Scene 1 was redone; scene 0, already a finished clip, was not.
    assert FlakyEngine.calls == ["render 0", "render 1", "render 1"]
    assert any("503" in line and "attempt 2 of 3" in line for line in log_lines(done))


@pytest.mark.django_db
def test_a_job_gives_up_after_three_transient_failures(
    scripted_project: Any, engine: Any, settings: Any
) -> None:
    settings.VIDEO_ENGINE = "tests.engines.DownEngine"
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    tasks.render_video(str(project.pk))

    done = reload(project)
    assert done.status == Status.FAILED
    assert done.attempt == 3
    assert done.error_code == "transient_error"
    assert "gave up after 3 attempts" in done.error_message
    assert DownEngine.calls == ["render 0"] * 3


@pytest.mark.django_db
def test_bad_input_fails_at_once_without_a_retry(
    make_project: Any, engine: Any, settings: Any
) -> None:
    settings.VIDEO_ENGINE = "tests.engines.PickyEngine"
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    tasks.generate_script(str(project.pk))

    done = reload(project)
    assert done.status == Status.FAILED
    assert done.attempt == 1
    assert done.error == {
        "code": "invalid_input",
        "message": "The brief has nothing that can be filmed.",
    }
    assert PickyEngine.calls == ["outline"]
    assert done.events.filter(kind=EventKind.ERROR).count() == 1


@pytest.mark.django_db
def test_a_job_past_its_time_limit_fails_and_leaves_no_ffmpeg(
    scripted_project: Any, engine: Any, settings: Any
) -> None:
    settings.JOB_TIME_LIMIT = 0.3
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    tasks.render_video(str(project.pk))

    done = reload(project)
    assert done.status == Status.FAILED
    assert done.error_code == "timeout"
    assert "ran past its limit" in done.error_message
    assert processes_mentioning(str(project.pk)) == []


@pytest.mark.django_db(transaction=True)
def test_cancel_mid_render_kills_ffmpeg_and_returns_to_draft(
    scripted_project: Any, engine: Any, media_root: Path
) -> None:
    api = api_client_for(scripted_project.owner)
    lifecycle.start_job(scripted_project, Step.RENDER)
    worker = threading.Thread(target=_run_render, args=(scripted_project.pk,))
    worker.start()
    try:
        wait_for(lambda: processes_mentioning(str(scripted_project.pk)), "ffmpeg to start")

        response = api.post(f"/api/video-creation/projects/{scripted_project.pk}/cancel")

        assert response.status_code == 202
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        lifecycle.cancel(scripted_project) if reload(scripted_project).is_running else None
        worker.join(timeout=30)
    assert processes_mentioning(str(scripted_project.pk)) == []
    done = reload(scripted_project)
    assert done.status == Status.DRAFT
    assert done.script_data == scripted_project.script_data
    assert not done.video
    assert engine.calls == ["render 0"]


def _run_render(project_id: Any) -> None:
    try:
        tasks.render_video(str(project_id))
    finally:
        connection.close()


# --- The reporter's log lines ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reporter(scripted_project: VideoProject, settings: Any) -> progress.Reporter:
    """A running render's reporter on a clock the test moves; its first write is done."""
    settings.PROGRESS_MIN_INTERVAL = 0.25
    lifecycle.start_job(scripted_project, Step.RENDER)
    assert lifecycle.claim(scripted_project.pk, Step.RENDER, "worker-1") is not None
    reporter = progress.Reporter(
        scripted_project.pk,
        step=Step.RENDER,
        lease_owner="worker-1",
        stages=[progress.Stage("scene", "Rendering", 1.0)],
        deadline=10_000.0,
        clock=FakeClock(),
    )
    reporter.begin(0)
    return reporter


def log_events(project_id: Any) -> list[list[str]]:
    events = VideoProject.objects.get(pk=project_id).events.filter(kind=EventKind.LOG)
    return [event.payload["lines"] for event in events.order_by("seq")][1:]  # after "Picked up"


@pytest.mark.django_db
def test_lines_logged_within_one_interval_travel_in_one_event(
    reporter: progress.Reporter,
) -> None:
    for number in range(1000):
        reporter.log(f"line {number}")
    assert log_events(reporter.project_id) == []

    reporter.clock.now += 0.25
    reporter.log("line 1000")

    [lines] = log_events(reporter.project_id)
    assert lines == [f"line {number}" for number in range(1001)]
    event = VideoProject.objects.get(pk=reporter.project_id).events.filter(kind=EventKind.LOG)
    assert event.last().payload["line"] == "\n".join(lines)


@pytest.mark.django_db
def test_lines_across_intervals_make_one_event_per_interval_and_the_flush_writes_the_rest(
    reporter: progress.Reporter,
) -> None:
    for interval in range(3):
        for number in range(5):
            reporter.log(f"{interval}.{number}")
        reporter.clock.now += 0.3
    reporter.log("the last line")
    reporter.clock.now += 0.1
    reporter.log("logged after the last write")

    # The first line past an interval's end is what writes the interval.
    assert log_events(reporter.project_id) == [
        ["0.0", "0.1", "0.2", "0.3", "0.4", "1.0"],
        ["1.1", "1.2", "1.3", "1.4", "2.0"],
        ["2.1", "2.2", "2.3", "2.4", "the last line"],
    ]

    reporter.flush()

    assert log_events(reporter.project_id)[3:] == [["logged after the last write"]]


@pytest.mark.django_db
def test_a_flood_of_lines_is_written_early_in_bounded_batches_and_none_is_lost(
    reporter: progress.Reporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "MAX_PENDING_LINES", 10)
    monkeypatch.setattr(progress, "MAX_PENDING_CHARS", 100)

    for number in range(25):
        reporter.log(f"line {number}")
    reporter.log("x" * 5000)  # cut to 2000 characters, and over the character bound alone
    reporter.log("the rest")
    reporter.flush()

    batches = log_events(reporter.project_id)
    assert [len(batch) for batch in batches] == [10, 10, 6, 1]
    assert [line for batch in batches for line in batch] == [
        *(f"line {number}" for number in range(25)),
        "x" * 2000,
        "the rest",
    ]
