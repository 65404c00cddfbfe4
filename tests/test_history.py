from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone
from rest_framework.test import APIClient

from projects import lifecycle, progress, tasks
from projects.models import (
    EventKind,
    LiveClient,
    ProgressEvent,
    Status,
    Step,
    VideoProject,
    WebSocketSession,
    WebSocketSubscription,
)
from tests.conftest import SCRIPT, api_client_for

pytestmark = pytest.mark.django_db

API = "/api/video-creation"


def finished_script_job(make_project: Any, **overrides: Any) -> VideoProject:
    project = lifecycle.start_job(make_project(**overrides), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    lifecycle.finish_script(project.pk, "worker-1", SCRIPT)
    return VideoProject.objects.get(pk=project.pk)


def test_history_pages_through_the_log_in_order(alice_api: APIClient, make_project: Any) -> None:
    project = finished_script_job(make_project)
    url = f"{API}/projects/{project.pk}/history"

    first = alice_api.get(url, {"limit": 2}).json()
    rest = alice_api.get(url, {"after": first["nextAfter"], "limit": 1000}).json()

    seqs = [event["seq"] for event in first["events"] + rest["events"]]
    assert seqs == list(range(1, project.version + 1))
    assert first["hasMore"] is True
    assert rest["hasMore"] is False
    assert rest["version"] == project.version
    assert first["events"][0]["kind"] == "status"
    assert rest["events"][-1]["payload"]["status"] == "DRAFT"


def test_history_after_the_latest_seq_is_empty(alice_api: APIClient, make_project: Any) -> None:
    project = finished_script_job(make_project)

    body = alice_api.get(f"{API}/projects/{project.pk}/history", {"after": project.version}).json()

    assert body["events"] == []
    assert body["nextAfter"] == project.version


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}])
def test_history_refuses_a_bad_query(
    alice_api: APIClient, make_project: Any, query: dict[str, Any]
) -> None:
    response = alice_api.get(f"{API}/projects/{make_project().pk}/history", query)

    assert response.status_code == 400
    assert set(response.json()["fields"]) <= {"limit", "after"}


def test_history_of_another_users_project_is_not_found(
    charlie_api: APIClient, make_project: Any
) -> None:
    project = finished_script_job(make_project)

    assert charlie_api.get(f"{API}/projects/{project.pk}/history").status_code == 404
    assert charlie_api.delete(f"{API}/projects/{project.pk}/history").status_code == 404
    assert project.events.count() == project.version


def test_the_owner_clears_a_finished_projects_history(
    alice_api: APIClient, make_project: Any
) -> None:
    project = finished_script_job(make_project)

    response = alice_api.delete(f"{API}/projects/{project.pk}/history")

    assert response.status_code == 204
    assert project.events.count() == 0
    again = lifecycle.start_job(project, Step.RENDER)
    assert again.events.get().seq == project.version + 1


