"""Server-Sent Events and long-poll against a live uvicorn process and a real worker.

Each test reads the stream as a program would (httpx), and checks the promise
every transport makes: the `seq` numbers a client sees run from where it
started to the job's last event with no gap and no repeat, across a client
that drops off and a web server that restarts.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Q
from rest_framework.authtoken.models import Token

from projects import progress
from projects.bus import Bus, CommitWatcher, wake_up
from projects.models import EventKind, ProgressEvent, VideoProject
from tests.conftest import WEB_APP_NAME, AsgiServer
from tests.live import assert_each_once, job_over, long_render
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

STREAMS = 30
BUSES = ["poll", "redis"] if settings.IS_SQLITE else ["postgres", "redis"]


@pytest.fixture(params=BUSES if settings.REDIS_URL else BUSES[:1])
def event_bus(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the worker and the web server with each wake-up this database can use."""
    monkeypatch.setenv("EVENT_BUS", request.param)
    return request.param


@dataclass
class Event:
    seq: int
    kind: str
    data: dict[str, Any]


def _events(response: httpx.Response) -> Iterator[Event | str]:
    """Parse `text/event-stream`: yield each event, and each comment line as a string."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield line
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif "data" in fields:
            yield Event(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            fields = {}
        else:
            fields = {}


def _headers(user: User, **extra: str) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}", **extra}


def _events_url(server: AsgiServer, project: VideoProject) -> str:
    return f"{server.url}/api/video-creation/projects/{project.pk}/events"


def _start(server: AsgiServer, user: User, project: VideoProject, job: str) -> None:
    url = f"{server.url}/api/video-creation/projects/{project.pk}/{job}"
    assert httpx.post(url, headers=_headers(user)).status_code == 202


def _read_until(
    stream: Iterator[Event | str], project: VideoProject, into: list[Event], timeout: float = 60
) -> None:
    """Collect events until the job is over and its last event has arrived."""
    deadline = time.monotonic() + timeout
    for item in stream:
        assert time.monotonic() < deadline, (
            f"no end after {timeout} s; seqs {[e.seq for e in into]}"
        )
        if isinstance(item, Event):
            into.append(item)
            if job_over(project) and item.seq >= project.version:
                return
    raise AssertionError(f"The stream ended early; last seq {into[-1].seq if into else None}")


def test_a_new_stream_starts_with_the_status_then_every_change_of_the_job(
    event_bus: str, qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    received: list[Event] = []
    with httpx.stream(
        "GET", _events_url(asgi_server, project), headers=_headers(alice), timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = _events(response)
        first = next(item for item in stream if isinstance(item, Event))
        assert (first.kind, first.seq) == ("status", project.version)
        assert first.data["status"] == "DRAFT" and first.data["seq"] == first.seq
        assert first.data["id"] == str(project.pk)
        _start(asgi_server, alice, project, "script")
        _read_until(stream, project, received)

    assert_each_once([event.seq for event in received], first.seq + 1, project.version)
    kinds = {event.kind for event in received}
    assert {"status", "progress", "log"} <= kinds
    progress = [event.data["progress"] for event in received if "progress" in event.data]
    assert progress == sorted(progress) and progress[-1] == 100
    last = received[-1]
    assert last.kind == "status" and last.data["status"] == "DRAFT"
    assert len(last.data["scriptData"]["scenes"]) == project.scene_count


def test_a_client_cut_off_mid_job_resumes_with_last_event_id_and_misses_nothing(
    event_bus: str,
    qcluster: Any,
    asgi_server: AsgiServer,
    alice: User,
    scripted_project: VideoProject,
) -> None:
    project = scripted_project
    url = _events_url(asgi_server, project)
    before: list[Event] = []
    with httpx.stream("GET", url, headers=_headers(alice), timeout=20) as response:
        stream = _events(response)
        first = next(item for item in stream if isinstance(item, Event))
        _start(asgi_server, alice, project, "render")
        for item in stream:
            if isinstance(item, Event):
                before.append(item)
                if item.kind == "progress" and item.data["progress"] > 0:
                    break
    # Gone for a while: the job moves on without this client.
    cut_at = before[-1].seq
    wait_for(lambda: job_over(project) or project.version > cut_at + 3, "the job to move on")

    after: list[Event] = []
    headers = _headers(alice, **{"Last-Event-ID": str(cut_at)})
    with httpx.stream("GET", url, headers=headers, timeout=20) as response:
        _read_until(_events(response), project, after)

    assert after[0].seq == cut_at + 1, "a resumed stream replays; it does not restart"
    assert_each_once([event.seq for event in before + after], first.seq + 1, project.version)
    assert after[-1].data["status"] == "COMPLETED"
    assert after[-1].data["videoUrl"]


def test_the_stream_survives_a_restart_of_the_web_server_mid_job(
    event_bus: str,
    qcluster: Any,
    asgi_server: AsgiServer,
    alice: User,
    make_project: Any,
) -> None:
    project = long_render(make_project)
    received: list[Event] = []
    started = threading.Event()
    cursor: int | None = None
    opened = 0
    first_server = asgi_server.process.pid if asgi_server.process else None

    def restart_once_the_job_runs() -> None:
        started.wait(30)
        asgi_server.restart()

    restarter = threading.Thread(target=restart_once_the_job_runs)
    restarter.start()
    deadline = time.monotonic() + 90
    try:
        while not (job_over(project) and cursor == project.version):
            assert time.monotonic() < deadline, f"no end after 90 s; seqs {len(received)}"
            extra = {} if cursor is None else {"Last-Event-ID": str(cursor)}
            try:
                opened += 1
                with httpx.stream(
                    "GET",
                    _events_url(asgi_server, project),
                    headers=_headers(alice, **extra),
                    timeout=20,
                ) as response:
                    for item in _events(response):
                        if not isinstance(item, Event):
                            continue
                        received.append(item)
                        cursor = item.seq
                        if len(received) == 1:
                            _start(asgi_server, alice, project, "render")
                        if item.kind == "progress" and item.data["progress"] > 0:
                            started.set()
                        if job_over(project) and cursor == project.version:
                            break
            except httpx.TransportError:
                wait_for(asgi_server.serving, "the web server to come back")
    finally:
        started.set()
        restarter.join()

    assert asgi_server.process and asgi_server.process.pid != first_server
    assert opened >= 2, "the client had to reconnect"
    assert_each_once([event.seq for event in received], received[0].seq, project.version)
    assert received[-1].data["status"] == "COMPLETED"


def test_a_resumed_stream_also_takes_its_cursor_from_the_query_string(
    asgi_server: AsgiServer, alice: User, scripted_project: VideoProject
) -> None:
    project = scripted_project
    url = f"{_events_url(asgi_server, project)}?lastEventId=0"
    with httpx.stream("GET", url, headers=_headers(alice), timeout=20) as response:
        replayed = []
        for item in _events(response):
            if isinstance(item, Event):
                replayed.append(item.seq)
            if replayed and replayed[-1] == project.version:
                break
    assert replayed == list(range(1, project.version + 1))


def test_an_idle_stream_sends_heartbeats_and_ends_after_its_time(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    asgi_server.restart(SSE_HEARTBEAT_SECONDS="0.2", SSE_MAX_SECONDS="1.5")
    project = make_project()
    with httpx.stream(
        "GET", _events_url(asgi_server, project), headers=_headers(alice), timeout=10
    ) as response:
        text = response.read().decode()
    assert text.startswith("retry: 3000\n\n")
    assert text.count(": heartbeat\n\n") >= 3
    assert text.count("event: status") == 1


def test_streams_are_only_for_the_owner(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    project = make_project(owner=alice)
    url = _events_url(asgi_server, project)
    nobody = httpx.get(url)
    assert nobody.status_code == 401
    assert nobody.json()["code"] == "not_authenticated"
    outsider = httpx.get(url, headers=_headers(charlie))
    assert outsider.status_code == 404
    assert outsider.json() == {
        "detail": "No project with this id belongs to you.",
        "code": "not_found",
    }
    bad_token = httpx.get(url, headers={"Authorization": "Token nope"})
    assert bad_token.status_code == 401
    bad_cursor = httpx.get(url, headers=_headers(alice, **{"Last-Event-ID": "yesterday"}))
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["fields"] == {"lastEventId": ["A valid integer is required."]}


def test_long_poll_answers_when_the_job_changes_the_project(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    status_url = f"{asgi_server.url}/api/video-creation/projects/{project.pk}/status"
    headers = _headers(alice)

    at_once = httpx.get(f"{status_url}?wait=30&since={project.version - 1}", headers=headers)
    assert at_once.json()["version"] == project.version

    answers: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            httpx.get(f"{status_url}?wait=30&since={project.version}", headers=headers, timeout=40)
        )
    )
    began = time.monotonic()
    waiter.start()
    _start(asgi_server, alice, project, "script")
    waiter.join(40)
    took = time.monotonic() - began
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["version"] > project.version
    assert answers[0].json()["status"] == "GENERATING_SCRIPT" or answers[0].json()["scriptData"]
    assert took < 10, f"the long-poll answered only after {took:.1f} s"
    assert answers[0].headers["etag"] == f'"{project.pk}-{answers[0].json()["version"]}"'


def test_long_poll_answers_unchanged_after_the_wait_and_refuses_bad_waits(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    status_url = f"{asgi_server.url}/api/video-creation/projects/{project.pk}/status"
    began = time.monotonic()
    quiet = httpx.get(f"{status_url}?wait=0.5&since={project.version}", headers=_headers(alice))
    assert 0.5 <= time.monotonic() - began < 5
    assert quiet.status_code == 200 and quiet.json()["version"] == project.version

    too_long = httpx.get(f"{status_url}?wait=61", headers=_headers(alice))
    assert too_long.status_code == 400
    assert too_long.json()["code"] == "invalid" and "wait" in too_long.json()["fields"]
    unknown = httpx.get(f"{status_url}?wiat=5", headers=_headers(alice))
    assert unknown.status_code == 400


def test_staff_see_every_connected_stream_by_user_and_by_project(
    asgi_server: AsgiServer, alice: User, make_project: Any, django_user_model: Any
) -> None:
    staff = django_user_model.objects.create_user("sam", password="sam-password-1", is_staff=True)
    project = make_project()
    active_url = f"{asgi_server.url}/api/video-creation/active"
    assert httpx.get(active_url, headers=_headers(alice)).status_code == 403

    with httpx.stream(
        "GET", _events_url(asgi_server, project), headers=_headers(alice), timeout=10
    ) as response:
        stream = _events(response)  # held: a dropped generator would close the response
        next(item for item in stream if isinstance(item, Event))
        active = httpx.get(active_url, headers=_headers(staff)).json()
        assert active["total"] == 1
        assert active["byUser"] == [{"user": "alice", "sse": 1, "websocket": 0, "openai": 0}]
        assert active["byProject"] == [
            {"project": str(project.pk), "sse": 1, "websocket": 0, "openai": 0}
        ]

    wait_for(
        lambda: httpx.get(active_url, headers=_headers(staff)).json()["total"] == 0,
        "the closed stream to leave the active list",
        timeout=10,
    )


def _database_connections_of(server: AsgiServer) -> int:
    """How many database connections the web server process holds open right now."""
    assert server.process is not None
    if settings.IS_SQLITE:
        database = Path(settings.DATABASES["default"]["NAME"]).resolve()
        fds = Path(f"/proc/{server.process.pid}/fd").iterdir()
        return sum(1 for fd in fds if fd.resolve() == database)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [WEB_APP_NAME]
        )
        return cursor.fetchone()[0]


def test_waiting_streams_hold_no_database_connection(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    """A watcher costs the database nothing while it waits: PostgreSQL allows ~100 connections."""
    project = make_project()
    with httpx.Client(headers=_headers(alice), timeout=20) as client, ExitStack() as streams:
        readers = []
        url = _events_url(asgi_server, project)
        for _ in range(STREAMS):
            response = streams.enter_context(client.stream("GET", url))
            reader = _events(response)
            assert next(item for item in reader if isinstance(item, Event)).seq == project.version
            readers.append(reader)
        # Not one per stream: the bus's own two (its reads, and its PostgreSQL listener
        # or its read-only SQLite commit watcher), and the one of the thread that served
        # the requests, kept for the next (CONN_MAX_AGE).
        wait_for(
            lambda: _database_connections_of(asgi_server) <= 3,
            f"{STREAMS} waiting streams to give their database connections back",
            timeout=10,
        )

        written = progress.write(
            project.pk,
            expect=Q(),
            fields={"progress_message": "Still here"},
            events=[(EventKind.PROGRESS, {})],
        )
        assert written is not None
        for reader in readers:
            event = next(item for item in reader if isinstance(item, Event))
            assert event.seq == written.version and event.data["progressMessage"] == "Still here"


def _threads_of(server: AsgiServer) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def test_waiting_streams_hold_no_thread(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    """Django's ASGI handler would keep a thread per stream for the stream's whole life."""
    project = make_project()
    url = _events_url(asgi_server, project)
    with httpx.Client(headers=_headers(alice), timeout=20) as client, ExitStack() as streams:

        def open_one() -> Iterator[Event | str]:
            reader = _events(streams.enter_context(client.stream("GET", url)))
            assert next(item for item in reader if isinstance(item, Event)).seq == project.version
            return reader

        readers = [open_one()]  # the bus, and any thread the process starts once, are up
        before = _threads_of(asgi_server)
        readers += [open_one() for _ in range(STREAMS)]
        during = _threads_of(asgi_server)

    assert during - before < STREAMS // 3, f"{during - before} threads for {STREAMS} streams"


def _write(project: VideoProject, message: str) -> VideoProject:
    """A progress event through the one write path, as a reporter makes it."""
    written = progress.write(
        project.pk,
        expect=Q(),
        fields={"progress_message": message},
        events=[(EventKind.PROGRESS, {})],
    )
    assert written is not None
    return written


def test_a_write_reaches_a_stream_at_once_not_at_the_next_poll(
    event_bus: str,
    settings: Any,
    asgi_server: AsgiServer,
    alice: User,
    make_project: Any,
) -> None:
    """Each bus hears a commit by itself: NOTIFY, Redis, or on SQLite its commit watcher."""
    settings.EVENT_BUS = event_bus  # this process writes; it announces as the server listens
    asgi_server.restart(EVENT_POLL_SECONDS="60", EVENT_SAFETY_POLL_SECONDS="60")
    project = make_project()
    with httpx.stream(
        "GET", _events_url(asgi_server, project), headers=_headers(alice), timeout=20
    ) as response:
        stream = _events(response)
        assert next(item for item in stream if isinstance(item, Event)).seq == project.version
        began = time.monotonic()
        written = _write(project, "At once")
        event = next(item for item in stream if isinstance(item, Event))
        took = time.monotonic() - began

    assert (event.seq, event.data["progressMessage"]) == (written.version, "At once")
    assert took < 5, f"the event took {took:.1f} s: it waited for a poll (60 s here)"


class _QuietBus(Bus):
    """A bus that hears only the wake-ups a test hands it: no listener, no poll."""

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._fan_out())


def _carried(project: VideoProject, *seqs: int) -> str:
    rows = ProgressEvent.objects.filter(project=project, seq__in=seqs).order_by("seq")
    return wake_up(project.pk, [row.to_dict() for row in rows])


def test_a_wake_up_hands_on_the_events_it_carries_only_when_they_continue_the_cursor(
    make_project: Any,
) -> None:
    project = make_project()
    key = str(project.pk)

    async def scenario() -> None:
        bus = _QuietBus()
        try:
            watching = await bus.subscribe(project.pk)
            also = await bus.subscribe(project.pk)
            first = await sync_to_async(_write)(project, "one")
            carried = await sync_to_async(_carried)(project, first.version)
            assert carried.startswith(f"{key} [")

            bus.heard(carried)
            events, _ = watching.take()
            assert [event["seq"] for event in events] == [first.version]
            assert events[0]["payload"]["progressMessage"] == "one"
            assert also.take()[0][0] is events[0], "one object for every subscriber"
            assert bus.reads == 0, "carried events need no read of the log"

            bus.heard(carried)  # a late copy of what was handed on
            assert watching.take() == ([], False) and bus.reads == 0

            await sync_to_async(_write)(project, "two")
            third = await sync_to_async(_write)(project, "three")
            bus.heard(await sync_to_async(_carried)(project, third.version))  # two is missing
            await watching.wait(10)
            events, _ = watching.take()
            assert [event["seq"] for event in events] == [third.version - 1, third.version]
            assert bus.reads == 1, "a gap is read from the log"

            bus.heard(await sync_to_async(_carried)(project, third.version - 1))  # reordered
            bus.heard(f"{key} not json")
            await watching.wait(0.2)
            assert watching.take() == ([], False)
        finally:
            await bus.close()

    async_to_sync(scenario)()


def test_a_wake_up_too_big_for_notify_carries_only_the_project() -> None:
    line = {"seq": 7, "kind": "log", "payload": {"line": "x" * 9000}, "createdAt": None}
    assert wake_up("p-1", [line]) == "p-1"
    assert wake_up("p-1", []) == "p-1"


@pytest.mark.django_db(transaction=False)
def test_the_commit_watcher_sees_each_commit_through_wal_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "watched.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE events (seq INTEGER)")
    watcher = CommitWatcher(path)
    try:
        watcher.changed()
        assert not watcher.changed(), "nothing was committed"
        for seq, checkpoint in enumerate(["PASSIVE", "RESTART", "TRUNCATE", "FULL"]):
            writer.execute("INSERT INTO events VALUES (?)", [seq])
            assert watcher.changed(), f"the commit of {seq} (after a {checkpoint} checkpoint)"
            assert not watcher.changed()
            writer.execute(f"PRAGMA wal_checkpoint({checkpoint})")
            watcher.changed()  # a checkpoint may count as a change; no harm
    finally:
        watcher.close()
        writer.close()
