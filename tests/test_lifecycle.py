from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from projects import dispatch, lifecycle
from projects.lifecycle import Conflict
from projects.models import Status, Step, VideoProject
from tests.conftest import SCRIPT, events_of

pytestmark = pytest.mark.django_db


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


def test_a_new_project_opens_its_log_with_a_status_event(make_project: Any) -> None:
    project = make_project()

    events = events_of(project)

    assert [(event.seq, event.kind) for event in events] == [(1, "status")]
    assert events[0].payload["status"] == "DRAFT"
    assert project.version == 1


def test_the_script_job_goes_draft_running_draft_with_a_script(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    assert project.status == Status.GENERATING_SCRIPT
    assert lifecycle.claim(project.pk, Step.SCRIPT, "worker-1") is not None

    assert lifecycle.finish_script(project.pk, "worker-1", SCRIPT)

    done = reload(project)
    assert done.status == Status.DRAFT
    assert done.script_data == SCRIPT
    assert done.progress == 100
    assert done.completed_at is not None
    assert done.lease_owner == ""


def test_a_project_set_to_auto_render_queues_its_render_as_the_script_is_saved(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    fields = {"title": "Trains", "brief": "Night trains across Europe.", "aspect_ratio": "16:9"}
    with django_capture_on_commit_callbacks() as queued:
        project = lifecycle.start_video(alice, fields)
    assert (project.status, project.auto_render, len(queued)) == ("GENERATING_SCRIPT", True, 1)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")

    with django_capture_on_commit_callbacks() as queued:
        assert lifecycle.finish_script(project.pk, "worker-1", SCRIPT)

    rendering = reload(project)
    assert (rendering.status, rendering.script_data, rendering.progress) == ("RENDERING", SCRIPT, 0)
    assert [c.args for c in queued if c.func is dispatch.dispatch] == [(project.pk,)]
    assert not rendering.auto_render
    statuses = [event.payload["status"] for event in events_of(project) if event.kind == "status"]
    assert statuses[-2:] == ["DRAFT", "RENDERING"]
    # Once rendered, writing the script again waits for a person's review.
    lifecycle.claim(project.pk, Step.RENDER, "worker-2")
    lifecycle.finish_render(project.pk, "worker-2", "videos/x.mp4")
    again = lifecycle.start_job(reload(project), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-3")
    lifecycle.finish_script(again.pk, "worker-3", SCRIPT)
    assert reload(project).status == Status.DRAFT


def test_a_cancel_turns_auto_render_off(alice: Any) -> None:
    fields = {"title": "Trains", "brief": "Night trains across Europe.", "aspect_ratio": "16:9"}
    project = lifecycle.cancel(lifecycle.start_video(alice, fields))
    assert (project.status, project.auto_render) == (Status.DRAFT, False)


def test_the_render_job_ends_completed(scripted_project: Any) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")

    assert lifecycle.finish_render(project.pk, "worker-1", "videos/x.mp4")

    done = reload(project)
    assert done.status == Status.COMPLETED
    assert done.video_url == f"/api/video-creation/projects/{project.pk}/video?v=x"


def test_a_failed_job_can_be_started_again(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    lifecycle.fail(project.pk, "worker-1", "engine_error", "The engine broke.")
    failed = reload(project)
    assert failed.error == {"code": "engine_error", "message": "The engine broke."}

    again = lifecycle.start_job(failed, Step.SCRIPT)

    assert again.status == Status.GENERATING_SCRIPT
    assert again.error is None
    assert again.error_message == ""


def test_only_the_lease_holder_finishes_a_job(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")

    assert not lifecycle.finish_script(project.pk, "worker-2", SCRIPT)
    assert not lifecycle.fail(project.pk, "worker-2", "x", "y")
    assert reload(project).status == Status.GENERATING_SCRIPT


def test_a_live_lease_keeps_a_second_delivery_out(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    first = lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    second = lifecycle.claim(project.pk, Step.SCRIPT, "worker-2")

    assert first is not None
    assert second is None
    assert reload(project).lease_owner == "worker-1"


def test_a_claim_for_the_wrong_job_or_a_finished_one_does_nothing(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    assert lifecycle.claim(project.pk, Step.RENDER, "worker-1") is None
    lifecycle.cancel(project)
    assert lifecycle.claim(project.pk, Step.SCRIPT, "worker-1") is None


def test_a_cancelled_job_cannot_be_finished_by_its_worker(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")

    lifecycle.cancel(project)

    assert not lifecycle.finish_script(project.pk, "worker-1", SCRIPT)
    assert reload(project).status == Status.DRAFT
    assert reload(project).script_data is None


@pytest.mark.parametrize("status", [Status.GENERATING_SCRIPT, Status.RENDERING])
def test_nothing_starts_while_a_job_runs(scripted_project: Any, status: Status) -> None:
    step = Step.SCRIPT if status == Status.GENERATING_SCRIPT else Step.RENDER
    project = lifecycle.start_job(scripted_project, step)

    for other in (Step.SCRIPT, Step.RENDER):
        with pytest.raises(Conflict) as refused:
            lifecycle.start_job(project, other)
        assert refused.value.status == status


def test_every_change_appends_one_event_numbered_by_version(scripted_project: Any) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")
    lifecycle.fail(project.pk, "worker-1", "boom", "It broke.")
    lifecycle.mark_notified(reload(project))

    project = reload(project)
    seqs = [event.seq for event in events_of(project)]

    assert seqs == list(range(1, project.version + 1))
    kinds = [event.kind for event in events_of(project)]
    assert kinds[-3:] == ["error", "status", "status"]


def test_the_sweeper_puts_back_a_job_whose_worker_died(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "dead-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert lifecycle.sweep_lost_jobs() == 1

    back = reload(project)
    assert back.status == Status.GENERATING_SCRIPT
    assert back.lease_owner == ""
    assert back.attempt == 2
    assert lifecycle.claim(project.pk, Step.SCRIPT, "new-worker") is not None


def test_the_sweeper_leaves_live_jobs_alone(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "live-worker")

    assert lifecycle.sweep_lost_jobs() == 0
    assert reload(project).lease_owner == "live-worker"


def test_the_sweeper_fails_a_job_after_its_last_attempt(make_project: Any, settings: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "dead-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        attempt=settings.JOB_MAX_ATTEMPTS, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert lifecycle.sweep_lost_jobs() == 1

    failed = reload(project)
    assert failed.status == Status.FAILED
    assert failed.error_code == "worker_lost"
