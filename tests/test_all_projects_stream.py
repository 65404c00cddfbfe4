"""`GET /api/video-creation/events`: every project of the caller on one SSE stream.

Read as a program reads it (httpx) from a live web process. The promise is the
one of every transport, per project: each project's `seq` numbers run from
where the client stood to the project's last event, in order, once — across a
reconnect with the stream's own cursor token — and a project made after the
stream opened joins it from its first event. Nobody else's project ever shows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.db.models import Q
from rest_framework.authtoken.models import Token

from projects import lifecycle, progress
from projects.cursors import CursorMap, cursors_from, decode_token
from projects.models import EventKind, LiveClient, Step, VideoProject
from tests.conftest import AsgiServer
from tests.live import assert_each_once, job_over

pytestmark = [pytest.mark.django_db(transaction=True)]


@dataclass
class Event:
    token: str
    kind: str
    data: dict[str, Any]

    @property
    def project(self) -> str:
        return self.data["projectId"]

    @property
    def seq(self) -> int:
        return self.data["seq"]


def _events(response: httpx.Response) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif "data" in fields:
            yield Event(fields["id"], fields["event"], json.loads(fields["data"]))
            fields = {}
        else:
            fields = {}


def _headers(user: User, **extra: str) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}", **extra}


def _url(server: AsgiServer) -> str:
    return f"{server.url}/api/video-creation/events"


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


def _until_ready(stream: Iterator[Event]) -> list[Event]:
    """What a stream sends before its `ready` event (the state, or the replay), and `ready`."""
    before = []
    for event in stream:
        before.append(event)
        if event.kind == "ready":
            return before
    raise AssertionError(f"The stream ended before `ready`: {before}")


def _take(stream: Iterator[Event], count: int, timeout: float = 30) -> list[Event]:
    deadline = time.monotonic() + timeout
    taken = []
    for event in stream:
        taken.append(event)
        if len(taken) == count:
            return taken
        assert time.monotonic() < deadline, f"only {len(taken)} of {count} events in {timeout} s"
    raise AssertionError(f"The stream ended after {len(taken)} of {count} events")


def _seqs_by_project(events: list[Event]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in events:
        seqs[event.project].append(event.seq)
    return dict(seqs)


@pytest.mark.worker
def test_one_stream_follows_two_jobs_each_in_order(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    trains = make_project(title="Night trains")
    ferries = make_project(title="Ferries")
    received: list[Event] = []
    with httpx.stream("GET", _url(asgi_server), headers=_headers(alice), timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = _events(response)
        first = _until_ready(stream)
        # The current state of both drafts (newest first), then `ready`.
        assert [(e.kind, e.project, e.seq) for e in first[:2]] == [
            ("status", str(ferries.pk), ferries.version),
            ("status", str(trains.pk), trains.version),
        ]
        assert first[0].data["status"] == "DRAFT" and first[0].data["id"] == str(ferries.pk)
        assert (first[2].kind, first[2].data) == ("ready", {"projects": 2})
        lifecycle.start_job(trains, Step.SCRIPT)
        lifecycle.start_job(ferries, Step.SCRIPT)
        deadline = time.monotonic() + 90
        for event in stream:
            received.append(event)
            if all(_done(received, project) for project in (trains, ferries)):
                break
            assert time.monotonic() < deadline, f"no end after 90 s: {_seqs_by_project(received)}"

    seqs = _seqs_by_project(received)
    assert set(seqs) == {str(trains.pk), str(ferries.pk)}
    for project, started_at in ((trains, first[1].seq), (ferries, first[0].seq)):
        assert_each_once(seqs[str(project.pk)], started_at + 1, project.version)
        last = [e for e in received if e.project == str(project.pk)][-1]
        assert last.kind == "status" and last.data["status"] == "DRAFT"
        assert len(last.data["scriptData"]["scenes"]) == project.scene_count
    kinds = {event.kind for event in received}
    assert {"status", "progress", "log"} <= kinds


def _done(events: list[Event], project: VideoProject) -> bool:
    """The project's job is over and its last event has arrived."""
    seen = max((e.seq for e in events if e.project == str(project.pk)), default=0)
    return job_over(project) and seen == project.version


