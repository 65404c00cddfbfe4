"""Settings come from the environment, and a server refuses to start on the development secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from videocreation.middleware import StaticFilesMiddleware

ROOT = Path(__file__).resolve().parent.parent


def start_web_app(**env: str) -> subprocess.CompletedProcess[str]:
    """Import the ASGI application as uvicorn would, in a fresh process with this environment."""
    clean = {key: value for key, value in os.environ.items() if key not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", "import videocreation.asgi"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_web_server_refuses_the_development_secret() -> None:
    refused = start_web_app()

    assert refused.returncode != 0
    assert "SECRET_KEY is not set" in refused.stderr


def test_the_web_server_starts_with_a_secret_of_its_own() -> None:
    assert start_web_app(SECRET_KEY="a-long-random-production-secret").returncode == 0


def test_debug_mode_may_use_the_development_secret() -> None:
    assert start_web_app(DEBUG="1").returncode == 0


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("DEBUG", "maybe", "DEBUG must be a boolean"),
        ("JOB_TIME_LIMIT", "soon", "JOB_TIME_LIMIT must be a whole number"),
        ("JOB_TIME_LIMIT", "1", "JOB_TIME_LIMIT must be at least 10"),
        ("Q_WORKERS", "0", "Q_WORKERS must be at least 1"),
    ],
)
def test_a_bad_setting_is_refused_with_a_clear_message(
    name: str, value: str, complaint: str
) -> None:
    refused = start_web_app(SECRET_KEY="s", **{name: value})

    assert refused.returncode != 0
    assert complaint in refused.stderr


def test_static_files_keep_async_requests_on_the_event_loop() -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("the status")

    middleware = StaticFilesMiddleware(view)

    assert iscoroutinefunction(middleware), "a sync middleware would hop threads per request"
    request = RequestFactory().get("/static/creator/creator.css")
    static = async_to_sync(middleware)(request)
    assert static.status_code == 200
    assert static["Content-Type"].startswith("text/css")
    status = async_to_sync(middleware)(RequestFactory().get("/api/video-creation/stats"))
    assert status.content == b"the status"


def test_an_unanswering_postgresql_fails_a_connection_within_the_connect_timeout() -> None:
    # A server that takes the TCP connection and never answers, as a hung host would:
    # /healthz and every request must fail in DATABASE_CONNECT_TIMEOUT, not hang.
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        code = (
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'videocreation.settings';"
            "django.setup(); from django.db import connection\n"
            "try:\n    connection.ensure_connection()\nexcept Exception as error:\n"
            "    print(type(error).__name__)"
        )
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={
                **os.environ,
                "DEBUG": "1",
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/nothing",
                "DATABASE_CONNECT_TIMEOUT": "2",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - began

    assert "OperationalError" in done.stdout, done.stderr
    assert took < 20  # Django's setup and the 2 s timeout, not minutes
