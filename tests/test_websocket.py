"""The WebSocket protocol at /ws/progress/, spoken by the `websockets` library to a live uvicorn.

As with SSE, the promise checked is the one every transport makes: the `seq`
numbers a client sees run from where it started to the job's last event with
no gap and no repeat — across a client that reconnects with `old_client_id`
and a web server that restarts mid-job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, connection
from django.db.models import Q
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from projects import bus, lifecycle, progress
from projects.bus import close_bus
from projects.consumers import BrowserOriginValidator, ProgressConsumer
from projects.cursors import CursorMap, SessionCursors
from projects.models import (
    EventKind,
    LiveClient,
    Step,
    VideoProject,
    WebSocketSession,
    WebSocketSubscription,
)
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
    socket: ClientConnection,
    project: VideoProject,
    into: list[dict],
    stop_after: int = 0,
    *,
    ack: bool = False,
) -> None:
    """Collect event messages until the job's last event (or `stop_after` of them) arrived.

    With `ack`, acknowledge each event as a careful client does once it has it.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = _receive(socket)
        if message["type"] not in EVENT_TYPES or "seq" not in message["payload"]:
            continue
        assert message["task_id"] == str(project.pk)
        into.append(message)
        if ack:
            _ack(socket, project, message["payload"]["seq"])
        if stop_after and len(into) >= stop_after:
            return
        if job_over(project) and message["payload"]["seq"] >= project.version:
            return
    raise AssertionError(f"no end after 60 s; seqs {_seqs(into)}")


def _ack(socket: ClientConnection, project: VideoProject | str, seq: Any) -> None:
    task_id = str(project.pk) if isinstance(project, VideoProject) else project
    socket.send(json.dumps({"action": "ack", "task_id": task_id, "seq": seq}))


def _settle(socket: ClientConnection) -> None:
    """Wait until the server has acted on everything sent so far (it answers in order)."""
    socket.send(json.dumps({"type": "ping"}))
    while (message := _receive(socket))["type"] != "pong":
        assert message["type"] != "error", message


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
        _read_events(socket, project, before, stop_after=4, ack=True)
        _settle(socket)
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
def test_a_reconnect_replays_what_was_sent_after_the_last_ack(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    # The bug: the cursor followed what the server sent, so events in flight
    # when the connection died (here: received, never processed) were lost.
    project = long_render(make_project)
    received: list[dict] = []
    with _socket(asgi_server, alice) as socket:
        client_id = _receive(socket)["payload"]["client_id"]
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert _receive(socket)["type"] == "subscribed"
        first = _receive(socket)["payload"]["seq"]
        _start(project, "render")
        _read_events(socket, project, received, stop_after=6)
        processed = received[:2]
        _ack(socket, project, _seqs(processed)[-1])
        _settle(socket)
    acked = _seqs(processed)[-1]
    assert _seqs(received)[-1] > acked + 1, "events were sent past the ack"
    wait_for(lambda: job_over(project) or project.version > acked + 8, "the job to move on")

    after: list[dict] = []
    with _socket(asgi_server, alice, f"?old_client_id={client_id}") as socket:
        assert _receive(socket)["type"] == "reconnected"
        _read_events(socket, project, after, ack=True)

    assert _seqs(after)[0] == acked + 1, "the events after the last ack come again"
    assert_each_once(_seqs(processed + after), first + 1, project.version)
    assert after[-1]["payload"]["status"] == "COMPLETED"


def test_a_client_that_never_acks_is_given_the_current_state_again_on_reconnect(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    with _socket(asgi_server, alice) as socket:
        client_id = _receive(socket)["payload"]["client_id"]
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert _receive(socket)["type"] == "subscribed"
        started_at = _receive(socket)["payload"]["seq"]
        lifecycle.edit_brief(project, {"style": "noir"})
        lifecycle.edit_brief(project, {"style": "pastel"})
        project.refresh_from_db()
        seen = [_receive(socket) for _ in range(project.version - started_at)]
        assert _seqs(seen) == list(range(started_at + 1, project.version + 1))

    assert _subscription(project).last_seq is None, "a send is not the client's word"

    with _socket(asgi_server, alice, f"?old_client_id={client_id}") as socket:
        assert _receive(socket)["type"] == "reconnected"
        again = _receive(socket)
    # Nothing acked: the server assumes the client has nothing, and starts from the state.
    assert again["type"] == "status"
    assert again["payload"]["seq"] == project.version
    assert again["payload"]["status"] == project.status


def test_a_subscriptions_first_ack_is_stored_at_once_and_later_ones_in_batches(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    asgi_server.restart(WS_CURSOR_FLUSH_SECONDS="600")  # no batch during this test
    project = make_project()
    with _socket(asgi_server, alice) as socket:
        _receive(socket)
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk)}))
        assert _receive(socket)["type"] == "subscribed"
        first = _receive(socket)["payload"]["seq"]
        _ack(socket, project, first)
        wait_for(lambda: _subscription(project).last_seq == first, "the first ack to be stored")
        lifecycle.edit_brief(project, {"style": "noir"})
        later = _receive(socket)["payload"]["seq"]
        _ack(socket, project, later)
        _settle(socket)  # the ack has been handled

        assert _subscription(project).last_seq == first, "later acks wait for the batch"
    wait_for(lambda: _subscription(project).last_seq == later, "the goodbye to store the rest")


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
                    _read_events(socket, project, received, stop_after=4, ack=True)
                    restarter.start()
                else:
                    assert hello["type"] == "reconnected", hello
                _read_events(socket, project, received, ack=True)
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