def test_a_reconnect_with_the_last_id_gets_exactly_what_it_missed_in_every_project(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    trains, ferries = make_project(title="Night trains"), make_project(title="Ferries")
    with httpx.stream("GET", _url(asgi_server), headers=_headers(alice), timeout=30) as response:
        stream = _events(response)
        _until_ready(stream)
        _write(trains, "trains 1")
        _write(ferries, "ferries 1")
        before = _take(stream, 2)
    cut = before[-1].token
    assert decode_token(cut) == {
        str(trains.pk): _version(trains),
        str(ferries.pk): _version(ferries),
    }

    # Gone for a while: both projects move on without this client.
    for number in range(2, 5):
        _write(trains, f"trains {number}")
    _write(ferries, "ferries 2")
    trains.refresh_from_db()
    ferries.refresh_from_db()

    for resume in ({"headers": {"Last-Event-ID": cut}}, {"params": {"since": cut}}):
        headers = _headers(alice, **resume.get("headers", {}))
        with httpx.stream(
            "GET", _url(asgi_server), headers=headers, params=resume.get("params"), timeout=30
        ) as response:
            assert response.status_code == 200
            after = _until_ready(_events(response))
        assert after[-1].kind == "ready"
        missed = _seqs_by_project(after[:-1])
        assert all(event.kind == "progress" for event in after[:-1]), "a replay, not a restart"
        assert missed == {
            str(trains.pk): [trains.version - 2, trains.version - 1, trains.version],
            str(ferries.pk): [ferries.version],
        }
        assert decode_token(after[-1].token) == {
            str(trains.pk): trains.version,
            str(ferries.pk): ferries.version,
        }


def _version(project: VideoProject) -> int:
    project.refresh_from_db()
    return project.version


def test_a_project_made_after_the_stream_opened_joins_it_from_its_first_event(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    trains = make_project(title="Night trains")
    with httpx.stream("GET", _url(asgi_server), headers=_headers(alice), timeout=30) as response:
        stream = _events(response)
        assert [e.kind for e in _until_ready(stream)] == ["status", "ready"]
        later = make_project(title="Made later")
        _write(later, "the new one moves")
        _write(trains, "the old one moves")
        events = _take(stream, 3)

    seqs = _seqs_by_project(events)
    assert seqs == {str(later.pk): [1, 2], str(trains.pk): [_version(trains)]}
    # Order holds within a project, not across them: the new project is found
    # from its first wake-up, so the old one's event may come first.
    first = next(event for event in events if event.project == str(later.pk))
    assert first.kind == "status" and first.data["title"] == "Made later"
    assert decode_token(events[-1].token)[str(later.pk)] == 2


def test_a_reconnect_after_a_project_was_made_replays_it_from_its_first_event(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    trains = make_project(title="Night trains")
    with httpx.stream("GET", _url(asgi_server), headers=_headers(alice), timeout=30) as response:
        token = _until_ready(_events(response))[-1].token
    later = make_project(title="Made while away")
    _write(later, "moving")
    with httpx.stream(
        "GET", _url(asgi_server), headers=_headers(alice, **{"Last-Event-ID": token}), timeout=30
    ) as response:
        replayed = _until_ready(_events(response))
    assert _seqs_by_project(replayed[:-1]) == {str(later.pk): [1, 2]}
    assert decode_token(replayed[-1].token) == {str(trains.pk): _version(trains), str(later.pk): 2}


def test_nobody_elses_projects_ever_appear(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    alices = make_project(owner=alice, title="Alice's")
    with httpx.stream("GET", _url(asgi_server), headers=_headers(charlie), timeout=30) as response:
        stream = _events(response)
        ready = _until_ready(stream)
        assert [e.kind for e in ready] == ["ready"] and ready[0].data == {"projects": 0}
        _write(alices, "not for charlie")
        make_project(owner=alice, title="Alice's second")
        charlies = make_project(owner=charlie, title="Charlie's")
        event = _take(stream, 1)[0]
    assert (event.project, event.seq) == (str(charlies.pk), 1)

    # Alice's ids in a cursor token are no key to her log: they are ignored.
    stolen = CursorMap({str(alices.pk): 0}).token()
    with httpx.stream(
        "GET", _url(asgi_server), headers=_headers(charlie, **{"Last-Event-ID": stolen}), timeout=30
    ) as response:
        replayed = _until_ready(_events(response))
    assert {e.data.get("projectId") for e in replayed[:-1]} == {str(charlies.pk)}
    assert str(alices.pk) not in decode_token(replayed[-1].token)


def test_the_stream_refuses_strangers_and_bad_cursors_clearly(
    asgi_server: AsgiServer, alice: User
) -> None:
    nobody = httpx.get(_url(asgi_server))
    assert nobody.status_code == 401 and nobody.json()["code"] == "not_authenticated"
    assert httpx.get(_url(asgi_server), headers={"Authorization": "Token nope"}).status_code == 401
    for headers, params, field in [
        ({"Last-Event-ID": "17"}, None, "lastEventId"),
        ({"Last-Event-ID": "not a token"}, None, "lastEventId"),
        ({}, {"since": "AQ" + "A" * 10}, "since"),
    ]:
        refused = httpx.get(_url(asgi_server), headers=_headers(alice, **headers), params=params)
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["code"] == "invalid"
        assert body["fields"] == {field: ["This is not a cursor this server gave out."]}
    unknown = httpx.get(_url(asgi_server), headers=_headers(alice), params={"sinse": "AQ"})
    assert unknown.status_code == 400


def test_the_stream_counts_against_the_cap_on_open_streams(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    asgi_server.restart(MAX_STREAMS_PER_USER="1")
    project = make_project()
    with httpx.stream("GET", _url(asgi_server), headers=_headers(alice), timeout=30) as response:
        held = _events(response)  # held: a dropped generator would close the response
        _until_ready(held)
        for url in (
            _url(asgi_server),
            f"{asgi_server.url}/api/video-creation/projects/{project.pk}/events",
        ):
            refused = httpx.get(url, headers=_headers(alice))
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_streams"


def test_the_stream_holds_no_thread_while_it_waits(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    make_project()
    with httpx.Client(headers=_headers(alice), timeout=20) as client, ExitStack() as streams:

        def open_one() -> Iterator[Event]:
            reader = _events(streams.enter_context(client.stream("GET", _url(asgi_server))))
            _until_ready(reader)
            return reader  # held: a dropped generator would close the response

        readers = [open_one()]  # the bus, and any thread the process starts once, are up
        before = _threads_of(asgi_server)
        readers += [open_one() for _ in range(10)]
        during = _threads_of(asgi_server)
        assert _open_streams(alice) == 11
    assert during - before < 4, f"{during - before} threads for 10 streams"


def _open_streams(user: User) -> int:
    return LiveClient.objects.filter(user=user).count()


def _threads_of(server: AsgiServer) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


# --- the cursor token ----------------------------------------------------------------


@pytest.mark.django_db(transaction=False)
def test_a_cursor_token_is_small_and_says_each_projects_seq() -> None:
    seqs = {str(uuid.uuid4()): seq for seq in (0, 1, 127, 128, 16_383, 2**63 - 1)}
    cursors = CursorMap(seqs)
    assert decode_token(cursors.token()) == seqs
    assert decode_token(CursorMap().token()) == {}
    many = CursorMap({str(uuid.uuid4()): 5_000 for _ in range(100)})
    assert len(many.token()) < 100 * 25, "about 24 characters a project"
    project = next(iter(seqs))
    cursors.move(project, 7)
    assert decode_token(cursors.token())[project] == 7
    assert cursors_from({project: 3}) == {project: 3}
    for bad in ["", "AA", "AQ" + "A" * 5, "not a token", "AQ===", 17]:
        with pytest.raises(ValueError):
            cursors_from(bad)
    for bad_map in [{"nope": 1}, {project: -1}, {project: True}, {project: "1"}]:
        with pytest.raises(ValueError):
            cursors_from(bad_map)