def test_the_history_of_a_running_job_is_kept(alice_api: APIClient, make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    response = alice_api.delete(f"{API}/projects/{project.pk}/history")

    assert response.status_code == 409
    assert response.json()["status"] == "GENERATING_SCRIPT"
    assert project.events.count() == project.version


def test_pruning_drops_only_old_idle_projects_events(make_project: Any, settings: Any) -> None:
    old = finished_script_job(make_project, title="Old")
    recent = finished_script_job(make_project, title="Recent")
    running = lifecycle.start_job(make_project(title="Running"), Step.SCRIPT)
    long_ago = timezone.now() - timedelta(days=settings.EVENT_RETENTION_DAYS + 1)
    VideoProject.objects.filter(pk__in=[old.pk, running.pk]).update(updated_at=long_ago)

    tasks.prune_history()

    assert not ProgressEvent.objects.filter(project=old).exists()
    assert ProgressEvent.objects.filter(project=recent).count() == recent.version
    assert ProgressEvent.objects.filter(project=running).count() == running.version


def test_pruning_forgets_clients_of_dead_processes_and_abandoned_sockets(
    alice: Any, make_project: Any, settings: Any
) -> None:
    now = timezone.now()
    stale = now - timedelta(seconds=settings.LIVE_CLIENT_STALE_SECONDS + 1)
    dead = LiveClient.objects.create(transport="sse", user=alice, process="gone:1", seen_at=stale)
    alive = LiveClient.objects.create(transport="sse", user=alice, process="here:1", seen_at=now)
    abandoned = WebSocketSession.objects.create(user=alice)
    kept = WebSocketSession.objects.create(user=alice)
    WebSocketSubscription.objects.create(session=abandoned, project=make_project())
    long_ago = now - timedelta(days=settings.WS_SESSION_RETENTION_DAYS + 1)
    WebSocketSession.objects.filter(pk=abandoned.pk).update(updated_at=long_ago)

    tasks.prune_history()

    assert list(LiveClient.objects.all()) == [alive]
    assert not LiveClient.objects.filter(pk=dead.pk).exists()
    assert list(WebSocketSession.objects.all()) == [kept]
    assert not WebSocketSubscription.objects.exists()


def test_stats_count_the_callers_projects_by_status(
    alice_api: APIClient, make_project: Any, charlie: Any
) -> None:
    make_project()
    lifecycle.start_job(make_project(), Step.SCRIPT)
    make_project(owner=charlie)

    body = alice_api.get(f"{API}/stats").json()

    assert body["scope"] == "mine"
    assert body["total"] == 2
    assert body["byStatus"] == {
        "DRAFT": 1, "GENERATING_SCRIPT": 1, "RENDERING": 0, "COMPLETED": 0, "FAILED": 0
    }  # fmt: skip


def test_staff_stats_count_everyones_projects(make_project: Any, charlie: Any) -> None:
    make_project()
    make_project(owner=charlie)
    charlie.is_staff = True
    charlie.save()
    staff = api_client_for(charlie)

    body = staff.get(f"{API}/stats").json()

    assert body["scope"] == "everyone"
    assert body["byStatus"][Status.DRAFT] == 2


def test_delete_history_is_refused_by_the_write_path_while_running(make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    assert progress.delete_history(project) is None


# --- the log endpoint over batched log events ----------------------------------------


def log_in_batches(project: VideoProject, *batches: list[str]) -> None:
    """Append log events as a reporter writes them: each carrying a batch of lines."""
    for batch in batches:
        progress.write(project.pk, expect=Q(), fields={}, events=[progress.log_event(*batch)])


def read_whole_log(api: APIClient, project: VideoProject, offset: int = 0) -> list[list[str]]:
    pages = []
    while True:
        body = api.get(f"{API}/projects/{project.pk}/log", {"offset": offset}).json()
        if not body["lines"]:
            assert body["nextOffset"] == offset
            return pages
        assert body["nextOffset"] == offset + len(body["lines"])
        pages.append(body["lines"])
        offset = body["nextOffset"]


def test_the_log_counts_lines_not_events_across_batches(
    alice_api: APIClient, make_project: Any
) -> None:
    project = make_project()
    # An event from before batching carries one `line` and counts as one line.
    progress.write(project.pk, expect=Q(), fields={}, events=[(EventKind.LOG, {"line": "old"})])
    log_in_batches(project, ["a0", "a1", "a2"], ["b0"], [f"c{n}" for n in range(1200)], ["d0"])
    everything = ["old", "a0", "a1", "a2", "b0", *(f"c{n}" for n in range(1200)), "d0"]

    pages = read_whole_log(alice_api, project)

    assert [len(page) for page in pages] == [500, 500, 206]
    assert [line for page in pages for line in page] == everything
    for offset in (1, 2, 4, 5, 504, 1204, 1205, 1206, 5000):
        body = alice_api.get(f"{API}/projects/{project.pk}/log", {"offset": offset}).json()
        assert body["lines"] == everything[offset : offset + 500], offset
        assert body["nextOffset"] == offset + len(body["lines"])


def test_a_late_offset_reads_only_the_events_that_hold_its_page(
    alice_api: APIClient, make_project: Any, django_assert_max_num_queries: Any
) -> None:
    project = make_project()
    log_in_batches(project, *([f"{batch}.{n}" for n in range(100)] for batch in range(50)))

    with django_assert_max_num_queries(6):
        body = alice_api.get(f"{API}/projects/{project.pk}/log", {"offset": 4950}).json()

    assert body == {"lines": [f"49.{n}" for n in range(50, 100)], "nextOffset": 5000}


@pytest.mark.parametrize(
    "offset", ["-1", "x", "1.5", "9223372036854775808", "12345678901234567890"]
)
def test_the_log_refuses_an_offset_out_of_range(
    alice_api: APIClient, make_project: Any, offset: str
) -> None:
    response = alice_api.get(f"{API}/projects/{make_project().pk}/log", {"offset": offset})

    assert response.status_code == 400
    assert "offset" in response.json()["fields"]


def test_the_largest_offset_is_an_empty_page(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()
    log_in_batches(project, ["only"])

    body = alice_api.get(f"{API}/projects/{project.pk}/log", {"offset": 2**63 - 1}).json()

    assert body == {"lines": [], "nextOffset": 2**63 - 1}