def _subscription(project: VideoProject) -> WebSocketSubscription:
    return WebSocketSubscription.objects.get(project=project)


def _gone(client_id: str) -> bool:
    """Whether the server has finished with the socket (its cursors are written by then)."""
    return not LiveClient.objects.filter(session_id=client_id).exists()


def test_acks_never_move_a_cursor_back(
    asgi_server: AsgiServer, alice: User, scripted_project: VideoProject
) -> None:
    project = scripted_project
    last = project.version
    with _socket(asgi_server, alice) as socket:
        client_id = _receive(socket)["payload"]["client_id"]
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk), "since": 0}))
        assert _receive(socket)["type"] == "subscribed"
        assert _seqs([_receive(socket) for _ in range(last)]) == list(range(1, last + 1))
        for seq in [last - 1, 1, last - 2]:
            _ack(socket, project, seq)
        _settle(socket)
    wait_for(lambda: _gone(client_id), "the server to let the socket go")
    assert _subscription(project).last_seq == last - 1

    with _socket(asgi_server, alice, f"?old_client_id={client_id}") as socket:
        assert _receive(socket)["type"] == "reconnected"
        assert _receive(socket)["payload"]["seq"] == last, "only the unacked event comes again"


def test_invalid_acks_are_refused_and_change_nothing(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    project, other = make_project(), make_project()
    charlies = make_project(owner=charlie)
    refusals = [
        (str(project.pk), "3", "invalid"),
        (str(project.pk), -1, "invalid"),
        (str(project.pk), True, "invalid"),
        (str(project.pk), 1.5, "invalid"),
        (str(project.pk), None, "invalid"),
        (str(project.pk), project.version + 1, "invalid"),
        (str(other.pk), 1, "not_found"),  # hers, but this socket does not follow it
        (str(charlies.pk), 1, "not_found"),
        ("nope", 1, "not_found"),
    ]
    with _socket(asgi_server, alice) as socket:
        client_id = _receive(socket)["payload"]["client_id"]
        socket.send(json.dumps({"action": "subscribe", "task_id": str(project.pk), "since": 0}))
        assert _receive(socket)["type"] == "subscribed"
        assert _seqs([_receive(socket) for _ in range(project.version)])[-1] == project.version
        for task_id, seq, code in refusals:
            _ack(socket, task_id, seq)
            refused = _receive(socket)
            assert refused["type"] == "error", (seq, refused)
            assert refused["payload"]["code"] == code, (seq, refused)
            assert "seq" not in refused["payload"]
        _ack(socket, project, 1)  # a good ack is silent
        socket.send(json.dumps({"type": "ping"}))
        assert _receive(socket)["type"] == "pong"
    wait_for(lambda: _gone(client_id), "the server to let the socket go")
    assert _subscription(project).last_seq == 1


def test_cursors_of_many_sockets_are_written_in_one_statement_per_flush(
    alice: User, make_project: Any
) -> None:
    projects = [make_project() for _ in range(3)]
    sessions = [WebSocketSession.objects.create(user=alice) for _ in range(20)]
    for session in sessions:
        for project in projects:
            WebSocketSubscription.objects.create(session=session, project=project, last_seq=5)
    book = SessionCursors()
    for session in sessions:
        for project in projects:
            for seq in range(1, 10):  # one socket acking every event
                book.ack(str(session.client_id), str(project.pk), seq)
    lagging = sessions[0]
    book.ack(str(lagging.client_id), str(projects[0].pk), 3)  # behind: never moves back

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(book.flush)()
    assert len(queries) == 1, [query["sql"] for query in queries]
    assert set(WebSocketSubscription.objects.values_list("last_seq", flat=True)) == {9}

    WebSocketSubscription.objects.filter(session=lagging).update(last_seq=12)
    book.ack(str(lagging.client_id), str(projects[0].pk), 10)
    book.ack(str(sessions[1].client_id), str(projects[0].pk), 11)
    with CaptureQueriesContext(connection) as queries:
        async_to_sync(book.flush)()
        async_to_sync(book.flush)()  # nothing pending: no statement
    assert len(queries) == 1
    cursors = dict(
        WebSocketSubscription.objects.filter(project=projects[0]).values_list(
            "session_id", "last_seq"
        )
    )
    assert cursors[lagging.client_id] == 12, "a cursor never moves back"
    assert cursors[sessions[1].client_id] == 11
    assert book.unwritten(str(sessions[1].client_id)) == {}


def test_a_feed_that_cannot_read_the_log_closes_the_socket_with_1011(
    alice: User, scripted_project: VideoProject, monkeypatch: Any, caplog: Any
) -> None:
    async def broken_read(*args: Any, **kwargs: Any) -> list[dict]:
        raise DatabaseError("the database went away")

    monkeypatch.setattr(bus, "read_events", broken_read)

    async def scenario() -> dict[str, Any]:
        socket = _in_process(ProgressConsumer.as_asgi(), user=alice)
        try:
            await socket.send_input({"type": "websocket.connect"})
            assert (await socket.receive_output(10))["type"] == "websocket.accept"
            assert (await _json_from(socket))["type"] == "connected"
            subscribe = {"action": "subscribe", "task_id": str(scripted_project.pk), "since": 0}
            await socket.send_input({"type": "websocket.receive", "text": json.dumps(subscribe)})
            assert (await _json_from(socket))["type"] == "subscribed"
            return await socket.receive_output(10)
        finally:
            await socket.send_input({"type": "websocket.disconnect", "code": 1011})
            await socket.wait(10)
            await close_bus()

    with caplog.at_level(logging.ERROR, logger="projects.consumers"):
        closed = async_to_sync(scenario)()
    assert closed == {"type": "websocket.close", "code": 1011}
    failure = next(r for r in caplog.records if r.name == "projects.consumers")
    assert "failed" in failure.getMessage() and failure.exc_info
    assert "the database went away" in str(failure.exc_info[1])


def _in_process(app: Any, **scope: Any) -> ApplicationCommunicator:
    """A socket to an ASGI app in this process (Channels' own helper needs daphne)."""
    scope = {"type": "websocket", "path": "/ws/progress/", "query_string": b"", **scope}
    return ApplicationCommunicator(app, {"headers": [], "subprotocols": [], **scope})


async def _json_from(socket: ApplicationCommunicator) -> dict[str, Any]:
    message = await socket.receive_output(10)
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


class _Accept(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()


@pytest.mark.parametrize(
    ("scheme", "host", "origin", "allowed"),
    [
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000", True),
        ("ws", "localhost", "http://LOCALHOST:80", True),  # the default port, spelled out
        ("wss", "localhost", "https://localhost", True),
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:9000", False),  # same host, other port
        ("ws", "127.0.0.1:8000", "https://127.0.0.1:8000", False),  # https is another origin
        ("wss", "localhost", "http://localhost", False),
        ("ws", "127.0.0.1:8000", "http://localhost:8000", False),
        ("ws", "127.0.0.1:8000", "null", False),
        ("ws", "evil.example", "http://evil.example", False),  # not in ALLOWED_HOSTS
        ("ws", "127.0.0.1:8000", "https://app.example.com", True),  # CSRF_TRUSTED_ORIGINS
        ("ws", "127.0.0.1:8000", "https://app.example.com:8443", False),
        ("ws", "127.0.0.1:8000", None, True),  # a program sends no Origin
    ],
)
def test_a_browser_socket_must_come_from_the_same_origin_or_a_trusted_one(
    settings: Any, scheme: str, host: str, origin: str | None, allowed: bool
) -> None:
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))

    async def handshake() -> bool:
        app = BrowserOriginValidator(_Accept.as_asgi())
        socket = _in_process(app, scheme=scheme, headers=headers)
        await socket.send_input({"type": "websocket.connect"})
        answer = await socket.receive_output(5)
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        await socket.wait(5)
        return answer["type"] == "websocket.accept"

    assert async_to_sync(handshake)() is allowed


