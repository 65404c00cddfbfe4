"""The WebSocket protocol at /ws/progress/, spoken by the `websockets` library to a live uvicorn.

As with SSE, the promise checked is the one every transport makes: the `seq`
numbers a client sees run from where it started to the job's last event with
no gap and no repeat — across a client that reconnects with `old_client_id`
and a web server that restarts mid-job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from projects import lifecycle
from projects.models import Step, VideoProject, WebSocketSubscription
from tests.conftest import AsgiServer
from tests.live import assert_each_once, job_over, long_render
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

EVENT_TYPES = {"progress", "status", "log", "error"}


def _token(user: User) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


@contextmanager
def _socket(server: AsgiServer, user: User, query: str = "") -> Iterator[ClientConnection]:
    with connect(
        f"{server.ws_url}/ws/progress/{query}", additional_headers=_token(user), open_timeout=10
    ) as socket:
        yield socket


def _receive(socket: ClientConnection, timeout: float = 20) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def _read_events(
    socket: ClientConnection, project: VideoProject, into: list[dict], stop_after: int = 0
) -> None:
    """Collect event messages until the job's last event (or `stop_after` of them) arrived."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = _receive(socket)
        if message["type"] not in EVENT_TYPES or "seq" not in message["payload"]:
            continue
        assert message["task_id"] == str(project.pk)
        into.append(message)
        if stop_after and len(into) >= stop_after:
            return
        if job_over(project) and message["payload"]["seq"] >= project.version:
            return
    raise AssertionError(f"no end after 60 s; seqs {_seqs(into)}")


def _seqs(messages: list[dict]) -> list[int]:
    return [message["payload"]["seq"] for message in messages]


def _start(project: VideoProject, job: str) -> None:
    lifecycle.start_job(project, Step.SCRIPT if job == "script" else Step.RENDER)


@pytest.mark.worker
def test_a_subscriber_gets_the_status_then_every_change_of_the_job(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    with _socket(asgi_server, alice) as socket:
        hello = _receive(socket)
        assert hello["type"] == "connected" and hello["payload"]["client_id"]

        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        subscribed = _receive(socket)
        assert subscribed == {
            "type": "subscribed",
            "task_id": str(project.pk),
            "payload": {"topics": [str(project.pk)]},
        }
        current = _receive(socket)
        assert current["type"] == "status"
        assert current["payload"]["status"] == "DRAFT"
        assert current["payload"]["seq"] == project.version

        socket.send(json.dumps({"type": "ping"}))
        assert _receive(socket)["type"] == "pong"

        _start(project, "script")
        received: list[dict] = []
        _read_events(socket, project, received)

    assert_each_once(_seqs(received), current["payload"]["seq"] + 1, project.version)
    progress = [m["payload"] for m in received if m["type"] == "progress"]
    assert progress, "progress messages"
    assert set(progress[0]) >= {
        "task_id",
        "progress",
        "current_step",
        "total_steps",
        "completed_steps",
        "message",
        "status",
        "timestamp",
        "seq",
    }
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    assert any(m["type"] == "log" and m["payload"]["line"] for m in received)
    last = received[-1]
    assert last["type"] == "status" and last["payload"]["status"] == "DRAFT"
    assert last["payload"]["progress"] == 100
    assert len(last["payload"]["result"]["scriptData"]["scenes"]) == project.scene_count


@pytest.mark.worker
def test_a_client_that_reconnects_with_its_old_client_id_misses_nothing(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = long_render(make_project)
    before: list[dict] = []
    with _socket(asgi_server, alice) as socket:
        client_id = _receive(socket)["payload"]["client_id"]
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert _receive(socket)["type"] == "subscribed"
        first = _receive(socket)["payload"]["seq"]
        _start(project, "render")
        _read_events(socket, project, before, stop_after=4)
    cut_at = before[-1]["payload"]["seq"]
    wait_for(lambda: job_over(project) or project.version > cut_at + 3, "the job to move on")

    after: list[dict] = []
    with _socket(asgi_server, alice, f"?old_client_id={client_id}") as socket:
        hello = _receive(socket)
        assert hello["type"] == "reconnected"
        assert hello["payload"] == {"client_id": client_id, "subscribed": [str(project.pk)]}
        _read_events(socket, project, after)

    assert _seqs(after)[0] == cut_at + 1, "a reconnected client resumes; it does not restart"
    assert_each_once(_seqs(before + after), first + 1, project.version)
    assert after[-1]["payload"]["status"] == "COMPLETED"
    assert after[-1]["payload"]["result"]["videoUrl"]


@pytest.mark.worker
def test_the_socket_survives_a_restart_of_the_web_server_mid_job(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = long_render(make_project)
    received: list[dict] = []
    first_server = asgi_server.process.pid if asgi_server.process else None
    client_id = ""
    connections = 0
    close_codes: list[int] = []
    restarter = threading.Thread(target=asgi_server.restart)
    deadline = time.monotonic() + 90
    while not (received and job_over(project) and _seqs(received)[-1] == project.version):
        assert time.monotonic() < deadline, f"no end after 90 s; seqs {_seqs(received)}"
        query = f"?old_client_id={client_id}" if client_id else ""
        try:
            with _socket(asgi_server, alice, query) as socket:
                connections += 1
                hello = _receive(socket)
                if not client_id:
                    client_id = hello["payload"]["client_id"]
                    socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
                    assert _receive(socket)["type"] == "subscribed"
                    received.append(_receive(socket))  # the current status
                    _start(project, "render")
                    _read_events(socket, project, received, stop_after=4)
                    restarter.start()
                else:
                    assert hello["type"] == "reconnected", hello
                _read_events(socket, project, received)
        except (ConnectionClosed, OSError) as gone:
            if isinstance(gone, ConnectionClosed) and gone.rcvd is not None:
                close_codes.append(gone.rcvd.code)
            restarter.join(60)
            wait_for(asgi_server.serving, "the web server to come back", timeout=60)
    restarter.join(60)

    assert asgi_server.process and asgi_server.process.pid != first_server
    assert connections >= 2, "the client had to reconnect"
    assert close_codes == [1012], "a restart tells the client to come back"
    assert_each_once(_seqs(received), _seqs(received)[0], project.version)
    assert received[-1]["payload"]["status"] == "COMPLETED"


def test_since_replays_the_log_from_any_seq(
    asgi_server: AsgiServer, alice: User, scripted_project: VideoProject
) -> None:
    project = scripted_project
    with _socket(asgi_server, alice) as socket:
        _receive(socket)
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk), "since": 0}))
        assert _receive(socket)["type"] == "subscribed"
        replayed = [_receive(socket) for _ in range(project.version)]
    assert _seqs(replayed) == list(range(1, project.version + 1))
    assert replayed[-1]["payload"]["result"]["scriptData"]["title"] == "Night trains of Europe"


