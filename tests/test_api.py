from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects import lifecycle
from projects.api import ranges
from projects.models import ProgressEvent, Status, Step, VideoProject
from tests.conftest import BRIEF, SCRIPT, AsgiServer

pytestmark = pytest.mark.django_db

API = "/api/video-creation"


def url(project: VideoProject, action: str = "") -> str:
    return f"{API}/projects/{project.pk}" + (f"/{action}" if action else "")


def snapshot() -> tuple[list[Any], int]:
    """Everything a failed request must leave as it was."""
    projects = list(VideoProject.objects.order_by("pk").values())
    return projects, ProgressEvent.objects.count()


# --- create, list, detail --------------------------------------------------------


def test_it_creates_a_draft_project(alice_api: APIClient) -> None:
    response = alice_api.post(f"{API}/projects", BRIEF, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == BRIEF["title"]
    assert body["sceneCount"] == 2
    assert body["status"] == "DRAFT"
    assert body["scriptData"] is None
    assert body["version"] == 1
    assert body["notified"] is False


def test_it_fills_in_defaults(alice_api: APIClient) -> None:
    response = alice_api.post(
        f"{API}/projects", {"title": "Short", "brief": "A brief of enough length."}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["aspectRatio"] == "16:9"
    assert response.json()["sceneCount"] == 4
    assert response.json()["secondsPerScene"] == 4


SCENES_RANGE = "Scenes must be a whole number from 1 to 12."
SECONDS_RANGE = "Seconds per scene must be a whole number from 2 to 10."


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        ({"brief": "too short"}, "brief", "The brief must be at least 10 characters long."),
        ({"brief": "x" * 2001}, "brief", "The brief must be at most 2,000 characters long."),
        ({"title": ""}, "title", "Title cannot be empty."),
        ({"aspectRatio": "4:3"}, "aspectRatio", "Aspect ratio must be 16:9, 9:16 or 1:1."),
        ({"sceneCount": 0}, "sceneCount", SCENES_RANGE),
        ({"sceneCount": 13}, "sceneCount", SCENES_RANGE),
        ({"secondsPerScene": 1}, "secondsPerScene", SECONDS_RANGE),
        ({"secondsPerScene": 11}, "secondsPerScene", SECONDS_RANGE),
        ({"sceneCount": "many"}, "sceneCount", SCENES_RANGE),
        ({"status": "COMPLETED"}, "status", "status: This field is not accepted here."),
    ],
)
def test_it_refuses_a_bad_brief_and_writes_nothing(
    alice_api: APIClient, change: dict[str, Any], field: str, detail: str
) -> None:
    before = snapshot()

    response = alice_api.post(f"{API}/projects", {**BRIEF, **change}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert list(body["fields"]) == [field]
    assert body["detail"] == detail
    assert snapshot() == before


def test_it_refuses_malformed_json(alice_api: APIClient) -> None:
    response = alice_api.post(f"{API}/projects", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert VideoProject.objects.count() == 0


def test_it_requires_authentication() -> None:
    response = APIClient().get(f"{API}/projects")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.json()["detail"]


def test_it_accepts_a_bearer_token(alice_api: APIClient) -> None:
    token = alice_api._credentials["HTTP_AUTHORIZATION"].split()[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    assert client.get(f"{API}/projects").status_code == 200


def test_it_refuses_a_wrong_token() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(f"{API}/projects")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_it_lists_own_projects_newest_first_in_pages(
    alice_api: APIClient, make_project: Any, charlie: Any
) -> None:
    first = make_project(title="First")
    second = make_project(title="Second")
    make_project(owner=charlie, title="Charlie's")

    body = alice_api.get(f"{API}/projects").json()

    assert body["count"] == 2
    assert [item["id"] for item in body["results"]] == [str(second.pk), str(first.pk)]
    one_page = alice_api.get(f"{API}/projects?pageSize=1").json()
    assert len(one_page["results"]) == 1
    assert one_page["next"]


def test_an_idempotency_key_creates_one_project(alice_api: APIClient) -> None:
    first = alice_api.post(f"{API}/projects", BRIEF, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = alice_api.post(f"{API}/projects", BRIEF, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert VideoProject.objects.count() == 1


def test_an_idempotency_key_reused_with_another_body_is_refused(alice_api: APIClient) -> None:
    alice_api.post(f"{API}/projects", BRIEF, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    response = alice_api.post(
        f"{API}/projects", {**BRIEF, "title": "Other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert VideoProject.objects.count() == 1


# --- ownership --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("get", "", None),
        ("patch", "", {"title": "Mine now"}),
        ("post", "script", None),
        ("patch", "script", {"scriptData": SCRIPT}),
        ("post", "render", None),
        ("post", "cancel", None),
        ("get", "status", None),
        ("get", "log", None),
        ("post", "notified", None),
        ("get", "video", None),
        ("get", "scenes/0/preview", None),
    ],
)
def test_it_hides_another_users_project(
    charlie_api: APIClient, scripted_project: VideoProject, method: str, action: str, body: Any
) -> None:
    before = snapshot()

    theirs = getattr(charlie_api, method)(url(scripted_project, action), body, format="json")
    missing = getattr(charlie_api, method)(
        f"{API}/projects/{uuid.uuid4()}" + (f"/{action}" if action else ""), body, format="json"
    )

    assert theirs.status_code == 404
    assert theirs.json() == missing.json()
    assert theirs.json()["code"] == "not_found"
    assert snapshot() == before


def test_unfinished_lists_only_own_projects(charlie_api: APIClient, make_project: Any) -> None:
    make_project()

    assert charlie_api.get(f"{API}/unfinished").json() == []


# --- editing -----------------------------------------------------------------------


def test_it_edits_the_brief_of_a_draft(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()

    response = alice_api.patch(url(project), {"title": "Renamed", "sceneCount": 3}, format="json")

    assert response.status_code == 200
    assert response.json()["title"] == "Renamed"
    assert response.json()["sceneCount"] == 3
    assert response.json()["version"] == project.version + 1


def test_it_refuses_a_bad_edit_and_changes_nothing(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()
    before = snapshot()

    response = alice_api.patch(url(project), {"sceneCount": 99}, format="json")

    assert response.status_code == 400
    assert "sceneCount" in response.json()["fields"]
    assert snapshot() == before


def test_it_refuses_to_edit_the_brief_while_a_job_runs(
    alice_api: APIClient, make_project: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    response = alice_api.patch(url(project), {"title": "Too late"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert response.json()["status"] == "GENERATING_SCRIPT"
    assert VideoProject.objects.get(pk=project.pk).title == BRIEF["title"]


def test_it_edits_the_script_of_a_draft(alice_api: APIClient, scripted_project: Any) -> None:
    edited = {**SCRIPT, "scenes": [{**SCRIPT["scenes"][0], "narration": "Edited."}]}

    response = alice_api.patch(
        url(scripted_project, "script"), {"scriptData": edited}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["scriptData"]["scenes"][0]["narration"] == "Edited."
    assert len(response.json()["scriptData"]["scenes"]) == 1


@pytest.mark.parametrize(
    ("script", "field"),
    [
        ({"title": "No scenes", "scenes": []}, "scriptData.scenes"),
        ({"title": "Gap", "scenes": [{**SCRIPT["scenes"][0], "index": 3}]}, "scriptData.scenes"),
        (
            {"title": "Long", "scenes": [{**SCRIPT["scenes"][0], "seconds": 99}]},
            "scriptData.scenes[0].seconds",
        ),
        (
            {"title": "Missing", "scenes": [{"index": 0, "narration": "No visual", "seconds": 2}]},
            "scriptData.scenes[0].visual",
        ),
        ({"scenes": SCRIPT["scenes"]}, "scriptData.title"),
    ],
)
def test_it_refuses_a_bad_script_and_keeps_the_old_one(
    alice_api: APIClient, scripted_project: Any, script: dict[str, Any], field: str
) -> None:
    before = snapshot()

    response = alice_api.patch(
        url(scripted_project, "script"), {"scriptData": script}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["fields"]) == [field]
    assert snapshot() == before


# --- jobs ---------------------------------------------------------------------------


def test_starting_the_script_queues_a_job(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()

    response = alice_api.post(url(project, "script"))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "GENERATING_SCRIPT"
    assert body["progress"] == 0
    assert body["progressMessage"] == "Queued"
    assert body["currentStep"] == "script"
    assert body["attempt"] == 1
    assert body["startedAt"] is not None


def test_a_second_start_is_refused_with_the_current_status(
    alice_api: APIClient, make_project: Any
) -> None:
    project = make_project()
    alice_api.post(url(project, "script"))

    again = alice_api.post(url(project, "script"))
    render = alice_api.post(url(project, "render"))

    assert again.status_code == render.status_code == 409
    assert again.json()["status"] == "GENERATING_SCRIPT"
    assert again.json()["code"] == "conflict"


def test_rendering_needs_a_script(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()

    response = alice_api.post(url(project, "render"))

    assert response.status_code == 409
    assert "script" in response.json()["detail"]
    assert VideoProject.objects.get(pk=project.pk).status == Status.DRAFT


def test_cancel_returns_the_project_to_draft_with_its_script(
    alice_api: APIClient, scripted_project: Any
) -> None:
    alice_api.post(url(scripted_project, "render"))

    response = alice_api.post(url(scripted_project, "cancel"))

    assert response.status_code == 202
    assert response.json()["status"] == "DRAFT"
    assert response.json()["scriptData"] == SCRIPT
    assert alice_api.post(url(scripted_project, "cancel")).status_code == 409


# --- status, ETag ---------------------------------------------------------------------


def test_status_answers_304_while_nothing_changes(alice_api: APIClient, make_project: Any) -> None:
    project = make_project()
    first = alice_api.get(url(project, "status"))
    etag = first["ETag"]

    unchanged = alice_api.get(url(project, "status"), HTTP_IF_NONE_MATCH=etag)
    alice_api.patch(url(project), {"title": "Changed"}, format="json")
    changed = alice_api.get(url(project, "status"), HTTP_IF_NONE_MATCH=etag)

    assert first.status_code == 200
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_status_object_has_every_field_of_the_contract(
    alice_api: APIClient, make_project: Any
) -> None:
    body = alice_api.get(url(make_project(), "status")).json()

    assert set(body) == {
        "id", "status", "progress", "progressMessage", "currentStep", "completedSteps",
        "totalSteps", "scriptData", "videoUrl", "previousVideoUrl", "error", "attempt",
        "version", "createdAt", "updatedAt", "startedAt", "completedAt", "notified",
        "prices", "charged", "queuePosition", "estimatedSecondsRemaining", "title",
        "resumeDismissed",
    }  # fmt: skip


# --- unfinished, notified --------------------------------------------------------------


def test_unfinished_lists_running_draft_and_untold_projects(
    alice_api: APIClient, make_project: Any
) -> None:
    draft = make_project(title="Draft")
    running = lifecycle.start_job(make_project(title="Running"), Step.SCRIPT)
    told = lifecycle.start_job(make_project(title="Told"), Step.SCRIPT)
    lifecycle.claim(told.pk, Step.SCRIPT, "w")
    lifecycle.fail(told.pk, "w", "boom", "It broke.")
    lifecycle.mark_notified(told)
    untold = lifecycle.start_job(make_project(title="Untold"), Step.SCRIPT)
    lifecycle.claim(untold.pk, Step.SCRIPT, "w")
    lifecycle.fail(untold.pk, "w", "boom", "It broke.")

    titles = [item["id"] for item in alice_api.get(f"{API}/unfinished").json()]

    assert titles == [str(untold.pk), str(running.pk), str(draft.pk)]


def test_notified_is_idempotent_and_refused_while_running(
    alice_api: APIClient, make_project: Any
) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    assert alice_api.post(url(project, "notified")).status_code == 409

    lifecycle.claim(project.pk, Step.SCRIPT, "w")
    lifecycle.finish_script(project.pk, "w", SCRIPT)
    first = alice_api.post(url(project, "notified"))
    second = alice_api.post(url(project, "notified"))

    assert first.status_code == second.status_code == 200
    assert first.json()["notified"] is True
    assert second.json()["version"] == first.json()["version"]


def test_starting_a_job_resets_notified(alice_api: APIClient, scripted_project: Any) -> None:
    lifecycle.mark_notified(scripted_project)

    body = alice_api.post(url(scripted_project, "render")).json()

    assert body["notified"] is False
    assert body["completedAt"] is None


# --- video -------------------------------------------------------------------------------


@pytest.fixture
def completed_project(scripted_project: VideoProject, media_root: Path) -> VideoProject:
    started = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(started.pk, Step.RENDER, "w")
    name = f"videos/{started.pk}/v.mp4"
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(bytes(range(256)) * 4)
    lifecycle.finish_render(started.pk, "w", name)
    return VideoProject.objects.get(pk=started.pk)


def test_the_video_is_served_whole_and_by_range(
    alice_api: APIClient, completed_project: VideoProject
) -> None:
    whole = alice_api.get(url(completed_project, "video"))
    part = alice_api.get(url(completed_project, "video"), HTTP_RANGE="bytes=10-19")
    tail = alice_api.get(url(completed_project, "video"), HTTP_RANGE="bytes=-4")
    outside = alice_api.get(url(completed_project, "video"), HTTP_RANGE="bytes=5000-")

    assert whole.status_code == 200
    assert whole["Content-Type"] == "video/mp4"
    assert whole["Accept-Ranges"] == "bytes"
    assert b"".join(whole.streaming_content) == bytes(range(256)) * 4
    assert part.status_code == 206
    assert part["Content-Range"] == "bytes 10-19/1024"
    assert b"".join(part.streaming_content) == bytes(range(10, 20))
    assert b"".join(tail.streaming_content) == bytes(range(252, 256))
    assert outside.status_code == 416
    assert outside["Content-Range"] == "bytes */1024"


def test_there_is_no_video_before_rendering(alice_api: APIClient, scripted_project: Any) -> None:
    response = alice_api.get(url(scripted_project, "video"))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- schema, docs, errors ------------------------------------------------------------------


def test_the_openapi_schema_describes_every_endpoint(alice_api: APIClient) -> None:
    response = alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path, methods in {
        "/api/video-creation/projects": {"get", "post"},
        "/api/video-creation/projects/{project_id}": {"get", "patch"},
        "/api/video-creation/projects/{project_id}/script": {"post", "patch"},
        "/api/video-creation/projects/{project_id}/render": {"post"},
        "/api/video-creation/projects/{project_id}/cancel": {"post"},
        "/api/video-creation/projects/{project_id}/status": {"get"},
        "/api/video-creation/projects/{project_id}/events": {"get"},
        "/api/video-creation/projects/{project_id}/notified": {"post"},
        "/api/video-creation/projects/{project_id}/video": {"get"},
        "/api/video-creation/projects/{project_id}/log": {"get"},
        "/api/video-creation/projects/{project_id}/history": {"get", "delete"},
        "/api/video-creation/stats": {"get"},
        "/api/video-creation/active": {"get"},
        "/api/video-creation/unfinished": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    status = schema["components"]["schemas"]["Status"]["properties"]
    assert "progressMessage" in status
    assert "409" in paths["/api/video-creation/projects/{project_id}/script"]["post"]["responses"]


def test_the_docs_page_uses_local_assets_only(alice_api: APIClient) -> None:
    response = alice_api.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    # Every script, stylesheet and image comes from this server: no
    # src/href names another host (a CDN), so the page works offline.
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
    assert assets, "the page loads its assets"
    off_site = [url for url in assets if re.match(r"(?:[a-z]+:)?//", url, re.I)]
    assert off_site == []


def test_the_browsable_api_renders(alice: Any) -> None:
    client = APIClient()
    client.force_login(alice)

    response = client.get(f"{API}/projects", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"<html" in response.content


def test_an_unknown_api_address_answers_json(alice_api: APIClient) -> None:
    response = alice_api.get(f"{API}/nothing-here")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- log ------------------------------------------------------------------------------------


def test_the_log_is_read_incrementally(alice_api: APIClient, make_project: Any) -> None:
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    lifecycle.next_attempt(project.pk, "worker-1", 2, "Trying again")

    first = alice_api.get(url(project, "log")).json()
    rest = alice_api.get(url(project, "log") + f"?offset={first['nextOffset'] - 1}").json()
    nothing_new = alice_api.get(url(project, "log") + f"?offset={first['nextOffset']}").json()

    assert first == {"lines": ["Picked up by a worker", "Trying again"], "nextOffset": 2}
    assert rest == {"lines": ["Trying again"], "nextOffset": 2}
    assert nothing_new == {"lines": [], "nextOffset": 2}


def test_the_log_refuses_a_bad_offset(alice_api: APIClient, make_project: Any) -> None:
    response = alice_api.get(url(make_project(), "log") + "?offset=-1")

    assert response.status_code == 400
    assert "offset" in response.json()["fields"]


@pytest.mark.django_db(transaction=True)
def test_the_web_server_streams_a_video_whole_and_by_range_in_chunks(
    alice: Any, scripted_project: VideoProject, media_root: Path, asgi_server: AsgiServer
) -> None:
    """Under uvicorn the file is read a chunk at a time (bench/download.py measures the memory)."""
    started = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(started.pk, Step.RENDER, "w")
    name = f"videos/{started.pk}/big.mp4"
    content = os.urandom(3 * ranges.ASYNC_CHUNK + 12345)  # more than one chunk, and a rest
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(content)
    lifecycle.finish_render(started.pk, "w", name)
    token, _ = Token.objects.get_or_create(user=alice)
    address = f"{asgi_server.url}{url(started, 'video')}"
    headers = {"Authorization": f"Token {token.key}"}

    whole = httpx.get(address, headers=headers, timeout=30)
    start = ranges.ASYNC_CHUNK - 7
    part = httpx.get(address, headers=headers | {"Range": f"bytes={start}-"}, timeout=30)

    assert whole.status_code == 200
    assert whole.headers["Content-Length"] == str(len(content))
    assert whole.headers["Content-Disposition"].startswith("inline; filename=")
    assert whole.content == content
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes {start}-{len(content) - 1}/{len(content)}"
    assert part.content == content[start:]