def test_the_web_server_refuses_a_browser_socket_from_another_port_or_scheme(
    asgi_server: AsgiServer, alice: User
) -> None:
    url = f"{asgi_server.ws_url}/ws/progress/"
    for origin in [
        f"http://127.0.0.1:{asgi_server.port + 1}",
        f"https://127.0.0.1:{asgi_server.port}",
    ]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=_token(alice), origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403, origin
    with connect(url, additional_headers=_token(alice), origin=asgi_server.url) as socket:
        assert _receive(socket)["type"] == "connected"


# --- every project at once: "*" ---------------------------------------------------


def _write(project: VideoProject, message: str) -> int:
    """A progress event through the one write path; its seq."""
    written = progress.write(
        project.pk,
        expect=Q(),
        fields={"progress_message": message},
        events=[(EventKind.PROGRESS, {})],
    )
    assert written is not None
    return written.version


def _until(socket: ClientConnection, kind: str) -> list[dict]:
    """Every message up to and including the first of type `kind`."""
    messages = [_receive(socket)]
    while messages[-1]["type"] != kind:
        assert messages[-1]["type"] != "error", messages[-1]
        messages.append(_receive(socket))
    return messages


def test_star_follows_every_project_of_the_caller_those_made_later_too(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    trains, ferries = make_project(title="Night trains"), make_project(title="Ferries")
    charlies = make_project(owner=charlie, title="Charlie's")
    with _socket(asgi_server, alice) as socket:
        assert _receive(socket)["type"] == "connected"
        socket.send(json.dumps({"action": "subscribe", "task_id": "*"}))
        opening = _until(socket, "ready")
        assert opening[0] == {"type": "subscribed", "task_id": "*", "payload": {"topics": ["*"]}}
        assert [(m["type"], m["task_id"], m["payload"]["seq"]) for m in opening[1:3]] == [
            ("status", str(ferries.pk), ferries.version),
            ("status", str(trains.pk), trains.version),
        ]
        assert opening[3] == {"type": "ready", "task_id": "*", "payload": {"projects": 2}}

        _write(charlies, "not for alice")
        trains_seq = _write(trains, "trains moves")
        later = make_project(title="Made later")
        ferries_seq = _write(ferries, "ferries moves")
        live = [_receive(socket) for _ in range(3)]
        _ack(socket, trains, trains_seq)  # accepted, though "*" keeps no cursor
        _settle(socket)

    by_project: dict[str, list[int]] = {}
    for message in live:
        by_project.setdefault(message["task_id"], []).append(message["payload"]["seq"])
    assert by_project == {
        str(trains.pk): [trains_seq],
        str(ferries.pk): [ferries_seq],
        str(later.pk): [1],
    }
    assert next(m for m in live if m["task_id"] == str(trains.pk))["payload"]["message"] == (
        "trains moves"
    )


def test_star_resumes_each_project_after_the_seqs_the_client_has(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    trains, ferries = make_project(title="Night trains"), make_project(title="Ferries")
    had = {str(trains.pk): trains.version, str(ferries.pk): ferries.version}
    missed = [_write(trains, "one"), _write(trains, "two")]
    ferries_missed = _write(ferries, "three")
    later = make_project(title="Made while away")

    for since in (had, CursorMap(had).token()):  # a map, or the token of `GET events`
        with _socket(asgi_server, alice) as socket:
            assert _receive(socket)["type"] == "connected"
            socket.send(json.dumps({"action": "subscribe", "task_id": "*", "since": since}))
            replay = _until(socket, "ready")[1:-1]
        by_project: dict[str, list[int]] = {}
        for message in replay:
            by_project.setdefault(message["task_id"], []).append(message["payload"]["seq"])
        assert by_project == {
            str(trains.pk): missed,
            str(ferries.pk): [ferries_missed],
            str(later.pk): [1],
        }


def test_star_refuses_a_bad_since_and_can_be_left(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    with _socket(asgi_server, alice) as socket:
        assert _receive(socket)["type"] == "connected"
        for since in ("not a token", {"nope": 1}, {str(project.pk): -1}, 7):
            socket.send(json.dumps({"action": "subscribe", "task_id": "*", "since": since}))
            refused = _receive(socket)
            assert refused["type"] == "error" and refused["payload"]["code"] == "invalid"
            assert refused["task_id"] == "*"
        socket.send(json.dumps({"action": "subscribe", "task_id": "*"}))
        _until(socket, "ready")
        socket.send(json.dumps({"action": "unsubscribe", "task_id": "*"}))
        left = _receive(socket)
        assert left == {"type": "unsubscribed", "task_id": "*", "payload": {"topics": []}}
        _write(project, "nobody listens")
        _settle(socket)  # the pong comes, no event before it
