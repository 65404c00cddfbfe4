"""Nothing a person made is lost: the old video and the old script stay until the new ones are done.

A render writes its video beside the last finished one, and a script job
draws its previews into a folder of its own; the saved ones are replaced
only in the commit that saves the new ones, and stay for good when the new
job is cancelled or fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from projects import lifecycle, tasks
from projects.models import Status, Step, VideoProject
from projects.pipeline import preview_path, previews_dir, videos_dir
from tests.conftest import BRIEF, SCRIPT, api_client_for
from tests.engines import hold_file
from tests.waiting import wait_for

API = "/api/video-creation"


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


def url(project_id: Any, tail: str) -> str:
    return f"{API}/projects/{project_id}/{tail}"


def download(api: APIClient, address: str) -> bytes:
    response = api.get(address)
    assert response.status_code == 200, (address, response.status_code)
    return b"".join(response.streaming_content)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def local_engine(settings: Any) -> None:
    settings.VIDEO_ENGINE = "local"


def rendered(project: VideoProject) -> VideoProject:
    """Render the project in this process, as a worker would."""
    tasks.render_video(str(lifecycle.start_job(project, Step.RENDER).pk))
    done = reload(project)
    assert done.status == Status.COMPLETED, done.error_message
    return done


def scripted(project: VideoProject) -> VideoProject:
    """Write the project's script in this process, as a worker would."""
    tasks.generate_script(str(lifecycle.start_job(project, Step.SCRIPT).pk))
    done = reload(project)
    assert done.status == Status.DRAFT and done.script_data, done.error_message
    return done


# --- the status object --------------------------------------------------------------


@pytest.mark.django_db
def test_a_finished_video_is_current_and_named_by_its_file(
    alice_api: APIClient, scripted_project: VideoProject, local_engine: None
) -> None:
    done = rendered(scripted_project)

    status = alice_api.get(url(done.pk, "status")).json()

    assert status["videoUrl"] == f"{url(done.pk, 'video')}?v={Path(done.video.name).stem}"
    assert status["previousVideoUrl"] is None


@pytest.mark.django_db
def test_editing_the_script_after_a_render_keeps_the_video_as_the_previous_one(
    alice_api: APIClient, scripted_project: VideoProject, local_engine: None
) -> None:
    done = rendered(scripted_project)
    before = download(alice_api, alice_api.get(url(done.pk, "status")).json()["videoUrl"])
    lifecycle.start_job(done, Step.SCRIPT)
    lifecycle.cancel(done)
    edited = SCRIPT | {"title": "Night trains, edited"}

    status = alice_api.patch(url(done.pk, "script"), {"scriptData": edited}, format="json").json()

    assert status["status"] == "DRAFT"
    assert status["videoUrl"] is None
    assert status["previousVideoUrl"] == f"{url(done.pk, 'video')}?v={Path(done.video.name).stem}"
    assert download(alice_api, status["previousVideoUrl"]) == before


@pytest.mark.django_db
def test_a_project_never_rendered_has_no_previous_video(
    alice_api: APIClient, scripted_project: VideoProject
) -> None:
    status = alice_api.get(url(scripted_project.pk, "status")).json()

    assert status["videoUrl"] is None
    assert status["previousVideoUrl"] is None
    assert alice_api.get(url(scripted_project.pk, "video")).status_code == 404


# --- failures keep what was there --------------------------------------------------------


@pytest.mark.django_db
def test_a_failed_rerender_keeps_the_old_video_and_removes_its_partial_file(
    alice_api: APIClient,
    scripted_project: VideoProject,
    local_engine: None,
    settings: Any,
    media_root: Path,
) -> None:
    done = rendered(scripted_project)
    before = download(alice_api, alice_api.get(url(done.pk, "status")).json()["videoUrl"])
    settings.VIDEO_ENGINE = "tests.engines.HalfWayEngine"

    tasks.render_video(str(lifecycle.start_job(done, Step.RENDER).pk))

    status = alice_api.get(url(done.pk, "status")).json()
    assert status["status"] == "FAILED"
    assert status["error"]["message"] == "The joiner ran out of disk."
    assert status["videoUrl"] is None
    assert status["previousVideoUrl"] == f"{url(done.pk, 'video')}?v={Path(done.video.name).stem}"
    assert download(alice_api, status["previousVideoUrl"]) == before
    assert files_in(videos_dir(done.pk)) == [Path(done.video.name).name]


