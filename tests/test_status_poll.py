"""The status poll as a web process serves it: a thread pool, kept connections, one query.

A poll is answered by Django's WSGI handler on a pool of threads that keep
their database connections (videocreation/server.py), and a token's caller
is found in the same query as the project. Nothing about the caller is
cached, so a token deleted, a user deactivated or a session signed out stops
working at the very next poll; these tests hold the live server to that.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Q
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects import progress
from projects.models import EventKind, VideoProject
from tests.conftest import AsgiServer
from tests.waiting import wait_for
from videocreation.server import waits

pytestmark = pytest.mark.django_db(transaction=True)


def _status_url(server: AsgiServer, project: VideoProject) -> str:
    return f"{server.url}/api/video-creation/projects/{project.pk}/status"


def _write_progress(project: VideoProject, percent: int) -> None:
    written = progress.write(
        project.pk,
        expect=Q(),
        fields={"progress": percent},
        events=[(EventKind.PROGRESS, {})],
    )
    assert written is not None


def _token(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def test_a_deleted_token_or_a_deactivated_user_is_refused_at_the_next_poll(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    url = _status_url(asgi_server, project)
    with httpx.Client(headers={"Authorization": f"Token {_token(alice)}"}) as poller:
        # Several polls on one kept-alive connection: the pool's threads and their
        # database connections are warm, as they are for a page polling every 3 s.
        for _ in range(5):
            assert poller.get(url).status_code == 200
        Token.objects.filter(user=alice).delete()
        refused = poller.get(url)
        assert refused.status_code == 401
        assert refused.json()["code"] == "authentication_failed"

    new_key = _token(alice)
    with httpx.Client(headers={"Authorization": f"Token {new_key}"}) as poller:
        assert poller.get(url).status_code == 200
        User.objects.filter(pk=alice.pk).update(is_active=False)
        assert poller.get(url).status_code == 401
        User.objects.filter(pk=alice.pk).update(is_active=True)
        assert poller.get(url).status_code == 200


def test_a_signed_out_session_is_refused_at_the_next_poll(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    signed_in = Client()
    signed_in.force_login(alice)
    cookie = signed_in.cookies[settings.SESSION_COOKIE_NAME].value
    with httpx.Client(
        base_url=asgi_server.url, cookies={settings.SESSION_COOKIE_NAME: cookie}
    ) as browser:
        path = f"/api/video-creation/projects/{project.pk}/status"
        assert browser.get(path).status_code == 200
        # Signed out elsewhere (another tab, or an operator ending every session).
        Session.objects.all().delete()
        refused = browser.get(path)
        assert refused.status_code == 401
        assert refused.json()["code"] == "not_authenticated"


def test_an_unchanged_project_answers_304_and_a_change_answers_200(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    url = _status_url(asgi_server, project)
    with httpx.Client(headers={"Authorization": f"Token {_token(alice)}"}) as poller:
        first = poller.get(url)
        etag = first.headers["etag"]
        unchanged = poller.get(url, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.headers["etag"] == etag
        assert unchanged.content == b""

        _write_progress(project, 40)
        changed = poller.get(url, headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.json()["progress"] == 40
        assert changed.headers["etag"] != etag


def test_someone_elses_project_and_bad_tokens_get_the_same_answers_as_before(
    asgi_server: AsgiServer, alice: User, charlie: User, make_project: Any
) -> None:
    project = make_project()
    url = _status_url(asgi_server, project)
    for headers in ({}, {"If-None-Match": f'"{project.pk}-{project.version}"'}):
        as_charlie = httpx.get(
            url, headers={"Authorization": f"Token {_token(charlie)}", **headers}
        )
        assert as_charlie.status_code == 404 and as_charlie.json()["code"] == "not_found"
        wrong = httpx.get(url, headers={"Authorization": "Token not-a-token", **headers})
        assert wrong.status_code == 401
        nobody = httpx.get(url, headers=headers)
        assert nobody.status_code == 401 and nobody.json()["code"] == "not_authenticated"
    malformed = f"{asgi_server.url}/api/video-creation/projects/not-a-uuid/status"
    assert httpx.get(malformed, headers={"Authorization": "Token not-a-token"}).status_code == 401
    mine = httpx.get(malformed, headers={"Authorization": f"Token {_token(alice)}"})
    assert mine.status_code == 404


def test_a_token_poll_reads_the_database_once(alice: User, scripted_project: Any) -> None:
    project = scripted_project
    client = APIClient(headers={"Authorization": f"Token {_token(alice)}"})
    url = f"/api/video-creation/projects/{project.pk}/status"
    with CaptureQueriesContext(connection) as full:
        answer = client.get(url)
    assert answer.status_code == 200
    # The row read with SQL compiled once per thread is the project the ORM reads.
    as_the_orm_reads_it = VideoProject.objects.get(pk=project.pk).to_status_dict()
    assert answer.json() == json.loads(json.dumps(as_the_orm_reads_it, cls=DjangoJSONEncoder))
    assert answer.json()["scriptData"]["scenes"]
    etag = f'"{project.pk}-{project.version}"'
    with CaptureQueriesContext(connection) as unchanged:
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert len(full.captured_queries) == 1, full.captured_queries
    assert len(unchanged.captured_queries) == 1, unchanged.captured_queries
    assert '"version"' in unchanged.captured_queries[0]["sql"]
    assert '"script_data"' not in unchanged.captured_queries[0]["sql"]


def test_polls_are_answered_while_long_polls_and_streams_wait(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    """Waiting clients are on the event loop; they never hold the pool's threads."""
    project = make_project()
    headers = {"Authorization": f"Token {_token(alice)}"}
    url = _status_url(asgi_server, project)
    waiting = 20  # more than the pool's 8 threads
    answered: list[int] = []

    def long_poll() -> None:
        reply = httpx.get(f"{url}?wait=8&since={project.version}", headers=headers, timeout=20)
        answered.append(reply.status_code)

    pollers = [threading.Thread(target=long_poll) for _ in range(waiting)]
    for poller in pollers:
        poller.start()
    try:
        wait_for(
            lambda: _connections_to(asgi_server.port) >= waiting,
            "the long-polls to reach the server",
            timeout=10,
        )
        began = time.monotonic()
        for _ in range(10):
            assert httpx.get(url, headers=headers, timeout=5).status_code == 200
        assert time.monotonic() - began < 4, "polls waited behind the long-polls"
        assert not answered, "the long-polls answered before anything changed"
    finally:
        _write_progress(project, 10)
        for poller in pollers:
            poller.join(20)
    assert answered == [200] * waiting


