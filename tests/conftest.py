from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django_q.brokers import get_broker
from django_q.conf import Conf
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects import lifecycle
from projects.models import VideoProject
from videocreation.settings import DEVELOPMENT_SECRET_KEY

# django-q2 signs every task with SECRET_KEY, and a web server without DEBUG refuses
# the development key: the test process and every server and worker it starts share
# one key of their own, as the processes of one deployment do.
# (django-q2 copied the key into its Conf when it loaded.)
if settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    TEST_SECRET_KEY = "a-secret-for-test-processes-only-0123456789"
    settings.SECRET_KEY = Conf.SECRET_KEY = os.environ["SECRET_KEY"] = TEST_SECRET_KEY

BRIEF = {
    "title": "Night trains of Europe",
    "brief": (
        "A short film about night trains crossing Europe. Sleepers leave Vienna at dusk. "
        "By morning the passengers wake up by the sea."
    ),
    "aspectRatio": "16:9",
    "sceneCount": 2,
    "secondsPerScene": 2,
    "style": "warm, calm",
}


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Any) -> Any:
    # Real hashing costs a quarter second per user; the tests are not about passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# Far above what any test does, in this process and in the servers and workers it
# starts; tests/test_throttles.py lowers them to test the limits themselves.
GENEROUS_LIMITS = {
    "THROTTLE_CREATE_RATE": "10000/min",
    "THROTTLE_START_RATE": "10000/min",
    "MAX_STREAMS_PER_USER": "1000",
}


@pytest.fixture(autouse=True)
def generous_limits(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in GENEROUS_LIMITS.items():
        monkeypatch.setenv(name, value)  # autouse: set before `asgi_server` copies the env
        setattr(settings, name, int(value) if value.isdigit() else value)


def api_client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def charlie(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("charlie", password="charlie-password-1")


@pytest.fixture
def alice_api(alice: User) -> APIClient:
    return api_client_for(alice)


@pytest.fixture
def charlie_api(charlie: User) -> APIClient:
    return api_client_for(charlie)


@pytest.fixture
def make_project(alice: User) -> Callable[..., VideoProject]:
    def make(owner: User | None = None, **overrides: Any) -> VideoProject:
        fields = {
            "title": BRIEF["title"],
            "brief": BRIEF["brief"],
            "aspect_ratio": BRIEF["aspectRatio"],
            "scene_count": BRIEF["sceneCount"],
            "seconds_per_scene": BRIEF["secondsPerScene"],
            "style": BRIEF["style"],
        }
        fields.update(overrides)
        return lifecycle.create_project(owner or alice, fields)

    return make


SCRIPT = {
    "title": "Night trains of Europe",
    "scenes": [
        {"index": 0, "narration": "Sleepers leave Vienna at dusk.", "visual": "Dusk", "seconds": 2},
        {"index": 1, "narration": "Morning by the sea.", "visual": "Sea", "seconds": 2},
    ],
}


@pytest.fixture
def scripted_project(make_project: Callable[..., VideoProject]) -> VideoProject:
    """A draft whose script is written and reviewed, ready to render."""
    return lifecycle.edit_script(make_project(), SCRIPT)


def events_of(project: VideoProject) -> list[Any]:
    return list(project.events.order_by("seq"))


# --- processes the tests start ---------------------------------------------------


def database_url_for_children() -> str:
    """The URL of the database the tests use, for a process started by the tests."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def qcluster(media_root: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    get_broker().purge_queue()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_children(),
        "MEDIA_ROOT": str(media_root),
        "Q_WORKERS": os.environ.get("Q_WORKERS", "1"),  # a test may ask for more
    }
    log = (tmp_path / "qcluster.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield worker
    finally:
        _stop(worker)
        log.close()


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the cluster (it stops its own workers), then kill anything left in its group."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)


WEB_APP_NAME = "videocreation-test-web"


class AsgiServer:
    """A web process (`manage.py web`, one process) as `make run` starts it.

    It reads the tests' database (so its rows must be committed: use
    `django_db(transaction=True)`) and can be stopped and started again on
    the same port, as a deploy restarts a web server.
    """

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = env
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> AsgiServer:
        self.env.update(extra_env)
        command = [sys.executable, "manage.py", "web", "--processes", "1"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--graceful-seconds", "1"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_serving()
        return self

    def _wait_until_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"The web server exited: {self.log_path.read_text()[-2000:]}")
            if self.serving():
                return
            time.sleep(0.05)
        raise AssertionError(f"The web server did not answer in {timeout} s")

    def serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def restart(self, **extra_env: str) -> AsgiServer:
        self.stop()
        return self.start(**extra_env)


@pytest.fixture
def asgi_server(media_root: Path, tmp_path: Path) -> Iterator[AsgiServer]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_children(),
        "MEDIA_ROOT": str(media_root),
        "DEBUG": "0",
        "PGAPPNAME": WEB_APP_NAME,  # libpq names the server's PostgreSQL connections
    }
    server = AsgiServer(tmp_path / "uvicorn.log", env).start()
    try:
        yield server
    finally:
        server.stop()