@pytest.mark.django_db
def test_a_render_clears_what_a_killed_render_left_but_not_the_saved_video(
    scripted_project: VideoProject, local_engine: None, media_root: Path
) -> None:
    first = rendered(scripted_project)
    leftover = videos_dir(first.pk) / "0123456789ab.mp4"
    leftover.write_bytes(b"half a video from a worker that was killed")

    second = rendered(first)

    assert files_in(videos_dir(second.pk)) == [Path(second.video.name).name]
    assert second.video.name != first.video.name


@pytest.mark.django_db
def test_a_failed_rewrite_keeps_the_saved_previews_and_removes_its_own(
    alice_api: APIClient, make_project: Any, local_engine: None, settings: Any
) -> None:
    project = scripted(make_project())
    old_preview = download(alice_api, url(project.pk, "scenes/0/preview"))
    settings.VIDEO_ENGINE = "tests.engines.HalfWayEngine"

    tasks.generate_script(str(lifecycle.start_job(project, Step.SCRIPT).pk))

    after = reload(project)
    assert after.status == Status.FAILED
    assert after.script_data == project.script_data
    assert after.preview_set == project.preview_set
    assert download(alice_api, url(project.pk, "scenes/0/preview")) == old_preview
    assert files_in(previews_dir(project.pk)) == [project.preview_set]


@pytest.mark.django_db
def test_a_project_from_before_preview_sets_serves_its_previews_until_rewritten(
    alice_api: APIClient, scripted_project: VideoProject, local_engine: None
) -> None:
    assert scripted_project.preview_set == ""
    legacy = preview_path(scripted_project.pk, 0)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"RIFF an old preview")

    served = download(alice_api, url(scripted_project.pk, "scenes/0/preview"))
    rewritten = scripted(scripted_project)

    assert served == b"RIFF an old preview"
    assert rewritten.preview_set
    assert not legacy.exists()
    new_preview = download(alice_api, url(scripted_project.pk, "scenes/0/preview"))
    assert new_preview.startswith(b"RIFF") and new_preview != served


# --- the admin ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_links_to_a_video_that_plays(
    django_user_model: Any, scripted_project: VideoProject, local_engine: None, media_root: Path
) -> None:
    done = rendered(scripted_project)
    staff = django_user_model.objects.create_superuser("root", password="root-password-1")
    browser = Client()
    browser.force_login(staff)

    page = browser.get(reverse("admin:projects_videoproject_change", args=[done.pk]))
    link = reverse("admin:projects_videoproject_video", args=[done.pk])
    video = browser.get(link)

    assert f'href="{link}"' in page.content.decode()
    assert video.status_code == 200
    assert video["Content-Type"] == "video/mp4"
    assert b"".join(video.streaming_content) == (media_root / done.video.name).read_bytes()


@pytest.mark.django_db
def test_the_admin_video_is_for_staff_who_may_view_projects(
    django_user_model: Any, scripted_project: VideoProject, local_engine: None
) -> None:
    done = rendered(scripted_project)
    clerk = django_user_model.objects.create_user("clerk", password="clerk-password-1")
    clerk.is_staff = True
    clerk.save()
    browser = Client()
    browser.force_login(clerk)

    answer = browser.get(reverse("admin:projects_videoproject_video", args=[done.pk]))

    assert answer.status_code == 403


# --- with a real worker ------------------------------------------------------------------


@pytest.fixture
def held_worker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> subprocess.Popen[bytes]:
    """A `qcluster` whose engine holds its job while `hold_file()` exists."""
    monkeypatch.setenv("VIDEO_ENGINE", "tests.engines.HeldEngine")
    monkeypatch.delenv("SCRIPT_ENGINE", raising=False)
    monkeypatch.delenv("RENDER_ENGINE", raising=False)
    return request.getfixturevalue("qcluster")


def wait_for_status(api: APIClient, project_id: Any, done: str, after_version: int) -> dict:
    """Poll the status, as a client would, until the job begun after `after_version` has ended."""

    def ended() -> dict | None:
        status = api.get(url(project_id, "status")).json()
        over = status["status"] == "FAILED" or (
            status["status"] == done and status["progress"] == 100
        )
        return status if over and status["version"] > after_version else None

    status = wait_for(ended, f"the job to end in {done}", timeout=180, every=0.2)
    assert status["status"] == done, status["error"]
    return status


