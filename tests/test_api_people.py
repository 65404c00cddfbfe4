"""The API as people use it: delete and duplicate a project, "Not now" to resuming it,
the title in the status object, and errors in the words of the form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from credits import ledger
from credits.models import LedgerEntry
from projects import lifecycle, progress
from projects.models import EventKind, ProgressEvent, Status, Step, VideoProject
from projects.pipeline import preview_path, project_dir
from tests.conftest import BRIEF, SCRIPT, api_client_for

pytestmark = pytest.mark.django_db

API = "/api/video-creation"


def url(project: VideoProject, action: str = "") -> str:
    return f"{API}/projects/{project.pk}" + (f"/{action}" if action else "")


def snapshot() -> tuple[list[Any], int]:
    """Everything a refused request must leave as it was."""
    return list(VideoProject.objects.order_by("pk").values()), ProgressEvent.objects.count()


def unfinished_ids(client: APIClient) -> list[str]:
    response = client.get(f"{API}/unfinished")
    assert response.status_code == 200
    return [project["id"] for project in response.json()]


@pytest.fixture
def rendered_project(scripted_project: VideoProject, media_root: Path) -> VideoProject:
    """A finished project with every kind of file a project leaves: video, previews, clips."""
    for index in range(len(SCRIPT["scenes"])):
        preview = preview_path(scripted_project.pk, index)
        preview.parent.mkdir(parents=True, exist_ok=True)
        preview.write_bytes(b"RIFF-preview-%d" % index)
    started = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(started.pk, Step.RENDER, "w")
    clips = project_dir(started.pk) / "clips"
    clips.mkdir(parents=True)
    (clips / "scene-0-cafe.mp4").write_bytes(b"clip")
    name = f"videos/{started.pk}/v.mp4"
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(b"video")
    assert lifecycle.finish_render(started.pk, "w", name)
    return VideoProject.objects.get(pk=started.pk)


# --- delete ----------------------------------------------------------------------------


def test_deleting_removes_the_project_its_events_and_its_files(
    alice_api: APIClient,
    rendered_project: VideoProject,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = rendered_project
    files = [
        media_root / project.video.name,
        preview_path(project.pk, 0),
        project_dir(project.pk) / "clips" / "scene-0-cafe.mp4",
    ]
    assert all(file.exists() for file in files)
    charges = LedgerEntry.objects.filter(project=project).count()

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.delete(url(project))

    assert response.status_code == 204
    assert response.content == b""
    assert not VideoProject.objects.filter(pk=project.pk).exists()
    assert not ProgressEvent.objects.filter(project_id=project.pk).exists()
    assert [file for file in files if file.exists()] == []
    assert not (media_root / "videos" / str(project.pk)).exists()
    assert not project_dir(project.pk).exists()
    assert alice_api.get(url(project)).status_code == 404
    assert alice_api.get(url(project, "status")).status_code == 404
    # The money that moved stays explained, without the project.
    assert LedgerEntry.objects.filter(project=None, job=1).count() == charges > 0


@pytest.mark.parametrize("claimed", [False, True], ids=["queued", "running"])
def test_deleting_is_refused_while_a_job_is_queued_or_running(
    alice_api: APIClient, rendered_project: VideoProject, media_root: Path, claimed: bool
) -> None:
    project = lifecycle.start_job(rendered_project, Step.RENDER)
    if claimed:
        lifecycle.claim(project.pk, Step.RENDER, "w")
    before = snapshot()

    response = alice_api.delete(url(project))

    assert response.status_code == 409
    assert response.json() == {
        "detail": "The video is rendering; cancel the render before deleting the project.",
        "code": "conflict",
        "status": "RENDERING",
    }
    assert snapshot() == before
    assert (media_root / project.video.name).exists()


def test_a_cancelled_job_frees_the_project_to_be_deleted(
    alice_api: APIClient, make_project: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    refused = alice_api.delete(url(project))
    lifecycle.cancel(project)

    deleted = alice_api.delete(url(project))

    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "The script is being written; cancel it before deleting the project."
    )
    assert deleted.status_code == 204
    assert alice_api.delete(url(project)).status_code == 404


def test_someone_elses_project_or_a_missing_one_cannot_be_deleted(
    charlie_api: APIClient,
    rendered_project: VideoProject,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = snapshot()

    with django_capture_on_commit_callbacks(execute=True):
        theirs = charlie_api.delete(url(rendered_project))
        missing = charlie_api.delete(f"{API}/projects/00000000-0000-4000-8000-000000000000")
        malformed = charlie_api.delete(f"{API}/projects/not-an-id")

    assert theirs.status_code == missing.status_code == malformed.status_code == 404
    assert theirs.json() == missing.json() == malformed.json()
    assert theirs.json()["code"] == "not_found"
    assert snapshot() == before
    assert (media_root / rendered_project.video.name).exists()
    assert preview_path(rendered_project.pk, 0).exists()


def test_lifecycle_delete_project_refuses_a_running_job_with_a_conflict(
    make_project: Any,
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    with pytest.raises(lifecycle.Conflict) as refused:
        lifecycle.delete_project(project)

    assert refused.value.status == Status.GENERATING_SCRIPT
    assert VideoProject.objects.filter(pk=project.pk).exists()


# --- duplicate -------------------------------------------------------------------------


def test_duplicating_copies_the_brief_and_the_script_into_a_new_draft(
    alice: User,
    alice_api: APIClient,
    rendered_project: VideoProject,
    django_capture_on_commit_callbacks: Any,
) -> None:
    balance = ledger.balance_of(alice.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(url(rendered_project, "duplicate"))

    assert response.status_code == 201
    body = response.json()
    copy = VideoProject.objects.get(pk=body["id"])
    assert response["Location"] == f"http://testserver{url(copy)}"
    assert copy.pk != rendered_project.pk
    assert copy.owner == alice
    assert body["status"] == "DRAFT"
    assert body["title"] == f"{BRIEF['title']} (copy)"
    for field in ("brief", "aspectRatio", "sceneCount", "secondsPerScene", "style"):
        assert body[field] == BRIEF[field], field
    assert body["scriptData"] == SCRIPT
    assert body["videoUrl"] is None and body["previousVideoUrl"] is None
    assert body["progress"] == 0 and body["version"] == 1
    # The saved script's previews come along; the original keeps its own.
    preview = alice_api.get(url(copy, "scenes/0/preview"))
    assert preview.status_code == 200
    assert b"".join(preview.streaming_content) == b"RIFF-preview-0"
    assert preview_path(rendered_project.pk, 0).exists()
    # Creating a project is free, and so is a copy.
    assert ledger.balance_of(alice.pk) == balance
    original = VideoProject.objects.get(pk=rendered_project.pk)
    assert original.status == Status.COMPLETED and original.version == rendered_project.version


def test_a_project_whose_job_runs_is_duplicated_as_saved(
    alice_api: APIClient, scripted_project: VideoProject
) -> None:
    running = lifecycle.start_job(scripted_project, Step.SCRIPT)  # a rewrite under way

    response = alice_api.post(url(running, "duplicate"))

    assert response.status_code == 201
    assert response.json()["status"] == "DRAFT"
    assert response.json()["scriptData"] == SCRIPT
    assert VideoProject.objects.get(pk=running.pk).status == Status.GENERATING_SCRIPT


def test_a_draft_without_a_script_is_duplicated_without_one(
    alice_api: APIClient, make_project: Any
) -> None:
    response = alice_api.post(url(make_project(title="T" * 200), "duplicate"))

    assert response.status_code == 201
    assert response.json()["scriptData"] is None
    assert response.json()["title"] == "T" * 193 + " (copy)"


def test_someone_elses_project_cannot_be_duplicated(
    charlie_api: APIClient, scripted_project: VideoProject
) -> None:
    before = snapshot()

    response = charlie_api.post(url(scripted_project, "duplicate"))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert snapshot() == before


# --- "Not now" ---------------------------------------------------------------------------


def test_a_dismissed_project_stays_out_of_unfinished_until_it_changes(
    alice: User, alice_api: APIClient, make_project: Any
) -> None:
    kept = make_project(title="Kept")
    dismissed = make_project(title="Dismissed")
    other_tab = api_client_for(alice)  # another tab or device: only the server remembers
    assert unfinished_ids(other_tab) == [str(dismissed.pk), str(kept.pk)]

    response = alice_api.post(url(dismissed, "dismiss"))

    assert response.status_code == 200
    assert response.json()["resumeDismissed"] is True
    assert unfinished_ids(alice_api) == unfinished_ids(other_tab) == [str(kept.pk)]
    status = alice_api.get(url(dismissed, "status")).json()
    assert status["resumeDismissed"] is True

    edited = alice_api.patch(url(dismissed), {"style": "bright"}, format="json")

    assert edited.json()["resumeDismissed"] is False
    assert unfinished_ids(other_tab) == [str(dismissed.pk), str(kept.pk)]


def test_a_dismissed_running_job_stays_out_while_it_progresses_and_returns_when_it_ends(
    alice_api: APIClient, make_project: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "w")
    alice_api.post(url(project, "dismiss"))
    assert unfinished_ids(alice_api) == []

    for percent in (30, 60):
        progress.write(
            project.pk,
            expect=Q(),
            fields={"progress": percent},
            events=[(EventKind.PROGRESS, {}), progress.log_event(f"at {percent} %")],
        )

    assert unfinished_ids(alice_api) == []  # its progress is not news
    assert alice_api.get(url(project, "status")).json()["resumeDismissed"] is True

    lifecycle.cancel(VideoProject.objects.get(pk=project.pk))

    assert unfinished_ids(alice_api) == [str(project.pk)]
    assert alice_api.get(url(project, "status")).json()["resumeDismissed"] is False


def test_dismissing_twice_changes_nothing_more(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()

    first = alice_api.post(url(project, "dismiss")).json()
    events = ProgressEvent.objects.count()
    second = alice_api.post(url(project, "dismiss"))

    assert second.status_code == 200
    assert second.json()["version"] == first["version"]
    assert second.json()["resumeDismissed"] is True
    assert ProgressEvent.objects.count() == events


def test_someone_elses_project_cannot_be_dismissed(
    alice_api: APIClient, charlie_api: APIClient, make_project: Any
) -> None:
    project = make_project()
    before = snapshot()

    response = charlie_api.post(url(project, "dismiss"))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert snapshot() == before
    assert unfinished_ids(alice_api) == [str(project.pk)]


# --- the status object --------------------------------------------------------------------


def test_the_status_object_carries_the_title(alice: User, make_project: Any) -> None:
    project = make_project(title="Night trains")
    client = api_client_for(alice)
    client.patch(url(project), {"title": "Sleepers to the sea"}, format="json")

    status = client.get(url(project, "status"))
    history = client.get(url(project, "history")).json()["events"]

    assert status.json()["title"] == "Sleepers to the sea"
    # What the SSE and WebSocket status events carry, as written to the log.
    assert [event["payload"]["title"] for event in history if event["kind"] == "status"] == [
        "Night trains",
        "Sleepers to the sea",
    ]
    # A poll answered 304 still reads one number, no more.
    with CaptureQueriesContext(connection) as unchanged:
        again = client.get(url(project, "status"), HTTP_IF_NONE_MATCH=status["ETag"])
    assert again.status_code == 304
    assert len(unchanged.captured_queries) == 1


# --- errors in the form's words ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        ({"sceneCount": "many"}, "sceneCount", "Scenes must be a whole number from 1 to 12."),
        ({"sceneCount": 13}, "sceneCount", "Scenes must be a whole number from 1 to 12."),
        ({"sceneCount": 2.5}, "sceneCount", "Scenes must be a whole number from 1 to 12."),
        (
            {"secondsPerScene": 1},
            "secondsPerScene",
            "Seconds per scene must be a whole number from 2 to 10.",
        ),
        ({"title": ""}, "title", "Title cannot be empty."),
        ({"title": "x" * 201}, "title", "Title must be at most 200 characters."),
        ({"brief": "too short"}, "brief", "The brief must be at least 10 characters long."),
        ({"brief": "x" * 2001}, "brief", "The brief must be at most 2,000 characters long."),
        ({"aspectRatio": "4:3"}, "aspectRatio", "Aspect ratio must be 16:9, 9:16 or 1:1."),
        ({"style": "x" * 101}, "style", "Style must be at most 100 characters."),
    ],
)
def test_a_bad_brief_is_explained_in_the_forms_words(
    alice_api: APIClient, change: dict[str, Any], field: str, detail: str
) -> None:
    response = alice_api.post(f"{API}/projects", {**BRIEF, **change}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": detail, "code": "invalid", "fields": {field: [detail]}}


def test_several_bad_fields_are_all_listed(alice_api: APIClient) -> None:
    response = alice_api.post(
        f"{API}/projects", {**BRIEF, "title": "", "sceneCount": 0}, format="json"
    )

    assert response.json()["detail"] == "Title cannot be empty. (and 1 more field to fix)"
    assert response.json()["fields"] == {
        "title": ["Title cannot be empty."],
        "sceneCount": ["Scenes must be a whole number from 1 to 12."],
    }


def test_errors_inside_the_script_are_named_by_their_path(
    alice_api: APIClient, scripted_project: VideoProject
) -> None:
    scenes = [
        {**SCRIPT["scenes"][0]},
        {**SCRIPT["scenes"][1], "narration": ""},
        {"index": 2, "narration": "Gulls.", "visual": "Harbour", "seconds": 99},
    ]
    before = snapshot()

    response = alice_api.patch(
        url(scripted_project, "script"),
        {"scriptData": {"title": "", "scenes": scenes}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Video title cannot be empty. (and 2 more fields to fix)",
        "code": "invalid",
        "fields": {
            "scriptData.title": ["Video title cannot be empty."],
            "scriptData.scenes[1].narration": ["Narration cannot be empty."],
            "scriptData.scenes[2].seconds": ["Seconds must be a number from 1 to 20."],
        },
    }
    assert snapshot() == before


@pytest.mark.parametrize(
    ("script", "fields", "detail"),
    [
        (
            {**SCRIPT, "scenes": [{**SCRIPT["scenes"][0], "seconds": "long"}]},
            {"scriptData.scenes[0].seconds": ["Seconds must be a number from 1 to 20."]},
            "Scene 1: seconds must be a number from 1 to 20.",
        ),
        (
            {**SCRIPT, "scenes": []},
            {"scriptData.scenes": ["The script needs at least one scene."]},
            "The script needs at least one scene.",
        ),
        (
            {**SCRIPT, "scenes": [{**SCRIPT["scenes"][0], "index": 3}]},
            {"scriptData.scenes": ["Scene indexes must run 0, 1, 2, … in order."]},
            "Scene indexes must run 0, 1, 2, … in order.",
        ),
        (
            {**SCRIPT, "scenes": [SCRIPT["scenes"][0], "a scene"]},
            {
                "scriptData.scenes[1]": [
                    "Each scene must have an index, narration, visual and seconds."
                ]
            },
            "Scene 2: each scene must have an index, narration, visual and seconds.",
        ),
        (
            "a script",
            {"scriptData": ["The script must have a title and a list of scenes."]},
            "The script must have a title and a list of scenes.",
        ),
    ],
)
def test_each_script_error_names_its_place(
    alice_api: APIClient,
    scripted_project: VideoProject,
    script: Any,
    fields: dict[str, list[str]],
    detail: str,
) -> None:
    response = alice_api.patch(
        url(scripted_project, "script"), {"scriptData": script}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": detail, "code": "invalid", "fields": fields}


def test_a_message_of_drfs_own_still_names_its_field(
    alice_api: APIClient, make_project: Any
) -> None:
    response = alice_api.get(url(make_project(), "log"), {"offset": "x"})

    assert response.json()["detail"] == "offset: A valid integer is required."
    assert response.json()["fields"] == {"offset": ["A valid integer is required."]}


# --- the schema ----------------------------------------------------------------------------


def test_the_openapi_schema_describes_the_new_operations(alice_api: APIClient) -> None:
    schema = alice_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    project = schema["paths"]["/api/video-creation/projects/{project_id}"]

    assert project["delete"]["operationId"] == "delete_project"
    assert set(project["delete"]["responses"]) >= {"204", "404", "409"}
    duplicate = schema["paths"]["/api/video-creation/projects/{project_id}/duplicate"]["post"]
    assert set(duplicate["responses"]) >= {"201", "404"}
    dismiss = schema["paths"]["/api/video-creation/projects/{project_id}/dismiss"]["post"]
    assert dismiss["operationId"] == "dismiss_resume"
    status = schema["components"]["schemas"]["Status"]["properties"]
    assert {"title", "resumeDismissed"} <= set(status)
