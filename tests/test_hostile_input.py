"""Hostile input: huge and malformed numbers, oversized bodies, malformed ids, failing feeds.

Each must answer a 4xx (or a 503) in the error shape of its path and change
nothing: never a 500, an HTML page, or an OverflowError from the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import User
from django.db import DatabaseError
from rest_framework.test import APIClient

from projects import bus, lifecycle
from projects.api.serializers import MAX_SEQ
from projects.bus import close_bus
from projects.consumers import ProgressConsumer
from projects.models import ProgressEvent, VideoProject
from projects.ownership import NOT_YOURS
from tests.conftest import BRIEF, AsgiServer, api_client_for

API = "/api/video-creation"
TWENTY_DIGITS = "9" * 20
HUGE = "9" * 5000  # past the 4,300 digits int() reads
TEN_MB = 10 * 1024 * 1024
BAD_NUMBERS = [TWENTY_DIGITS, "-1", "x"]


def snapshot() -> tuple[list[Any], int]:
    """Everything a refused request must leave as it was."""
    return list(VideoProject.objects.order_by("pk").values()), ProgressEvent.objects.count()


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid" and body["detail"], body
    assert field in body["fields"], body


# --- every number a client sends is bounded -------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["after", "limit"])
def test_history_refuses_a_huge_negative_or_non_number(
    alice_api: APIClient, make_project: Any, field: str, value: str
) -> None:
    response = alice_api.get(f"{API}/projects/{make_project().pk}/history", {field: value})

    assert_refused(response, field)


@pytest.mark.django_db
def test_history_after_the_largest_seq_is_simply_empty(
    alice_api: APIClient, make_project: Any
) -> None:
    response = alice_api.get(f"{API}/projects/{make_project().pk}/history", {"after": MAX_SEQ})

    assert response.status_code == 200
    assert response.json()["events"] == []


@pytest.mark.django_db
@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["wait", "since"])
def test_status_refuses_a_huge_negative_or_non_number(
    alice_api: APIClient, make_project: Any, field: str, value: str
) -> None:
    query = {"wait": "1", field: value}

    response = alice_api.get(f"{API}/projects/{make_project().pk}/status", query)

    assert_refused(response, field)


@pytest.mark.django_db
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_events_refuse_a_huge_negative_or_non_number_cursor(
    alice_api: APIClient, make_project: Any, value: str
) -> None:
    url = f"{API}/projects/{make_project().pk}/events"

    by_header = alice_api.get(url, HTTP_LAST_EVENT_ID=value)
    by_query = alice_api.get(url, {"lastEventId": value})

    assert_refused(by_header, "lastEventId")
    assert_refused(by_query, "lastEventId")


@pytest.mark.django_db
@pytest.mark.parametrize("value", [*BAD_NUMBERS, "0", "1.5", HUGE])
@pytest.mark.parametrize("field", ["page", "pageSize"])
def test_the_project_list_refuses_a_bad_page(
    alice_api: APIClient, make_project: Any, field: str, value: str
) -> None:
    make_project()

    assert_refused(alice_api.get(f"{API}/projects", {field: value}), field)


@pytest.mark.django_db
def test_the_project_list_still_takes_the_last_page(
    alice_api: APIClient, make_project: Any
) -> None:
    make_project()

    response = alice_api.get(f"{API}/projects", {"page": "last", "pageSize": "100"})

    assert response.status_code == 200
    assert response.json()["count"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize("index", [TWENTY_DIGITS, "9" * 300])
def test_a_huge_scene_index_has_no_preview(
    alice_api: APIClient, scripted_project: VideoProject, index: str
) -> None:
    # With the previews folder present, a 300-digit file name is one the OS refuses.
    from projects.pipeline import preview_path

    preview_path(scripted_project.pk, 0).parent.mkdir(parents=True, exist_ok=True)

    response = alice_api.get(f"{API}/projects/{scripted_project.pk}/scenes/{index}/preview")

    assert response.status_code == 404
    assert response.json() == {"detail": "This scene has no preview.", "code": "not_found"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "status"),
    [(f"bytes={HUGE}-", 416), (f"bytes=0-{HUGE}", 206), (f"bytes=-{HUGE}", 206)],
)
def test_a_range_with_thousands_of_digits_is_read_as_past_the_end(
    alice_api: APIClient, completed_project: VideoProject, header: str, status: int
) -> None:
    response = alice_api.get(f"{API}/projects/{completed_project.pk}/video", HTTP_RANGE=header)

    assert response.status_code == status


@pytest.fixture
def completed_project(scripted_project: VideoProject, media_root: Any) -> VideoProject:
    from projects.models import Step

    started = lifecycle.start_job(scripted_project, Step.RENDER)
    lifecycle.claim(started.pk, Step.RENDER, "w")
    name = f"videos/{started.pk}/v.mp4"
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(bytes(range(256)) * 4)
    lifecycle.finish_render(started.pk, "w", name)
    return VideoProject.objects.get(pk=started.pk)


def _chat(client: APIClient, body: Any, **extra: Any) -> Any:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/v1/chat/completions", raw, content_type="application/json", **extra)


def _order(**extra_body: Any) -> dict[str, Any]:
    message = {"role": "user", "content": BRIEF["brief"]}
    return {"model": "videocreation-16x9", "messages": [message], **extra_body}


@pytest.mark.django_db
@pytest.mark.parametrize("value", [int(TWENTY_DIGITS), -1, "x", 1e300])
@pytest.mark.parametrize("field", ["scene_count", "seconds_per_scene", "n"])
def test_openai_numbers_are_bounded(alice_api: APIClient, field: str, value: Any) -> None:
    response = _chat(alice_api, _order(**{field: value}))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error", error
    assert VideoProject.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raw", [f'{{"model": "videocreation-16x9", "n": {HUGE}}}', "[" * 200_000 + "]" * 200_000]
)
def test_openai_json_that_python_cannot_read_is_a_400(alice_api: APIClient, raw: str) -> None:
    response = _chat(alice_api, raw)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is not valid JSON."


@pytest.mark.django_db
def test_api_json_nested_too_deeply_is_a_400(alice_api: APIClient) -> None:
    nested = "[" * 200_000 + "]" * 200_000

    response = alice_api.post(f"{API}/projects", nested, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "JSON parse error - the JSON is nested too deeply.",
        "code": "parse_error",
    }
    assert VideoProject.objects.count() == 0


# --- oversized bodies ---------------------------------------------------------------------


def _too_big_brief() -> str:
    return json.dumps(BRIEF | {"brief": "x" * TEN_MB})


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "action"), [("post", ""), ("patch", "script")])
def test_a_ten_megabyte_body_is_a_413_and_changes_nothing(
    alice_api: APIClient, scripted_project: VideoProject, method: str, action: str
) -> None:
    path = f"{API}/projects" + (f"/{scripted_project.pk}/{action}" if action else "")
    before = snapshot()

    response = getattr(alice_api, method)(path, _too_big_brief(), content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body is larger than 2,621,440 bytes.",
        "code": "too_large",
    }
    assert snapshot() == before


@pytest.mark.django_db
def test_a_ten_megabyte_chat_completion_is_an_openai_413(alice_api: APIClient) -> None:
    response = _chat(alice_api, json.dumps(_order() | {"padding": "x" * TEN_MB}))

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large" and error["type"] == "invalid_request_error"
    assert "larger than" in error["message"]
    assert VideoProject.objects.count() == 0


@pytest.mark.django_db
def test_the_body_limit_is_a_setting(alice_api: APIClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = alice_api.post(f"{API}/projects", {**BRIEF, "style": "s" * 2000}, format="json")

    assert response.status_code == 413
    assert response.json()["detail"] == "The request body is larger than 1,024 bytes."


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    # A generator body: httpx sends it chunked, with no Content-Length.
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.django_db(transaction=True)
def test_the_web_server_refuses_big_bodies_chunked_or_declared_before_django_reads_them(
    alice: User, asgi_server: AsgiServer
) -> None:
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=alice)
    headers = {"Authorization": f"Token {token.key}", "Content-Type": "application/json"}
    big = _too_big_brief().encode()
    with httpx.Client(base_url=asgi_server.url, headers=headers, timeout=60) as client:
        chunked = client.post(f"{API}/projects", content=_chunks(big))
        declared = client.post(f"{API}/projects", content=big)
        openai_chunked = client.post(
            "/v1/chat/completions", content=_chunks(json.dumps(_order(pad="x" * TEN_MB)).encode())
        )
        small_chunked = client.post(f"{API}/projects", content=_chunks(json.dumps(BRIEF).encode()))

    for response in (chunked, declared):
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "too_large"
    assert openai_chunked.status_code == 413
    assert openai_chunked.json()["error"]["code"] == "too_large"
    assert small_chunked.status_code == 201, small_chunked.text
    assert VideoProject.objects.count() == 1


# --- one ownership check: a malformed id is someone else's project --------------------------

ENTRY_POINTS = [
    ("get", ""),
    ("patch", ""),
    ("post", "script"),
    ("patch", "script"),
    ("post", "render"),
    ("post", "cancel"),
    ("get", "status"),
    ("get", "events"),
    ("get", "history"),
    ("delete", "history"),
    ("get", "log"),
    ("post", "notified"),
    ("get", "video"),
    ("get", "scenes/0/preview"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "action"), ENTRY_POINTS)
@pytest.mark.parametrize("malformed", ["not-a-uuid", "1", "%00", "9" * 300])
def test_a_malformed_id_gets_the_same_404_as_someone_elses_project(
    charlie_api: APIClient, scripted_project: VideoProject, method: str, action: str, malformed: str
) -> None:
    before = snapshot()
    suffix = f"/{action}" if action else ""

    theirs = getattr(charlie_api, method)(f"{API}/projects/{scripted_project.pk}{suffix}")
    nonsense = getattr(charlie_api, method)(f"{API}/projects/{malformed}{suffix}")

    assert theirs.status_code == nonsense.status_code == 404
    assert theirs.json() == nonsense.json() == {"detail": NOT_YOURS, "code": "not_found"}
    assert snapshot() == before


@pytest.mark.django_db(transaction=True)
def test_a_socket_gets_the_same_refusal_for_a_malformed_id_and_someone_elses_project(
    charlie: User, scripted_project: VideoProject
) -> None:
    async def refusal(task_id: Any) -> dict[str, Any]:
        socket = _in_process(ProgressConsumer.as_asgi(), user=charlie)
        try:
            await socket.send_input({"type": "websocket.connect"})
            assert (await socket.receive_output(10))["type"] == "websocket.accept"
            assert (await _json_from(socket))["type"] == "connected"
            subscribe = {"action": "subscribe", "task_id": task_id}
            await socket.send_input({"type": "websocket.receive", "text": json.dumps(subscribe)})
            return (await _json_from(socket))["payload"]
        finally:
            await socket.send_input({"type": "websocket.disconnect", "code": 1000})
            await socket.wait(10)
            await close_bus()

    theirs = async_to_sync(refusal)(str(scripted_project.pk))
    for malformed in ["not-a-uuid", 42, None, ["x"], {"id": 1}]:
        assert async_to_sync(refusal)(malformed) == theirs
    assert theirs == {"code": "not_found", "message": NOT_YOURS}


@pytest.mark.django_db(transaction=True)
def test_a_socket_refuses_a_since_past_what_the_database_holds(
    alice: User, scripted_project: VideoProject
) -> None:
    async def answer(since: int) -> dict[str, Any]:
        socket = _in_process(ProgressConsumer.as_asgi(), user=alice)
        try:
            await socket.send_input({"type": "websocket.connect"})
            assert (await socket.receive_output(10))["type"] == "websocket.accept"
            assert (await _json_from(socket))["type"] == "connected"
            subscribe = {"action": "subscribe", "task_id": str(scripted_project.pk), "since": since}
            await socket.send_input({"type": "websocket.receive", "text": json.dumps(subscribe)})
            return await _json_from(socket)
        finally:
            await socket.send_input({"type": "websocket.disconnect", "code": 1000})
            await socket.wait(10)
            await close_bus()

    refused = async_to_sync(answer)(MAX_SEQ + 1)
    assert refused["type"] == "error" and refused["payload"]["code"] == "invalid"
    assert async_to_sync(answer)(MAX_SEQ)["type"] == "subscribed"


def _in_process(app: Any, **scope: Any) -> ApplicationCommunicator:
    scope = {"type": "websocket", "path": "/ws/progress/", "query_string": b"", **scope}
    return ApplicationCommunicator(app, {"headers": [], "subprotocols": [], **scope})


async def _json_from(socket: ApplicationCommunicator) -> dict[str, Any]:
    message = await socket.receive_output(10)
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


# --- a feed that fails ends loudly -------------------------------------------------------


@pytest.fixture
def broken_log(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_read(*args: Any, **kwargs: Any) -> list[dict]:
        raise DatabaseError("the database went away")

    monkeypatch.setattr(bus, "read_events", broken_read)


async def _read_to_the_end(response: Any) -> str:
    return b"".join([chunk async for chunk in response.streaming_content]).decode()


@pytest.mark.django_db(transaction=True)
def test_an_event_stream_whose_log_read_fails_ends_and_logs_why(
    alice_api: APIClient, make_project: Any, broken_log: None, caplog: Any
) -> None:
    project = make_project()

    with caplog.at_level(logging.ERROR, logger="projects.streams"):
        response = alice_api.get(f"{API}/projects/{project.pk}/events", {"lastEventId": 0})
        body = async_to_sync(_read_to_the_end)(response)

    assert response.status_code == 200
    assert body.startswith("retry:") and "event:" not in body
    failure = next(r for r in caplog.records if r.name == "projects.streams")
    assert str(project.pk) in failure.getMessage() and failure.exc_info
    assert "the database went away" in str(failure.exc_info[1])


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_whose_log_read_fails_answers_503(
    alice_api: APIClient, make_project: Any, broken_log: None, caplog: Any
) -> None:
    project = make_project()

    with caplog.at_level(logging.ERROR, logger="projects.streams"):
        response = alice_api.get(
            f"{API}/projects/{project.pk}/status", {"wait": 5, "since": project.version}
        )

    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert "database" not in response.json()["detail"]
    assert any(r.name == "projects.streams" and r.exc_info for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_an_openai_stream_whose_log_read_fails_ends_with_an_openai_error(
    alice_api: APIClient, broken_log: None, caplog: Any
) -> None:
    with caplog.at_level(logging.ERROR, logger="projects.openai_api"):
        response = _chat(alice_api, _order(stream=True))
        chunks = async_to_sync(_read_to_the_end)(response).strip().split("\n\n")

    assert response.status_code == 200
    last = json.loads(chunks[-1].removeprefix("data: "))
    assert last["error"]["code"] == "unavailable" and last["error"]["type"] == "server_error"
    assert "data: [DONE]" not in chunks
    assert any(r.name == "projects.openai_api" and r.exc_info for r in caplog.records)


# --- no internals in errors ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_crash_answers_a_plain_sentence_without_its_cause(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("connection to db-7.internal:5432 refused")

    monkeypatch.setattr(lifecycle, "create_project", crash)
    client = api_client_for(alice)
    client.raise_request_exception = False

    response = client.post(f"{API}/projects", BRIEF, format="json")

    assert response.status_code == 500
    assert response.json() == {
        "detail": "Something went wrong on our side; please try again.",
        "code": "server_error",
    }
    assert "db-7" not in response.content.decode()
