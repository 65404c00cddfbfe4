"""An honest time remaining: from how long jobs took on this installation, null without a
basis, and closer to the job's own pace as its bar fills."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Q

from projects import estimates, lifecycle, progress
from projects.models import EventKind, Status, Step, VideoProject
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


def claimed_render(project: VideoProject) -> VideoProject:
    """Started and claimed as a worker claims it, with the basis the worker writes."""
    started = lifecycle.start_job(project, Step.RENDER)
    basis = estimates.basis(started, Step.RENDER, "local")
    claimed = lifecycle.claim(started.pk, Step.RENDER, "worker-1", basis)
    assert claimed is not None
    return claimed


def at_percent(project: VideoProject, percent: int) -> VideoProject:
    written = progress.write(
        project.pk,
        expect=Q(lease_owner="worker-1"),
        fields={"progress": percent},
        events=[(EventKind.PROGRESS, {})],
    )
    assert written is not None
    return written


def test_without_any_finished_job_there_is_no_estimate(scripted_project: VideoProject) -> None:
    project = claimed_render(scripted_project)

    assert project.to_status_dict()["estimatedSecondsRemaining"] is None


def test_the_first_estimate_is_the_median_pace_of_past_jobs_times_this_length(
    scripted_project: VideoProject,
) -> None:
    for seconds in (6.0, 8.0, 100.0):  # 4 s of video each: 1.5, 2 and 25 s a second
        estimates.record(Step.RENDER, "local", 4.0, seconds)
    estimates.record(Step.RENDER, "remote", 4.0, 400.0)  # another engine: not this one's pace

    project = claimed_render(scripted_project)  # 2 scenes of 2 s

    assert project.estimate_seconds == pytest.approx(8.0)  # the median, 2 s a second, for 4 s
    assert project.to_status_dict()["estimatedSecondsRemaining"] == 8


def test_as_the_bar_fills_the_jobs_own_pace_weighs_more(scripted_project: VideoProject) -> None:
    estimates.record(Step.RENDER, "local", 4.0, 8.0)  # expected: 8 s
    project = claimed_render(scripted_project)
    began = project.run_started_at
    assert began is not None

    halfway = at_percent(project, 50)
    # Half done after 20 s: history says 4 s left, the pace says 20; halfway, each counts half.
    assert halfway.seconds_left(now=began + timedelta(seconds=20)) == 12
    nearly = at_percent(project, 90)
    assert nearly.seconds_left(now=began + timedelta(seconds=36)) == 4  # 0.1 * 0.8 + 0.9 * 4


def test_a_job_waiting_for_a_worker_has_no_time_left_yet(
    scripted_project: VideoProject,
) -> None:
    estimates.record(Step.RENDER, "local", 4.0, 8.0)

    queued = lifecycle.start_job(scripted_project, Step.RENDER)

    assert queued.to_status_dict()["estimatedSecondsRemaining"] is None
    assert reload(queued).estimate_seconds is None


def test_the_openai_bar_splits_by_how_long_both_jobs_take_here(make_project: Any) -> None:
    project = make_project(scene_count=4, seconds_per_scene=5)
    assert estimates.script_share(project) == estimates.DEFAULT_SCRIPT_SHARE

    estimates.record(Step.SCRIPT, "local", 2.0, 2.0)  # 1 s a scene: 4 s for this one
    estimates.record(Step.RENDER, "local", 10.0, 18.0)  # 1.8 s a second: 36 s for 20 s

    assert estimates.script_share(project) == pytest.approx(0.1)


@pytest.fixture
def fast_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VIDEO_ENGINE", "SCRIPT_ENGINE", "RENDER_ENGINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_worker_records_each_job_and_estimates_the_next_from_it(
    fast_worker_env: None, qcluster: subprocess.Popen[bytes], make_project: Any
) -> None:
    first, second = make_project(), make_project()

    for project in (first, second):
        lifecycle.start_job(project, Step.SCRIPT)
        wait_for(
            lambda p=project: reload(p).status == Status.DRAFT and reload(p).script_data,
            "the script to be written",
            timeout=60,
            every=0.1,
        )

    def estimates_in_events(project: VideoProject) -> list[Any]:
        events = project.events.filter(kind=EventKind.PROGRESS).order_by("seq")
        return [event.payload["estimatedSecondsRemaining"] for event in events]

    assert set(estimates_in_events(first)) == {None}, "no basis for the very first job"
    later = [value for value in estimates_in_events(second) if value is not None]
    assert later, "the second job is estimated from the first"
    assert estimates.expected_seconds(Step.SCRIPT, 2.0, "local") is not None


def test_before_its_first_report_the_estimate_counts_down_by_the_clock(
    scripted_project: VideoProject,
) -> None:
    estimates.record(Step.RENDER, "local", 4.0, 8.0)
    project = claimed_render(scripted_project)
    began = project.run_started_at
    assert began is not None

    assert project.seconds_left(now=began + timedelta(seconds=3)) == 5
    assert project.seconds_left(now=began + timedelta(seconds=30)) == 1  # late, never 0
