from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django_q.brokers import get_broker
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects import lifecycle
from projects.models import VideoProject

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


def _client_for(user: User) -> APIClient:
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
    return _client_for(alice)


@pytest.fixture
def charlie_api(charlie: User) -> APIClient:
    return _client_for(charlie)


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
        "Q_WORKERS": "1",
    }
    log = (tmp_path / "qcluster.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
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