def start(api: APIClient, project_id: Any, job: str) -> int:
    response = api.post(url(project_id, job))
    assert response.status_code == 202, response.json()
    return response.json()["version"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_rerender_keeps_the_old_video_until_the_new_one_is_done(
    alice: Any, held_worker: subprocess.Popen[bytes], media_root: Path
) -> None:
    api = api_client_for(alice)
    project_id = api.post(f"{API}/projects", BRIEF, format="json").json()["id"]
    api.patch(url(project_id, "script"), {"scriptData": SCRIPT}, format="json")
    first = wait_for_status(api, project_id, "COMPLETED", start(api, project_id, "render"))
    first_video = download(api, first["videoUrl"])
    first_file = files_in(videos_dir(project_id))

    # A second render, held while joining, with part of its video written.
    hold_file().touch()
    start(api, project_id, "render")
    wait_for(
        lambda: len(files_in(videos_dir(project_id))) == 2, "the second render to start its video"
    )
    running = api.get(url(project_id, "status")).json()
    assert running["status"] == "RENDERING"
    assert running["videoUrl"] is None
    assert running["previousVideoUrl"] == first["videoUrl"]
    assert download(api, running["previousVideoUrl"]) == first_video
    assert download(api, url(project_id, "video")) == first_video

    cancelled = api.post(url(project_id, "cancel")).json()
    assert cancelled["status"] == "DRAFT"
    assert cancelled["previousVideoUrl"] == first["videoUrl"]
    wait_for(
        lambda: files_in(videos_dir(project_id)) == first_file,
        "the cancelled render to remove its partial video",
    )
    assert download(api, cancelled["previousVideoUrl"]) == first_video

    # A third render, let through, replaces the video.
    hold_file().unlink()
    third = wait_for_status(api, project_id, "COMPLETED", start(api, project_id, "render"))
    assert third["videoUrl"] != first["videoUrl"]
    assert third["previousVideoUrl"] is None
    assert b"ftyp" in download(api, third["videoUrl"])[:16]
    assert len(files_in(videos_dir(project_id))) == 1
    assert files_in(videos_dir(project_id)) != first_file
    assert held_worker.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_rewrite_keeps_the_old_script_and_previews_until_the_new_script_is_saved(
    alice: Any, held_worker: subprocess.Popen[bytes], media_root: Path
) -> None:
    api = api_client_for(alice)
    project_id = api.post(f"{API}/projects", BRIEF, format="json").json()["id"]
    first = wait_for_status(api, project_id, "DRAFT", start(api, project_id, "script"))
    old_preview = download(api, url(project_id, "scenes/0/preview"))
    old_set = VideoProject.objects.get(pk=project_id).preview_set
    brief = {"brief": "Lighthouses along a stormy coast, their beams sweeping the sea at night."}
    edit = api.patch(f"{API}/projects/{project_id}", brief | {"style": "cold"}, format="json")
    assert edit.status_code == 200, edit.json()

    # A rewrite, held after drawing its first preview.
    hold_file().touch()
    start(api, project_id, "script")
    new_sets = wait_for(
        lambda: [name for name in files_in(previews_dir(project_id)) if name != old_set],
        "the rewrite to start its own previews",
    )
    new_first = preview_path(project_id, 0, new_sets[0])
    wait_for(new_first.exists, "the rewrite to draw its first preview")
    assert new_first.read_bytes() != old_preview  # the rewrite draws something else
    running = api.get(url(project_id, "status")).json()
    assert running["status"] == "GENERATING_SCRIPT"
    assert running["scriptData"] == first["scriptData"]
    assert download(api, url(project_id, "scenes/0/preview")) == old_preview

    cancelled = api.post(url(project_id, "cancel")).json()
    assert cancelled["scriptData"] == first["scriptData"]
    wait_for(
        lambda: files_in(previews_dir(project_id)) == [old_set],
        "the cancelled rewrite to remove its previews",
    )
    assert download(api, url(project_id, "scenes/0/preview")) == old_preview

    # A rewrite let through: the new script comes with its own previews.
    hold_file().unlink()
    rewritten = wait_for_status(api, project_id, "DRAFT", start(api, project_id, "script"))
    assert rewritten["scriptData"] != first["scriptData"]
    new_set = VideoProject.objects.get(pk=project_id).preview_set
    assert files_in(previews_dir(project_id)) == [new_set]
    assert new_set != old_set
    new_preview = download(api, url(project_id, "scenes/0/preview"))
    assert new_preview.startswith(b"RIFF") and new_preview != old_preview
    assert held_worker.poll() is None