def _connections_to(port: int) -> int:
    """Established TCP connections to `port` on this machine (both ends are ours)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                count += int(local.rsplit(":", 1)[1], 16) == port and state == "01"
    return count


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/api/video-creation/projects/p/status", b"", False),
        ("/api/video-creation/projects/p/status", b"wait=0", False),
        ("/api/video-creation/projects/p/status", b"wait=0.0&since=3", False),
        ("/api/video-creation/projects/p/status", b"wait=5", True),
        ("/api/video-creation/projects/p/status", b"since=3&wait=0.5", True),
        ("/api/video-creation/projects/p/status", b"wait=", False),
        ("/api/video-creation/projects/p/events", b"", True),
        ("/api/video-creation/events", b"", True),
        ("/api/video-creation/projects/p/video", b"", True),
        ("/api/video-creation/projects/p/scenes/2/preview", b"", True),
        ("/v1/chat/completions", b"", True),
        ("/admin/projects/videoproject/p/video/", b"", True),
        ("/admin/projects/videoproject/p/change/", b"", False),
        ("/api/video-creation/projects", b"", False),
        ("/api/video-creation/projects/p", b"", False),
        ("/admin/", b"", False),
        ("/", b"", False),
    ],
)
def test_requests_that_may_wait_go_to_the_event_loop(
    path: str, query: bytes, expected: bool
) -> None:
    assert waits({"type": "http", "path": path, "query_string": query}) is expected
