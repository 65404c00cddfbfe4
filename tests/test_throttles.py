"""Limits: per-user rates on creates and starts, the sign-in lockout, the cap on open streams.

The suite runs with generous limits (tests/conftest.py `generous_limits`); each
test here lowers the one it is about.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from projects.api.throttles import CreateThrottle, StartThrottle
from projects.models import LiveClient, VideoProject, WebSocketSession
from tests.conftest import BRIEF, AsgiServer, database_url_for_children
from tests.waiting import wait_for
from videocreation.settings import env_rate

PROJECTS = "/api/video-creation/projects"


@pytest.fixture
def fresh_throttles(alice: User, charlie: User) -> None:
    """Forget earlier histories: a Redis cache outlives test runs, and user ids repeat."""
    scopes = (CreateThrottle.scope, StartThrottle.scope)
    cache.delete_many(
        [f"throttle_{scope}_{user.pk}" for scope in scopes for user in (alice, charlie)]
    )


def _bearer(user: User) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Bearer {token.key}"}


# --- rates -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_create_past_the_rate_is_refused_with_retry_after_and_creates_nothing(
    settings: Any, fresh_throttles: None, alice_api: APIClient
) -> None:
    settings.THROTTLE_CREATE_RATE = "2/min"

    assert [alice_api.post(PROJECTS, BRIEF).status_code for _ in range(2)] == [201, 201]
    refused = alice_api.post(PROJECTS, BRIEF)

    assert refused.status_code == 429
    wait = int(refused["Retry-After"])
    assert 1 <= wait <= 60
    assert refused.json() == {
        "detail": f"Too many requests; try again in {wait} second{'s' if wait != 1 else ''}.",
        "code": "throttled",
    }
    assert VideoProject.objects.count() == 2
    assert alice_api.get(PROJECTS).status_code == 200, "listing is not a create"


@pytest.mark.django_db
def test_retry_after_is_when_the_oldest_create_leaves_the_window_and_then_one_gets_in(
    settings: Any, fresh_throttles: None, alice_api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.THROTTLE_CREATE_RATE = "2/min"
    clock = [1_000.0]
    monkeypatch.setattr(CreateThrottle, "timer", staticmethod(lambda: clock[0]))

    assert alice_api.post(PROJECTS, BRIEF).status_code == 201
    clock[0] += 10
    assert alice_api.post(PROJECTS, BRIEF).status_code == 201
    clock[0] += 10
    refused = alice_api.post(PROJECTS, BRIEF)
    assert (refused.status_code, refused["Retry-After"]) == (429, "40")

    clock[0] += 40.5
    assert alice_api.post(PROJECTS, BRIEF).status_code == 201
    assert VideoProject.objects.count() == 3


@pytest.mark.django_db
def test_starts_are_throttled_per_user_and_editing_a_script_is_not(
    settings: Any,
    fresh_throttles: None,
    alice: User,
    charlie: User,
    alice_api: APIClient,
    charlie_api: APIClient,
    make_project: Callable[..., VideoProject],
    scripted_project: VideoProject,
) -> None:
    settings.THROTTLE_START_RATE = "1/min"
    draft = make_project()

    assert alice_api.post(f"{PROJECTS}/{draft.pk}/script").status_code == 202
    refused = alice_api.post(f"{PROJECTS}/{scripted_project.pk}/render")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) >= 1
    scripted_project.refresh_from_db()
    assert scripted_project.status == "DRAFT", "a refused start starts nothing"

    script = {"scriptData": {**scripted_project.script_data, "title": "Edited"}}
    assert (
        alice_api.patch(
            f"{PROJECTS}/{scripted_project.pk}/script", script, format="json"
        ).status_code
        == 200
    )
    charlies = make_project(owner=charlie)
    assert charlie_api.post(f"{PROJECTS}/{charlies.pk}/script").status_code == 202


@pytest.mark.django_db
def test_chat_completions_share_the_start_rate_and_answer_in_openais_shape(
    settings: Any,
    fresh_throttles: None,
    alice: User,
    alice_api: APIClient,
    make_project: Callable[..., VideoProject],
) -> None:
    settings.THROTTLE_START_RATE = "1/min"
    assert alice_api.post(f"{PROJECTS}/{make_project().pk}/script").status_code == 202
    body = {
        "model": "videocreation-16x9",
        "messages": [{"role": "user", "content": BRIEF["brief"]}],
        "stream": True,
    }

    refused = Client().post(
        "/v1/chat/completions", body, content_type="application/json", headers=_bearer(alice)
    )

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "requests",
        "rate_limit_exceeded",
        None,
    )
    wait = int(refused["retry-after"])
    assert f"try again in {wait}s" in error["message"]
    assert refused["x-should-retry"] == "true", "nothing started: asking again later is right"
    assert VideoProject.objects.count() == 1


# --- sign-in lockout ------------------------------------------------------------

LOGIN = "/accounts/login/"


def _sign_in(client: Client, path: str, username: str, password: str, **extra: Any) -> Any:
    return client.post(path, {"username": username, "password": password}, **extra)


@pytest.mark.django_db
def test_five_failed_sign_ins_lock_that_username_from_that_address_even_with_the_password(
    settings: Any, alice: User, charlie: User
) -> None:
    browser = Client()
    answers = [_sign_in(browser, LOGIN, "alice", "wrong").status_code for _ in range(5)]
    locked = _sign_in(browser, LOGIN, "alice", "alice-password-1")

    assert answers == [200, 200, 200, 200, 429]
    assert locked.status_code == 429
    assert locked["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    assert b"Too many sign-in attempts" in locked.content
    assert "_auth_user_id" not in browser.session
    elsewhere = _sign_in(Client(), LOGIN, "alice", "alice-password-1", REMOTE_ADDR="192.0.2.7")
    assert elsewhere.status_code == 302, "the same username from another address signs in"
    assert _sign_in(Client(), LOGIN, "charlie", "charlie-password-1").status_code == 302


@pytest.mark.django_db
def test_a_successful_sign_in_clears_the_failures(alice: User) -> None:
    browser = Client()
    for _ in range(4):
        assert _sign_in(browser, LOGIN, "alice", "wrong").status_code == 200
    assert _sign_in(browser, LOGIN, "alice", "alice-password-1").status_code == 302

    again = [_sign_in(Client(), LOGIN, "alice", "wrong").status_code for _ in range(4)]
    assert again == [200] * 4


@pytest.mark.django_db
def test_the_admin_sign_in_locks_out_the_same_way_and_shares_the_count(
    django_user_model: type[User],
) -> None:
    django_user_model.objects.create_user("sam", password="sam-password-1", is_staff=True)
    browser = Client()
    answers = [_sign_in(browser, "/admin/login/", "sam", "wrong").status_code for _ in range(5)]
    assert answers == [200, 200, 200, 200, 429]

    locked = _sign_in(browser, "/admin/login/", "sam", "sam-password-1")

    assert locked.status_code == 429
    assert b"Too many sign-in attempts" in locked.content
    assert _sign_in(browser, LOGIN, "sam", "sam-password-1").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_lockout_answers_the_same_through_the_asgi_server(
    settings: Any, asgi_server: AsgiServer, alice: User
) -> None:
    with httpx.Client(base_url=asgi_server.url, timeout=20) as browser:
        browser.get(LOGIN)
        form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"], "username": "alice"}
        answers = [
            browser.post(LOGIN, data=form | {"password": "wrong"}).status_code for _ in range(5)
        ]
        locked = browser.post(LOGIN, data=form | {"password": "alice-password-1"})

    assert answers == [200, 200, 200, 200, 429]
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    assert "Too many sign-in attempts" in locked.text


@pytest.mark.django_db
def test_api_tokens_are_not_sign_ins_and_are_not_locked_out(
    alice: User, alice_api: APIClient
) -> None:
    for _ in range(5):
        _sign_in(Client(), LOGIN, "alice", "wrong")

    assert alice_api.get(PROJECTS).status_code == 200


# --- the cap on open streams (real servers) -------------------------------------


def _events_url(server: AsgiServer, project: VideoProject) -> str:
    return f"{server.url}/api/video-creation/projects/{project.pk}/events"


def _token(user: User) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


def _open_streams(user: User) -> int:
    return LiveClient.objects.filter(user=user).count()


@pytest.fixture
def capped_server(asgi_server: AsgiServer) -> AsgiServer:
    return asgi_server.restart(MAX_STREAMS_PER_USER="2")


@pytest.mark.django_db(transaction=True)
def test_past_the_cap_sse_websocket_and_openai_streams_are_refused_until_one_closes(
    capped_server: AsgiServer,
    alice: User,
    charlie: User,
    make_project: Callable[..., VideoProject],
) -> None:
    project = make_project()
    url = _events_url(capped_server, project)
    with httpx.Client(headers=_token(alice), timeout=20) as client, ExitStack() as streams:
        first = streams.enter_context(client.stream("GET", url))
        second = streams.enter_context(client.stream("GET", url))
        assert (first.status_code, second.status_code) == (200, 200)

        third = client.get(url)
        assert third.status_code == 429
        assert third.json()["code"] == "too_many_streams"

        with (
            pytest.raises(ConnectionClosed) as closed,
            connect(
                f"{capped_server.ws_url}/ws/progress/", additional_headers=_token(alice)
            ) as socket,
        ):
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4429
        assert "streams open" in closed.value.rcvd.reason
        assert not WebSocketSession.objects.filter(user=alice).exists()

        openai_stream = client.post(
            f"{capped_server.url}/v1/chat/completions",
            json={
                "model": "videocreation-16x9",
                "messages": [{"role": "user", "content": BRIEF["brief"]}],
                "stream": True,
            },
            headers=_bearer(alice),
        )
        assert openai_stream.status_code == 429
        error = openai_stream.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "too_many_streams")
        assert VideoProject.objects.count() == 1, "a refused stream starts no video"

        with httpx.stream(
            "GET", _events_url(capped_server, make_project(owner=charlie)), headers=_token(charlie)
        ) as his:
            assert his.status_code == 200

        assert _open_streams(alice) == 2
        first.close()
        wait_for(lambda: _open_streams(alice) == 1, "the closed stream to be forgotten")
        with client.stream("GET", url) as next_one:
            assert next_one.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_opens_racing_in_two_web_processes_never_pass_the_cap(
    capped_server: AsgiServer,
    alice: User,
    make_project: Callable[..., VideoProject],
    tmp_path: Path,
) -> None:
    other = AsgiServer(tmp_path / "second-web.log", dict(capped_server.env)).start()
    try:
        project = make_project()
        urls = [_events_url(server, project) for server in (capped_server, other) for _ in range(4)]
        statuses = _open_at_once(urls, _token(alice))
    finally:
        other.stop()

    assert sorted(statuses) == [200, 200] + [429] * 6


def _open_at_once(urls: list[str], headers: dict[str, str]) -> list[int]:
    """Open one stream per URL, all at the same moment; hold them until all have answered."""
    barrier = threading.Barrier(len(urls))
    answered = threading.Barrier(len(urls) + 1)
    statuses: list[int] = []

    def open_one(url: str) -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            barrier.wait(timeout=30)
            with client.stream("GET", url) as response:
                statuses.append(response.status_code)
                answered.wait(timeout=60)

    threads = [threading.Thread(target=open_one, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    answered.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=30)
    return statuses


@pytest.mark.parametrize(
    ("raw", "rate"),
    [("30/min", "30/min"), ("5/s", "5/s"), ("100/hours", "100/hours"), ("off", None), ("", None)],
)
def test_a_rate_setting_takes_drfs_periods_and_off(
    raw: str, rate: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THROTTLE_TEST_RATE", raw)
    assert env_rate("THROTTLE_TEST_RATE", "30/min") == rate


@pytest.mark.parametrize("raw", ["30/month", "0/min", "thirty/min", "30"])
def test_a_rate_drf_would_misread_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # DRF reads only the period's first letter: 30/month would mean 30 a minute.
    monkeypatch.setenv("THROTTLE_TEST_RATE", raw)
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_TEST_RATE"):
        env_rate("THROTTLE_TEST_RATE", "30/min")


@pytest.mark.django_db(transaction=True)
def test_web_processes_share_one_history_of_a_users_creates(
    fresh_throttles: None, alice: User, media_root: Path, tmp_path: Path
) -> None:
    """`make run` starts a web process per core: the rate is the user's, not each process's."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_children(),
        "MEDIA_ROOT": str(media_root),
        "DEBUG": "0",
        "THROTTLE_CREATE_RATE": "2/min",
    }
    with ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            server = AsgiServer(tmp_path / f"{name}.log", dict(env)).start()
            stack.callback(server.stop)
            servers.append(server)
        answers = [
            httpx.post(f"{server.url}{PROJECTS}", json=BRIEF, headers=_bearer(alice), timeout=10)
            for server in (*servers, servers[0])
        ]
    assert [answer.status_code for answer in answers] == [201, 201, 429]
    assert VideoProject.objects.filter(owner=alice).count() == 2
