"""`/v1/chat/completions` and `/v1/models`, called by the official `openai` package.

The client points its `base_url` at a live uvicorn process; a real worker
writes the script and renders the video. What an OpenAI tool sees is checked
against the project's own event log: every rise of the progress is a chunk,
in order, ending in the video's URL.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from projects import lifecycle
from projects.models import Status, VideoProject
from projects.openai_api import overall_progress, read_order
from tests.conftest import AsgiServer, api_client_for
from tests.media import probe
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

BRIEF = (
    "Night trains crossing Europe. Sleepers leave Vienna at dusk; "
    "by morning the passengers wake up by the sea."
)
SMALL = {"scene_count": 2, "seconds_per_scene": 2}
LINK = r"^\[Night trains crossing Europe\]\((http://127\.0\.0\.1:\d+/api/video-creation/projects/[0-9a-f-]+/video\?v=[0-9a-f]+)\)$"


def _client(server: AsgiServer, user: User, **options: Any) -> openai.OpenAI:
    token, _ = Token.objects.get_or_create(user=user)
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=token.key, max_retries=0, timeout=120, **options
    )


def _ask(client: openai.OpenAI, *, stream: bool, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="videocreation-16x9",
        messages=[
            {"role": "system", "content": "You make short films."},
            {"role": "user", "content": BRIEF},
        ],
        stream=stream,
        extra_body={**SMALL, **extra.pop("extra_body", {})},
        **extra,
    )


def _download(server: AsgiServer, user: User, url: str, to: Path) -> Path:
    token, _ = Token.objects.get_or_create(user=user)
    answer = httpx.get(url, headers={"Authorization": f"Bearer {token.key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    to.write_bytes(answer.content)
    return to


def _rises(project: VideoProject) -> list[float]:
    """The progress values an OpenAI client must see, read from the project's own log."""
    state: dict[str, Any] = {}
    seen: list[float] = []
    for event in project.events.order_by("seq"):
        if event.kind in ("status", "progress"):
            state |= event.payload
            percent, _ = overall_progress(state)
            if percent is not None and (not seen or percent > seen[-1]):
                seen.append(percent)
    return seen


# --- a whole video through the official client --------------------------------


@pytest.mark.worker
def test_the_openai_client_streams_a_whole_video_with_rising_progress(
    alice: User, qcluster: subprocess.Popen[bytes], asgi_server: AsgiServer, tmp_path: Path
) -> None:
    stream = _ask(_client(asgi_server, alice), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    project = VideoProject.objects.get(pk=chunks[0].project_id)
    assert project.status == Status.COMPLETED
    assert chunks[0].id == f"chatcmpl-{project.pk.hex}"
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert {chunk.model for chunk in chunks} == {"videocreation-16x9"}

    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    progress = [delta for delta in deltas if delta.model_extra.get("progress") is not None]
    values = [delta.model_extra["progress"] for delta in progress]
    assert values[0] == 0 and values[-1] == 1
    assert all(a < b for a, b in pairwise(values)), values
    # Every rise the project's log holds reached the client, none made up.
    assert values == _rises(project)
    assert len(values) >= 6, values
    for delta, value in zip(progress, values, strict=True):
        stage = delta.model_extra["reasoning_content"]
        assert stage.startswith(f"**Video Generation Progress**: {math.floor(value * 100)}% (")
        assert stage.endswith(")\n")
    stages = {delta.model_extra["reasoning_content"].split("(")[1] for delta in progress}
    assert {"writing the script)\n", "rendering)\n", "done)\n"} <= stages

    contents = [delta.content for delta in deltas if delta.content]
    assert len(contents) == 1
    url = re.match(LINK, contents[0]).group(1)
    assert url.endswith(project.video_url)
    assert deltas.index(next(d for d in deltas if d.content)) > deltas.index(progress[-1])
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 0

    video = probe(_download(asgi_server, alice, url, tmp_path / "video.mp4"))
    assert video.seconds == pytest.approx(4, abs=0.3)
    assert (video.width, video.height) == (1280, 720)
    # An ordinary project: the creator page lists it until its owner has been told.
    listed = api_client_for(alice).get("/api/video-creation/unfinished").json()
    assert [item["id"] for item in listed] == [str(project.pk)]


@pytest.mark.worker
def test_without_streaming_one_completion_holds_the_video_url(
    alice: User, qcluster: subprocess.Popen[bytes], asgi_server: AsgiServer, tmp_path: Path
) -> None:
    completion = _client(asgi_server, alice).chat.completions.create(
        model="videocreation-9x16",
        messages=[{"role": "user", "content": [{"type": "text", "text": BRIEF}]}],
        extra_body=SMALL,
    )

    project = VideoProject.objects.get(pk=completion.model_extra["project_id"])
    assert project.status == Status.COMPLETED
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content
    url = re.match(LINK, content).group(1)
    assert url.endswith(project.video_url)
    video = probe(_download(asgi_server, alice, url, tmp_path / "video.mp4"))
    assert (video.width, video.height) == (720, 1280)


@pytest.fixture
def picky_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's engine refuses every brief (set before `qcluster` starts it)."""
    monkeypatch.setenv("SCRIPT_ENGINE", "tests.engines.PickyEngine")


@pytest.mark.worker
def test_a_job_that_fails_ends_the_stream_with_an_openai_error(
    alice: User, picky_engine: None, qcluster: subprocess.Popen[bytes], asgi_server: AsgiServer
) -> None:
    client = _client(asgi_server, alice)

    with pytest.raises(openai.APIError, match="nothing that can be filmed"):
        list(_ask(client, stream=True))
    with pytest.raises(openai.BadRequestError, match="nothing that can be filmed") as refused:
        _ask(client, stream=False)
    assert refused.value.code == "invalid_input"
    assert set(VideoProject.objects.values_list("status", flat=True)) == {Status.FAILED}


@pytest.mark.worker
def test_a_cancel_from_the_creator_page_ends_the_stream(
    alice: User, qcluster: subprocess.Popen[bytes], asgi_server: AsgiServer
) -> None:
    client = _client(asgi_server, alice)
    stream = _ask(client, stream=True, extra_body={"scene_count": 6, "seconds_per_scene": 4})
    seen: list[Any] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            seen.extend(stream)
        except openai.APIError as error:
            failure.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    project = wait_for(lambda: VideoProject.objects.first(), "the project to exist")
    wait_for(lambda: len(seen) > 3, "some progress chunks")
    staff = User.objects.create_user("sam", is_staff=True)
    active = api_client_for(staff).get("/api/video-creation/active").json()
    assert active["byProject"] == [
        {"project": str(project.pk), "sse": 0, "websocket": 0, "openai": 1}
    ]
    lifecycle.cancel(project)
    reader.join(timeout=30)
    assert not reader.is_alive(), "the stream did not end after the cancel"
    assert "cancelled" in str(failure[0])
    assert not [chunk for chunk in seen if chunk.choices and chunk.choices[0].delta.content]


@pytest.mark.worker
def test_the_same_idempotency_key_returns_the_first_video(
    alice: User, qcluster: subprocess.Popen[bytes], asgi_server: AsgiServer
) -> None:
    client = _client(asgi_server, alice)
    first = _ask(client, stream=False, extra_headers={"Idempotency-Key": "film-1"})
    again = _ask(client, stream=False, extra_headers={"Idempotency-Key": "film-1"})

    assert again.choices[0].message.content == first.choices[0].message.content
    assert VideoProject.objects.count() == 1
    with pytest.raises(openai.UnprocessableEntityError):
        _ask(
            client,
            stream=False,
            extra_headers={"Idempotency-Key": "film-1"},
            extra_body={"style": "noir"},
        )


# --- models, and requests refused before anything is written -------------------


def test_models_lists_one_model_per_aspect_ratio(alice: User, asgi_server: AsgiServer) -> None:
    client = _client(asgi_server, alice)
    assert [model.id for model in client.models.list()] == [
        "videocreation-16x9",
        "videocreation-9x16",
        "videocreation-1x1",
    ]
    assert client.models.retrieve("videocreation-1x1").owned_by == "videocreation"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    ("brief", "title"),
    [
        (BRIEF, "Night trains crossing Europe"),
        (". . . and then the sea, at last", ". . . and then the sea, at last"),
        ("word " * 40, "word " * 15 + "word…"),
    ],
)
def test_the_title_is_the_briefs_first_sentence(brief: str, title: str) -> None:
    order = read_order(
        {"model": "videocreation-1x1", "messages": [{"role": "user", "content": brief}]}
    )
    assert order.brief_fields["title"] == title
    assert order.brief_fields["aspect_ratio"] == "1:1"


