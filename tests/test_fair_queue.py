"""A fair queue: at most MAX_ACTIVE_JOBS_PER_USER jobs of one user hold workers; the rest
are accepted, charged and wait with their place in line, while other users' jobs go ahead."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from django.contrib.auth.models import User

from projects import dispatch, lifecycle
from projects.models import Status, Step, VideoProject
from tests.conftest import api_client_for
from tests.engines import hold_file
from tests.waiting import wait_for


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The projects whose tasks reached the broker (recorded instead of sent)."""
    sent: list[str] = []
    monkeypatch.setattr(dispatch, "async_task", lambda func, project_id: sent.append(project_id))
    return sent


@pytest.mark.django_db
def test_a_users_third_job_waits_its_turn_while_another_users_first_goes(
    alice: User,
    charlie: User,
    make_project: Any,
    sent_tasks: list[str],
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    settings.MAX_ACTIVE_JOBS_PER_USER = 2
    with django_capture_on_commit_callbacks(execute=True):
        jobs = [lifecycle.start_job(make_project(), Step.SCRIPT) for _ in range(3)]
    for index, job in enumerate(jobs[:2]):
        lifecycle.claim(job.pk, Step.SCRIPT, f"worker-{index}")
    third = jobs[2]

    assert sent_tasks == [str(jobs[0].pk), str(jobs[1].pk)]
    dispatch.relay()
    waiting = reload(third)
    assert waiting.task_sent_at is None
    assert waiting.to_status_dict()["queuePosition"] == 1
    assert waiting.to_status_dict()["status"] == Status.GENERATING_SCRIPT

    with django_capture_on_commit_callbacks(execute=True):
        theirs = lifecycle.start_job(make_project(owner=charlie), Step.SCRIPT)
    assert sent_tasks[-1] == str(theirs.pk)  # not held behind alice's waiting job

    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.finish_script(jobs[0].pk, "worker-0", {"title": "t", "scenes": []})
    assert sent_tasks[-1] == str(third.pk)  # her place freed: her next job goes


@pytest.mark.django_db
def test_the_line_is_numbered_and_said_on_every_transport(
    alice: User, make_project: Any, sent_tasks: list[str], settings: Any
) -> None:
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    jobs = [lifecycle.start_job(make_project(), Step.SCRIPT) for _ in range(3)]

    dispatch.relay()

    line = [reload(job) for job in jobs]
    assert [job.queue_position for job in line] == [1, 2, 3]
    assert line[2].progress_message == "Waiting for a worker — 2 jobs ahead of yours"
    last_event = line[2].events.order_by("-seq").first()
    assert last_event.payload["progressMessage"] == line[2].progress_message
    lifecycle.claim(jobs[0].pk, Step.SCRIPT, "worker-1")
    dispatch.relay()
    assert [reload(job).to_status_dict()["queuePosition"] for job in jobs] == [None, 1, 2]
    assert reload(jobs[2]).progress_message == "Waiting for a worker — 1 job ahead of yours"


@pytest.mark.django_db
def test_a_second_job_waits_while_the_only_place_is_taken(
    alice: User, make_project: Any, sent_tasks: list[str], settings: Any
) -> None:
    settings.MAX_ACTIVE_JOBS_PER_USER = 1
    jobs = [lifecycle.start_job(make_project(), Step.SCRIPT) for _ in range(2)]

    admitted = [dispatch.dispatch(job.pk) for job in jobs]

    assert admitted == [True, False]
    assert sent_tasks == [str(jobs[0].pk)]


@pytest.fixture
def held_workers(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Three worker processes whose engine holds each script job while `hold_file()` exists;
    two places a user, for this process (the API's admissions) and the workers' sweepers."""
    monkeypatch.setenv("VIDEO_ENGINE", "tests.engines.HeldEngine")
    monkeypatch.setenv("Q_WORKERS", "3")
    monkeypatch.setenv("MAX_ACTIVE_JOBS_PER_USER", "2")
    settings.MAX_ACTIVE_JOBS_PER_USER = 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_with_real_workers_the_third_job_runs_when_a_place_frees(
    held_workers: None, alice: User, charlie: User, qcluster: subprocess.Popen[bytes]
) -> None:
    hold_file().parent.mkdir(parents=True, exist_ok=True)
    hold_file().touch()
    alice_api, charlie_api = api_client_for(alice), api_client_for(charlie)
    brief = {"title": "Trains", "brief": "Night trains cross Europe.", "sceneCount": 1}

    def start(api: Any) -> str:
        project = api.post("/api/video-creation/projects", brief, format="json").json()
        assert api.post(f"/api/video-creation/projects/{project['id']}/script").status_code == 202
        return project["id"]

    mine = [start(alice_api) for _ in range(3)]

    def status(api: Any, project_id: str) -> dict[str, Any]:
        return api.get(f"/api/video-creation/projects/{project_id}/status").json()

    def held(project_id: str) -> bool:
        return VideoProject.objects.get(pk=project_id).lease_owner != ""

    wait_for(lambda: held(mine[0]) and held(mine[1]), "two of alice's jobs to hold workers")
    theirs = start(charlie_api)
    wait_for(lambda: held(theirs), "charlie's job to get the third worker", timeout=30)
    third = wait_for(
        lambda: (answer := status(alice_api, mine[2]))["queuePosition"] == 1 and answer,
        "alice's third job to wait first in line",
    )
    assert third["status"] == "GENERATING_SCRIPT"
    assert not held(mine[2])
    # Waiting for her place, not for a worker: it was never handed to the broker.
    assert VideoProject.objects.get(pk=mine[2]).task_sent_at is None

    hold_file().unlink()
    wait_for(
        lambda: all(status(alice_api, pk)["status"] == "DRAFT" for pk in mine),
        "all of alice's jobs to finish",
        timeout=90,
    )
    assert status(charlie_api, theirs)["status"] == "DRAFT"
    assert qcluster.poll() is None