def test_unsubscribe_stops_the_events_and_forgets_the_subscription(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    with _socket(asgi_server, alice) as socket:
        _receive(socket)
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert [_receive(socket)["type"] for _ in range(2)] == ["subscribed", "status"]
        socket.send(json.dumps({"action": "unsubscribe", "task_id": str(project.pk)}))
        assert _receive(socket) == {
            "type": "unsubscribed",
            "task_id": str(project.pk),
            "payload": {"topics": []},
        }
        lifecycle.edit_brief(project, {"style": "noir"})
        socket.send(json.dumps({"type": "ping"}))
        assert _receive(socket)["type"] == "pong", "no event for a project no longer followed"
    assert not WebSocketSubscription.objects.filter(project=project).exists()


def test_a_browser_signs_in_with_its_session_cookie(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    browser = Client()
    browser.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    with connect(
        f"{asgi_server.ws_url}/ws/progress/",
        additional_headers={"Cookie": cookie},
        origin=asgi_server.url,
        open_timeout=10,
    ) as socket:
        assert _receive(socket)["type"] == "connected"
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert _receive(socket)["type"] == "subscribed"


def test_sockets_are_only_for_signed_in_owners(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    project = make_project(owner=alice)
    url = f"{asgi_server.ws_url}/ws/progress/"
    with pytest.raises(InvalidStatus) as nobody:
        connect(url, open_timeout=10)
    assert nobody.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Authorization": "Token nope"}, open_timeout=10)
    token = Token.objects.create(user=alice).key
    with pytest.raises(InvalidStatus):
        connect(f"{url}?token={token}", open_timeout=10)  # a token never travels in a URL
    with pytest.raises(InvalidStatus):
        # Another site's page cannot ride the person's cookie.
        connect(url, additional_headers=_token(alice), origin="https://evil.example")

    with _socket(asgi_server, alice) as socket:
        alices_client = _receive(socket)["payload"]["client_id"]
    with _socket(asgi_server, charlie, f"?old_client_id={alices_client}") as socket:
        hello = _receive(socket)
        assert hello["type"] == "connected" and hello["payload"]["client_id"] != alices_client
        for task_id in [str(project.pk), "00000000-0000-0000-0000-000000000000", "nope", 7]:
            socket.send(json.dumps({"action": "subscribe", "task_id": task_id}))
            refused = _receive(socket)
            assert refused["type"] == "error" and refused["payload"]["code"] == "not_found"
        socket.send("not json")
        assert _receive(socket)["payload"]["code"] == "invalid"
        socket.send(json.dumps({"action": "dance"}))
        assert _receive(socket)["payload"]["code"] == "unknown_action"


def test_staff_see_sockets_by_the_projects_they_follow(
    asgi_server: AsgiServer, alice: User, make_project: Any, django_user_model: Any
) -> None:
    import httpx

    staff = django_user_model.objects.create_user("sam", password="sam-password-1", is_staff=True)
    project = make_project()
    active_url = f"{asgi_server.url}/api/video-creation/active"
    with _socket(asgi_server, alice) as socket:
        _receive(socket)
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        _receive(socket)
        active = httpx.get(active_url, headers=_token(staff)).json()
    assert active["byUser"] == [{"user": "alice", "sse": 0, "websocket": 1, "openai": 0}]
    assert active["byProject"] == [
        {"project": str(project.pk), "sse": 0, "websocket": 1, "openai": 0}
    ]