def test_bad_requests_get_openai_errors_and_change_nothing(
    alice: User, asgi_server: AsgiServer
) -> None:
    client = _client(asgi_server, alice)
    refusals = [
        (dict(model="gpt-4o"), openai.NotFoundError, "model_not_found", "model"),
        (dict(messages=[]), openai.BadRequestError, None, "messages"),
        (
            dict(messages=[{"role": "system", "content": "Be brief."}]),
            openai.BadRequestError,
            None,
            "messages",
        ),
        (
            dict(messages=[{"role": "user", "content": "Tiny"}]),
            openai.BadRequestError,
            None,
            "messages",
        ),
        (dict(extra_body={"scene_count": 40}), openai.BadRequestError, None, "scene_count"),
        (dict(extra_body={"colour": "red"}), openai.BadRequestError, None, "colour"),
        (dict(n=2), openai.BadRequestError, None, "n"),
    ]
    for changes, error_class, code, param in refusals:
        request = {
            "model": "videocreation-16x9",
            "messages": [{"role": "user", "content": BRIEF}],
            **changes,
        }
        with pytest.raises(error_class) as refused:
            client.chat.completions.create(**request)
        assert refused.value.body["param"] == param, refused.value.body
        assert refused.value.body["message"], refused.value.body
        if code:
            assert refused.value.code == code
    assert VideoProject.objects.count() == 0


def test_a_missing_or_wrong_key_is_refused(alice: User, asgi_server: AsgiServer) -> None:
    wrong = openai.OpenAI(base_url=f"{asgi_server.url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.code == "invalid_api_key"
    answer = httpx.post(f"{asgi_server.url}/v1/chat/completions", json={"model": "x"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{asgi_server.url}/v1/embeddings").json()["error"]["code"] == "not_found"
    assert VideoProject.objects.count() == 0


def test_one_users_stream_never_shows_another_users_project(
    alice: User, charlie: User, asgi_server: AsgiServer
) -> None:
    # Each request makes its caller's own project; the project API keeps them apart.
    project = lifecycle.start_video(alice, _fields(), key="film-1")
    assert (
        api_client_for(charlie).get(f"/api/video-creation/projects/{project.pk}").status_code == 404
    )
    again = lifecycle.start_video(charlie, _fields(), key="film-1")
    assert again.pk != project.pk and again.owner == charlie


def _fields() -> dict[str, Any]:
    return {
        "title": "Night trains",
        "brief": BRIEF,
        "aspect_ratio": "16:9",
        "scene_count": 2,
        "seconds_per_scene": 2,
        "style": "",
    }
