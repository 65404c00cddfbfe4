"""MEDIA_STORAGE=s3: videos and previews live in a bucket every machine reaches.

Against a real S3-compatible server (moto's server mode, started here as its
own process) and a real worker process: the results go to the bucket, the
worker's MEDIA_ROOT keeps no result, a download is a redirect to a signed
address that serves the bytes with Range, and replaced results are deleted
from the bucket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from projects import lifecycle, tasks
from projects.engines.base import ProjectSpec, StageProgress
from projects.engines.local import LocalEngine
from projects.models import Status, Step, VideoProject
from projects.pipeline import outgoing_dir
from tests.conftest import BRIEF, SCRIPT, api_client_for
from tests.engines import hold_file
from tests.media import probe
from tests.waiting import wait_for
from videocreation.settings import s3_media_storage

API = "/api/video-creation"
KEYS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m moto.server`: an S3-compatible server on a port of its own."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.poll() is not None or _answers(url), "moto's server to answer")
        assert server.poll() is None, f"moto's server exited with {server.returncode}"
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


@dataclass
class Bucket:
    """The test's own bucket, seen as an operator would with the AWS SDK."""

    name: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture
def bucket(s3_server: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket, and MEDIA_STORAGE=s3 on it for this process and the ones it starts."""
    name = f"media-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", **_keys())
    client.create_bucket(Bucket=name)
    environment = {
        "MEDIA_STORAGE": "s3",
        "AWS_STORAGE_BUCKET_NAME": name,
        "AWS_S3_ENDPOINT_URL": s3_server,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_QUERYSTRING_EXPIRE": "300",
        **KEYS,
    }
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    # The same function the settings module calls at start, on this environment.
    settings.STORAGES = {**settings.STORAGES, "default": s3_media_storage()}
    return Bucket(name, client)


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def s3_worker(
    bucket: Bucket, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> subprocess.Popen[bytes]:
    """`manage.py worker` with MEDIA_STORAGE=s3 in its environment, the local engine."""
    monkeypatch.setenv("VIDEO_ENGINE", "local")
    monkeypatch.delenv("SCRIPT_ENGINE", raising=False)
    monkeypatch.delenv("RENDER_ENGINE", raising=False)
    return request.getfixturevalue("qcluster")


@pytest.fixture
def held_s3_worker(
    bucket: Bucket, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> subprocess.Popen[bytes]:
    """The same, with an engine that holds a render while joining as long as `hold_file()` is."""
    monkeypatch.setenv("VIDEO_ENGINE", "tests.engines.HeldEngine")
    monkeypatch.delenv("SCRIPT_ENGINE", raising=False)
    monkeypatch.delenv("RENDER_ENGINE", raising=False)
    return request.getfixturevalue("qcluster")


def url(project_id: Any, tail: str) -> str:
    return f"{API}/projects/{project_id}/{tail}"


def start(api: APIClient, project_id: Any, job: str) -> int:
    response = api.post(url(project_id, job))
    assert response.status_code == 202, response.json()
    return response.json()["version"]


def wait_for_end(api: APIClient, project_id: Any, done: str, after_version: int) -> dict:
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


def follow(answer: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """What a browser or `curl -L` does with a 302: ask the signed address, without our token."""
    assert answer.status_code == 302, answer.status_code
    # The signed address expires: no cache may keep the redirect.
    assert {"private", "no-store"} <= {part.strip() for part in answer["Cache-Control"].split(",")}
    return httpx.get(answer["Location"], headers=headers or {}, timeout=30)


def files_under(folder: Path) -> list[str]:
    found = [path for path in folder.rglob("*") if path.is_file() and path != hold_file()]
    return sorted(str(path.relative_to(folder)) for path in found)


# --- the settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"MEDIA_STORAGE": "s3"}, "MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME"),
        ({"MEDIA_STORAGE": "ftp"}, "MEDIA_STORAGE must be local or s3, not 'ftp'."),
        (
            {
                "MEDIA_STORAGE": "s3",
                "AWS_STORAGE_BUCKET_NAME": "media",
                "AWS_S3_ENDPOINT_URL": "s3",
            },
            "AWS_S3_ENDPOINT_URL must be an http(s):// address, not 's3'.",
        ),
    ],
)
def test_a_process_refuses_to_start_on_a_media_storage_it_cannot_use(
    environment: dict[str, str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDIA_STORAGE"))}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=env | environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checked.returncode != 0
    assert "ImproperlyConfigured" in checked.stderr
    assert message in checked.stderr


# --- with a real worker ----------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_script_job_puts_its_previews_in_the_bucket_and_a_rewrite_replaces_them(
    alice: Any, s3_worker: subprocess.Popen[bytes], bucket: Bucket, media_root: Path
) -> None:
    api = api_client_for(alice)
    project_id = api.post(f"{API}/projects", BRIEF, format="json").json()["id"]

    wait_for_end(api, project_id, "DRAFT", start(api, project_id, "script"))

    first_set = VideoProject.objects.get(pk=project_id).preview_set
    previews = f"projects/{project_id}/previews/"
    assert bucket.keys(previews) == [
        f"{previews}{first_set}/scene-{index}.webp" for index in range(BRIEF["sceneCount"])
    ]
    served = api.get(url(project_id, "scenes/1/preview"))
    assert served.status_code == 200
    assert served["Content-Type"] == "image/webp"
    preview = b"".join(served.streaming_content)
    assert preview.startswith(b"RIFF") and preview[8:12] == b"WEBP"
    assert preview == bucket.read(f"{previews}{first_set}/scene-1.webp")
    assert api.get(url(project_id, f"scenes/{BRIEF['sceneCount']}/preview")).status_code == 404
    assert files_under(media_root) == []

    brief = {"brief": "Lighthouses along a stormy coast, their beams sweeping the sea at night."}
    assert api.patch(f"{API}/projects/{project_id}", brief, format="json").status_code == 200
    wait_for_end(api, project_id, "DRAFT", start(api, project_id, "script"))

    second_set = VideoProject.objects.get(pk=project_id).preview_set
    assert second_set != first_set
    # The worker removes the old set only after the commit that switched to the
    # new one, so a moment after the job reads as done.
    wanted = [f"{previews}{second_set}/scene-{index}.webp" for index in range(BRIEF["sceneCount"])]
    wait_for(lambda: bucket.keys(previews) == wanted, "the first set's previews to go", 10)
    rewritten = b"".join(api.get(url(project_id, "scenes/1/preview")).streaming_content)
    assert rewritten == bucket.read(f"{previews}{second_set}/scene-1.webp") != preview
    assert files_under(media_root) == []
    assert s3_worker.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_render_stores_the_video_in_the_bucket_and_the_download_redirects_to_it(
    alice: Any,
    django_user_model: Any,
    s3_worker: subprocess.Popen[bytes],
    bucket: Bucket,
    media_root: Path,
    tmp_path: Path,
) -> None:
    api = api_client_for(alice)
    project_id = api.post(f"{API}/projects", BRIEF, format="json").json()["id"]
    api.patch(url(project_id, "script"), {"scriptData": SCRIPT}, format="json")

    done = wait_for_end(api, project_id, "COMPLETED", start(api, project_id, "render"))

    video = VideoProject.objects.get(pk=project_id).video.name
    assert bucket.keys("videos/") == [video]
    assert video.startswith(f"videos/{project_id}/")
    stored = bucket.read(video)
    # The worker's disk keeps nothing: no video, no preview, no clip.
    assert files_under(media_root) == []

    whole = follow(api.get(done["videoUrl"]))
    assert whole.status_code == 200
    assert whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Content-Disposition"] == 'inline; filename="night-trains-of-europe.mp4"'
    assert whole.content == stored
    (tmp_path / "video.mp4").write_bytes(whole.content)
    assert probe(tmp_path / "video.mp4").seconds == pytest.approx(4, abs=0.3)

    wanted = "bytes=100-1123"  # a <video> seeking: the same Range, again at the new address
    part = follow(api.get(url(project_id, "video"), HTTP_RANGE=wanted), {"Range": wanted})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(stored)}"
    assert part.content == stored[100:1124]

    # The signed address is for whoever asked: it names the bucket's object, not our token.
    location = urlsplit(api.get(url(project_id, "video"))["Location"])
    assert location.path == f"/{bucket.name}/{video}"
    assert "X-Amz-Signature=" in location.query and "X-Amz-Expires=300" in location.query

    staff = django_user_model.objects.create_superuser("root", password="root-password-1")
    browser = Client()
    browser.force_login(staff)
    admin_video = browser.get(reverse("admin:projects_videoproject_video", args=[project_id]))
    assert follow(admin_video).content == stored

    # An object gone from the bucket is the same clear 404 as a file gone from the disk.
    bucket.client.delete_object(Bucket=bucket.name, Key=video)
    missing = api.get(url(project_id, "video"))
    assert missing.status_code == 404
    assert missing.json()["detail"] == "The video file is missing; render the project again."
    assert s3_worker.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_rerender_keeps_the_stored_video_until_the_new_one_replaces_it(
    alice: Any, held_s3_worker: subprocess.Popen[bytes], bucket: Bucket, media_root: Path
) -> None:
    api = api_client_for(alice)
    project_id = api.post(f"{API}/projects", BRIEF, format="json").json()["id"]
    api.patch(url(project_id, "script"), {"scriptData": SCRIPT}, format="json")
    first = wait_for_end(api, project_id, "COMPLETED", start(api, project_id, "render"))
    first_video = VideoProject.objects.get(pk=project_id).video.name
    first_bytes = bucket.read(first_video)

    # A second render, held while joining, its video half written on the worker's disk.
    hold_file().touch()
    start(api, project_id, "render")
    scratch = outgoing_dir(project_id)
    wait_for(lambda: files_under(scratch), "the second render to start its video")
    running = api.get(url(project_id, "status")).json()
    assert running["status"] == "RENDERING"
    assert running["previousVideoUrl"] == first["videoUrl"]
    assert follow(api.get(running["previousVideoUrl"])).content == first_bytes
    assert bucket.keys("videos/") == [first_video]

    cancelled = api.post(url(project_id, "cancel")).json()
    assert cancelled["status"] == "DRAFT"
    wait_for(lambda: not files_under(scratch), "the cancelled render to remove its partial video")
    assert bucket.keys("videos/") == [first_video]
    assert follow(api.get(cancelled["previousVideoUrl"])).content == first_bytes

    # A third render, let through, replaces the video in the bucket.
    hold_file().unlink()
    third = wait_for_end(api, project_id, "COMPLETED", start(api, project_id, "render"))
    third_video = VideoProject.objects.get(pk=project_id).video.name
    assert third["videoUrl"] != first["videoUrl"]
    assert bucket.keys("videos/") == [third_video]
    assert follow(api.get(third["videoUrl"])).content == bucket.read(third_video)
    assert files_under(media_root) == []
    assert held_s3_worker.poll() is None


# --- in this process ----------------------------------------------------------------------


class BucketLostWhileJoining(LocalEngine):
    """Joins the video, then the bucket is gone (deleted, or its service down) before the upload."""

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        super().compose(spec, clip_paths, video_path, progress)
        options = django_settings.STORAGES["default"]["OPTIONS"]
        client = boto3.client(
            "s3", endpoint_url=options["endpoint_url"], region_name="us-east-1", **_keys()
        )
        client.delete_bucket(Bucket=options["bucket_name"])


@pytest.mark.django_db
def test_a_video_the_storage_does_not_take_fails_the_render_with_a_sentence(
    scripted_project: VideoProject, bucket: Bucket, settings: Any, media_root: Path
) -> None:
    settings.VIDEO_ENGINE = f"{__name__}.BucketLostWhileJoining"
    settings.JOB_MAX_ATTEMPTS = 1

    tasks.render_video(str(lifecycle.start_job(scripted_project, Step.RENDER).pk))

    failed = VideoProject.objects.get(pk=scripted_project.pk)
    assert failed.status == Status.FAILED
    assert failed.error_code == "storage_unavailable"
    assert failed.error_message == (
        "The media storage did not take the video (NoSuchBucket); check MEDIA_STORAGE and "
        "the AWS_* settings (gave up after 1 attempts)"
    )
    assert not failed.video
    # The clips stay as checkpoints for the next try; the joined video is not kept.
    left = files_under(media_root)
    assert len(left) == len(SCRIPT["scenes"])
    assert all(name.startswith(f"projects/{failed.pk}/clips/") for name in left), left


@pytest.mark.django_db
def test_an_unreachable_storage_fails_the_render_before_any_scene_is_drawn(
    scripted_project: VideoProject, bucket: Bucket, settings: Any, media_root: Path
) -> None:
    settings.VIDEO_ENGINE = "local"
    settings.JOB_RETRY_BACKOFF_SECONDS = 0.01
    bucket.client.delete_bucket(Bucket=bucket.name)

    tasks.render_video(str(lifecycle.start_job(scripted_project, Step.RENDER).pk))

    failed = VideoProject.objects.get(pk=scripted_project.pk)
    assert failed.status == Status.FAILED
    assert failed.error_code == "storage_unavailable"
    assert failed.error_message == (
        "The media storage could not be read (NoSuchBucket); check MEDIA_STORAGE and "
        f"the AWS_* settings (gave up after {settings.JOB_MAX_ATTEMPTS} attempts)"
    )
    assert files_under(media_root) == []
