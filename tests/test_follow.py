"""`manage.py follow` shows a running job in the terminal and exits with its outcome."""

from __future__ import annotations

import io
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Q

from projects import lifecycle, progress, tasks
from projects.models import Step, VideoProject
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def every_report_written(settings: Any) -> None:
    settings.PROGRESS_MIN_INTERVAL = 0


def follow(*args: str) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("follow", *args, stdout=out)
    except SystemExit as exit_:
        return out.getvalue(), int(exit_.code or 0)
    return out.getvalue(), 0


def run_in_thread(task: Any, project: VideoProject) -> threading.Thread:
    def work() -> None:
        try:
            task(str(project.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def follow_in_thread(*args: str) -> tuple[threading.Thread, io.StringIO, dict[str, int]]:
    """Start following first, so the job cannot end before the follower looks."""
    out = io.StringIO()
    result: dict[str, int] = {}

    def work() -> None:
        try:
            call_command("follow", *args, stdout=out)
            result["code"] = 0
        except SystemExit as exit_:
            result["code"] = int(exit_.code or 0)
        finally:
            connection.close()

    follower = threading.Thread(target=work)
    follower.start()
    wait_for(lambda: "[" in out.getvalue(), "the follower to draw its bar")
    return follower, out, result


def test_it_follows_a_render_to_the_video(scripted_project: VideoProject) -> None:
    project = lifecycle.start_job(scripted_project, Step.RENDER)
    follower, out, result = follow_in_thread(str(project.pk), "--timeout", "60")

    run_in_thread(tasks.render_video, project).join(timeout=60)
    follower.join(timeout=60)

    output = out.getvalue()
    assert result["code"] == 0
    percents = [int(value) for value in re.findall(r"\]\s+(\d+)%", output)]
    assert percents == sorted(percents)
    assert len({value for value in percents if 0 < value < 100}) >= 2
    assert "step 2/3  Rendering scene 2 of 2" in output
    assert "Scene 1: rendering" in output
    video = VideoProject.objects.get(pk=project.pk).video
    assert output.rstrip().endswith(
        f"Video ready: /api/video-creation/projects/{project.pk}/video?v={Path(video.name).stem}"
    )


def test_a_failed_job_exits_1_with_its_error(make_project: Any, settings: Any) -> None:
    settings.VIDEO_ENGINE = "tests.engines.PickyEngine"
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    follower, out, result = follow_in_thread(str(project.pk), "--timeout", "60")

    run_in_thread(tasks.generate_script, project).join(timeout=60)
    follower.join(timeout=60)

    output = out.getvalue()
    assert result["code"] == 1
    assert output.count("The brief has nothing that can be filmed.") == 1
    assert "Failed: The brief has nothing that can be filmed." in output


def test_a_cancelled_job_exits_2(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    follower, out, result = follow_in_thread(str(project.pk), "--timeout", "30")

    lifecycle.cancel(project)
    follower.join(timeout=30)

    assert result["code"] == 2
    assert out.getvalue().rstrip().endswith("Cancelled.")


def test_since_resumes_mid_job_and_keeps_waiting(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    seen = VideoProject.objects.get(pk=project.pk).version
    lifecycle.next_attempt(project.pk, "worker-1", 2, "Trying again after a hiccup")

    output, code = follow(str(project.pk), "--since", str(seen), "--timeout", "0.5")

    assert code == 3
    assert "Trying again after a hiccup" in output
    assert "Picked up by a worker" not in output


def test_from_start_replays_every_event_of_a_finished_job(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    tasks.generate_script(str(project.pk))

    output, code = follow(str(project.pk), "--from-start")

    assert code == 0
    assert "Picked up by a worker" in output
    assert output.rstrip().endswith("Script ready.")
    assert output.count("Script ready.") == 1
    events = project.events.filter(kind="log").order_by("seq")
    lines = [line for event in events for line in event.payload["lines"]]
    positions = [output.index(line) for line in lines]
    assert positions == sorted(positions)


def test_every_line_of_a_batched_log_event_is_printed_on_its_own(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    seen = VideoProject.objects.get(pk=project.pk).version
    batch = [f"frame {number} drawn" for number in range(5)]
    progress.write(project.pk, expect=Q(), fields={}, events=[progress.log_event(*batch)])

    output, code = follow(str(project.pk), "--since", str(seen), "--timeout", "0.5")

    assert code == 3
    assert output.splitlines()[1:6] == batch


def test_nothing_running_is_said_at_once(make_project: Any) -> None:
    output, code = follow(str(make_project().pk))

    assert code == 0
    assert "No job is running." in output


def test_waiting_can_time_out(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    output, code = follow(str(project.pk), "--timeout", "0.3")

    assert code == 3
    assert "Stopped waiting." in output


@pytest.mark.parametrize("project_id", ["not-an-id", str(uuid.uuid4())])
def test_an_unknown_project_is_a_clear_error(project_id: str) -> None:
    with pytest.raises(CommandError, match="There is no project with the id"):
        call_command("follow", project_id, stdout=io.StringIO())


def follow_all_in_thread(*args: str) -> tuple[threading.Thread, io.StringIO]:
    out = io.StringIO()

    def work() -> None:
        try:
            call_command("follow", "--all", *args, stdout=out)
        finally:
            connection.close()

    follower = threading.Thread(target=work)
    follower.start()
    wait_for(lambda: "Ctrl-C to stop" in out.getvalue(), "the follower to start")
    return follower, out


def test_all_follows_every_project_of_the_user_and_only_theirs(
    make_project: Any, alice: Any, charlie: Any
) -> None:
    trains = make_project(title="Night trains")
    ferries = make_project(title="Ferries")
    charlies = make_project(owner=charlie, title="Charlie's secret")
    follower, out = follow_all_in_thread("alice", "--timeout", "25")
    try:
        for project in (trains, ferries):
            lifecycle.start_job(project, Step.SCRIPT)
            run_in_thread(tasks.generate_script, project).join(timeout=60)
        lifecycle.start_job(charlies, Step.SCRIPT)
        later = make_project(title="Made later")
        wait_for(
            lambda: (
                "Made later" in out.getvalue() and out.getvalue().count("Draft  Script ready") == 2
            ),
            "both scripts and the new project to show",
        )
    finally:
        follower.join(timeout=60)  # it stops at its timeout

    lines = out.getvalue().splitlines()
    assert lines[0] == "Following the 2 projects of alice (0 running); Ctrl-C to stop."
    for project in (trains, ferries):
        prefix = f"{project.title} [{project.pk.hex[:8]}]"
        mine = [line for line in lines if line.startswith(prefix)]
        percents = [int(value) for value in re.findall(r"\]\s+(\d+)%", "\n".join(mine))]
        assert percents == sorted(percents) and len(set(percents)) > 3, mine
        assert any("Scene 1" in line or "scene 1" in line for line in mine), mine
        assert mine[-1] == f"{prefix}  Draft  Script ready"
    assert f"Made later [{later.pk.hex[:8]}]  Draft" in out.getvalue()
    assert "Charlie" not in out.getvalue()


def test_all_from_start_replays_and_refuses_an_unknown_user(make_project: Any) -> None:
    project = make_project(title="Night trains")
    output, code = follow("--all", "alice", "--from-start", "--timeout", "0.3")
    assert code == 0
    assert f"Night trains [{project.pk.hex[:8]}]  Draft" in output
    with pytest.raises(CommandError, match="There is no user named 'nobody'"):
        call_command("follow", "--all", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--since"):
        call_command("follow", "--all", "alice", "--since", "3", stdout=io.StringIO())
