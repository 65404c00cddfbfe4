"""A job keeps moving: its task survives the broker, a dead worker's job is taken back at
once, a live worker's never is, and a misconfigured engine fails the job at once."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone

from projects import dispatch, lifecycle, pipeline, progress
from projects.models import Status, Step, VideoProject
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What reached the broker (the real send, with the broker call recorded instead)."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(dispatch, "async_task", lambda func, *args: sent.append((func, *args)))
    return sent


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(func: str, *args: Any) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch, "async_task", refuse)


def _age(project: VideoProject, seconds: float) -> None:
    """Make the queued job look `seconds` old (as if its request had sent nothing since)."""
    past = timezone.now() - timedelta(seconds=seconds)
    VideoProject.objects.filter(pk=project.pk).update(updated_at=past)


def test_a_started_job_records_that_its_task_reached_the_broker(
    make_project: Any, sent_tasks: list, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        project = lifecycle.start_job(make_project(), Step.SCRIPT)

    assert sent_tasks == [("projects.tasks.generate_script", str(project.pk))]
    queued = reload(project)
    assert queued.task_sent_at is not None
    assert queued.task_broker == dispatch.broker_epoch()
    assert dispatch.relay() == 0
    assert len(sent_tasks) == 1


def test_a_start_while_the_broker_is_down_is_kept_and_relayed_when_it_is_back(
    make_project: Any,
    broker_down: None,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        project = lifecycle.start_job(make_project(), Step.SCRIPT)

    queued = reload(project)
    assert queued.status == Status.GENERATING_SCRIPT
    assert queued.task_sent_at is None
    _age(project, 5)
    assert dispatch.relay() == 0  # still down: nothing sent, nothing lost
    assert reload(project).task_sent_at is None

    sent: list[tuple] = []
    monkeypatch.setattr(dispatch, "async_task", lambda func, *args: sent.append((func, *args)))
    assert dispatch.relay() == 1

    assert sent == [("projects.tasks.generate_script", str(project.pk))]
    assert reload(project).task_sent_at is not None


def test_a_job_the_relay_admitted_is_not_sent_again_by_its_own_request(
    make_project: Any, sent_tasks: list
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)  # its on-commit send not run yet

    assert dispatch.relay() == 1
    assert dispatch.dispatch(project.pk) is False  # the request's own send, late

    assert sent_tasks == [("projects.tasks.generate_script", str(project.pk))]


def test_a_task_sent_to_a_redis_that_restarted_since_is_sent_again(
    make_project: Any, sent_tasks: list, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        project = lifecycle.start_job(make_project(), Step.SCRIPT)
    VideoProject.objects.filter(pk=project.pk).update(task_broker="run-id-before-the-restart")

    assert dispatch.relay() == 1

    assert len(sent_tasks) == 2
    assert reload(project).task_broker == dispatch.broker_epoch()


def test_a_claimed_job_is_never_relayed(
    make_project: Any, sent_tasks: list, django_capture_on_commit_callbacks: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    VideoProject.objects.filter(pk=project.pk).update(task_broker="another-life")
    _age(project, 3600)

    assert dispatch.relay() == 0
    assert sent_tasks == []


def test_the_sweeper_says_where_a_lost_render_resumes(
    scripted_project: Any, sent_tasks: list, django_capture_on_commit_callbacks: Any
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "dead-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        completed_steps=1, total_steps=3, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert lifecycle.sweep_lost_jobs() == 1

    back = reload(project)
    assert back.progress_message == "Worker lost — resuming from scene 2"
    assert back.attempt == 2
    assert sent_tasks[-1] == ("projects.tasks.render_video", str(project.pk))


def test_a_lease_renewed_after_the_sweeper_looked_keeps_its_worker(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "slow-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    seen_by_sweeper = reload(project)

    assert progress.extend_lease(project.pk, "slow-worker")  # the worker's heartbeat, just now
    assert lifecycle._put_back(seen_by_sweeper, timezone.now()) == 0

    kept = reload(project)
    assert kept.lease_owner == "slow-worker"
    assert kept.attempt == 1


def test_a_last_attempt_renewed_after_the_sweeper_looked_is_not_failed(
    make_project: Any, settings: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "slow-worker")
    VideoProject.objects.filter(pk=project.pk).update(
        attempt=settings.JOB_MAX_ATTEMPTS, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    seen_by_sweeper = reload(project)

    assert progress.extend_lease(project.pk, "slow-worker")
    assert lifecycle._put_back(seen_by_sweeper, timezone.now()) == 0
    assert reload(project).status == Status.GENERATING_SCRIPT


def test_a_job_whose_engine_setting_is_misspelt_fails_at_once_naming_it(
    scripted_project: Any, settings: Any
) -> None:
    settings.RENDER_ENGINE = "lcoal"
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    pipeline.render(project.pk)

    failed = reload(project)
    assert failed.status == Status.FAILED
    assert failed.error_code == "misconfigured"
    assert failed.error_message.startswith("RENDER_ENGINE is 'lcoal', which is not an engine")


def test_a_misspelt_engine_setting_stops_a_process_at_its_checks(settings: Any) -> None:
    settings.SCRIPT_ENGINE = "projects.engines.nope.Engine"

    with pytest.raises(
        SystemCheckError, match=r"SCRIPT_ENGINE is 'projects\.engines\.nope\.Engine'"
    ):
        call_command("check")


def test_a_worker_with_a_misspelt_engine_refuses_to_start(tmp_path: Any) -> None:
    env = {"VIDEO_ENGINE": "nonsense", "SQLITE_TEST_DB": str(tmp_path / "unused.sqlite3")}
    worker = subprocess.run(
        [sys.executable, "manage.py", "worker"],
        cwd=settings.BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode != 0
    assert "VIDEO_ENGINE is 'nonsense', which is not an engine" in worker.stderr


@pytest.fixture
def quiet_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short lease; scenes silent for twice as long. Request it before `qcluster`."""
    monkeypatch.setenv("RENDER_ENGINE", "tests.engines.QuietEngine")
    monkeypatch.setenv("QUIET_SECONDS", "6")
    monkeypatch.setenv("JOB_LEASE_SECONDS", "3")
    monkeypatch.setenv("JOB_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("JOB_SWEEP_SECONDS", "0.2")


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_slow_but_alive_worker_never_loses_its_job(
    quiet_worker_env: None, qcluster: subprocess.Popen[bytes], scripted_project: VideoProject
) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)

    done = wait_for(
        lambda: reload(project).status != Status.RENDERING and reload(project),
        "the silent render to end",
        timeout=90,
        every=0.2,
    )

    assert done.status == Status.COMPLETED, done.error_message
    assert done.attempt == 1
    lines = [e.payload.get("line", "") for e in done.events.filter(kind="log")]
    assert not any("Worker lost" in line for line in lines), lines
    assert qcluster.poll() is None
