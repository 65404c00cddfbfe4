"""`/healthz` for load balancers, and the workers' heartbeats an operator can check."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from projects.models import WorkerHeartbeat
from tests.conftest import AsgiServer, database_url_for_children
from tests.waiting import wait_for
from videocreation import health

# A load balancer probes a web process by its address, not by the site's name.
PROBE_HOST = "10.1.2.3"


@pytest.fixture(autouse=True)
def fresh_migration_answer() -> Iterator[None]:
    health.forget_migrations()
    yield
    health.forget_migrations()


OPERATOR_TOKEN = "an-operator-token-for-the-tests"


@pytest.fixture(autouse=True)
def operator_token(settings: Any) -> None:
    settings.METRICS_TOKEN = OPERATOR_TOKEN


def probe(
    client: Client, path: str = "/healthz", *, operator: bool = True
) -> tuple[int, dict[str, Any]]:
    """A probe; the operator's (with METRICS_TOKEN) sees hosts, pids and the database's words."""
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"} if operator else {}
    response = client.get(path, HTTP_HOST=PROBE_HOST, headers=headers)
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


@pytest.mark.django_db
def test_healthz_is_ok_when_the_database_answers_and_every_migration_is_applied(
    client: Client,
) -> None:
    status, body = probe(client)

    assert status == 200
    assert body == {"status": "ok", "database": "ok", "migrations": "ok", "workers": []}


@pytest.mark.django_db
def test_a_probe_needs_no_session_no_csrf_and_no_allowed_host(client: Client) -> None:
    response = client.get("/healthz", HTTP_HOST=PROBE_HOST)

    assert response.status_code == 200
    assert not response.cookies, "a probe every few seconds must not make sessions"
    # The same address is refused anywhere else: only the probe skips the host check.
    assert client.get("/accounts/login/", HTTP_HOST=PROBE_HOST).status_code == 400


@pytest.mark.django_db
def test_healthz_answers_plain_http_when_https_is_enforced(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/accounts/login/").status_code == 301
    assert probe(client)[0] == 200
    assert probe(client, "/healthz/workers")[0] == 503  # answered, not redirected


@pytest.mark.django_db
def test_healthz_refuses_other_methods(client: Client) -> None:
    response = client.post("/healthz", HTTP_HOST=PROBE_HOST)

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert client.head("/healthz", HTTP_HOST=PROBE_HOST).status_code == 200


@pytest.mark.django_db
def test_healthz_is_unavailable_and_names_the_migrations_not_applied(client: Client) -> None:
    latest = MigrationRecorder.Migration.objects.filter(app="projects").latest("id")
    latest.delete()  # as if this release's migration had not run yet

    status, body = probe(client)

    assert status == 503
    assert body["code"] == "migrations_pending"
    assert body["pending"] == [f"projects.{latest.name}"]
    assert f"projects.{latest.name}" in body["detail"]


@pytest.mark.django_db
def test_once_applied_a_probe_costs_two_queries(
    client: Client, django_assert_num_queries: Any
) -> None:
    assert probe(client)[0] == 200

    # Migrations are not unapplied under a running release: the answer is kept.
    MigrationRecorder.Migration.objects.filter(app="projects").latest("id").delete()
    with django_assert_num_queries(2):  # SELECT 1; the heartbeats
        assert probe(client)[0] == 200


def test_healthz_is_unavailable_when_the_database_does_not_answer(
    tmp_path: Path, media_root: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://videocreation@127.0.0.1:{port}/videocreation",
        "MEDIA_ROOT": str(media_root),
        "DEBUG": "0",
    }
    env.pop("REDIS_URL", None)
    server = AsgiServer(tmp_path / "uvicorn.log", env).start()
    try:
        for path in ("/healthz", "/healthz/workers"):
            status, body = fetch(f"{server.url}{path}")

            assert status == 503
            assert body["code"] == "database_unreachable"
            assert body["detail"].startswith("The database does not answer")
    finally:
        server.stop()


def fetch(url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Host": PROBE_HOST})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- workers' heartbeats ------------------------------------------------------------


@pytest.fixture
def fast_sweeps(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Heartbeats five times a second; gone after 2 s silent. Request it before `qcluster`."""
    monkeypatch.setenv("JOB_SWEEP_SECONDS", "0.2")
    settings.WORKER_STALE_SECONDS = 2.0


def broker_of_this_run() -> str:
    return "redis" if settings.REDIS_URL else "orm"


@pytest.mark.django_db
def test_without_a_worker_the_workers_check_is_unavailable(client: Client) -> None:
    status, body = probe(client, "/healthz/workers")

    assert status == 503
    assert body["code"] == "no_workers"
    assert body["workers"] == []
    assert "No worker of queue 'videocreation'" in body["detail"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_running_worker_is_seen_and_goes_stale_when_killed(
    fast_sweeps: None, qcluster: subprocess.Popen[bytes], client: Client
) -> None:
    _, body = wait_for(
        lambda: (seen := probe(client, "/healthz/workers"))[0] == 200 and seen,
        "the worker's heartbeat",
    )
    [seen] = body["workers"]
    assert (seen["host"], seen["pid"]) == (socket.gethostname(), qcluster.pid)
    assert (seen["queue"], seen["broker"]) == ("videocreation", broker_of_this_run())
    assert seen["alive"] is True
    assert seen["secondsAgo"] < 2
    assert [listed["pid"] for listed in probe(client)[1]["workers"]] == [qcluster.pid]
    # Anyone may probe: without the operator's token, no machine or process is named.
    status, public = probe(client, "/healthz/workers", operator=False)
    assert status == 200
    assert [set(worker) & {"host", "pid"} for worker in public["workers"]] == [set()]
    assert public["workers"][0]["alive"] is True

    # Killed outright (a lost machine): its row stays and goes stale.
    os.killpg(qcluster.pid, signal.SIGKILL)
    qcluster.wait()
    _, body = wait_for(
        lambda: (seen := probe(client, "/healthz/workers"))[0] == 503 and seen,
        "the killed worker to count as gone",
        timeout=10,
    )
    assert body["code"] == "no_workers"
    [gone] = body["workers"]
    assert gone["pid"] == qcluster.pid
    assert gone["alive"] is False
    assert gone["secondsAgo"] >= 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_worker_that_stops_takes_its_heartbeat_with_it(
    fast_sweeps: None, qcluster: subprocess.Popen[bytes]
) -> None:
    wait_for(lambda: WorkerHeartbeat.objects.filter(pid=qcluster.pid).exists(), "a heartbeat")
    call_command("worker_status")  # no error: one is alive

    qcluster.send_signal(signal.SIGTERM)
    assert qcluster.wait(timeout=30) == 0
    assert not WorkerHeartbeat.objects.exists()
    with pytest.raises(CommandError, match="No worker of queue 'videocreation'"):
        call_command("worker_status")


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_worker_status_lists_the_workers_and_exits_1_when_none_is_alive(
    fast_sweeps: None, qcluster: subprocess.Popen[bytes]
) -> None:
    wait_for(lambda: WorkerHeartbeat.objects.filter(pid=qcluster.pid).exists(), "a heartbeat")
    alive = worker_status()
    assert alive.returncode == 0, alive.stderr
    assert socket.gethostname() in alive.stdout
    assert f" {qcluster.pid} " in alive.stdout
    assert "1 of 1 alive" in alive.stdout
    [listed] = json.loads(worker_status("--json").stdout)
    assert listed["pid"] == qcluster.pid

    os.killpg(qcluster.pid, signal.SIGKILL)
    qcluster.wait()
    wait_for(lambda: not WorkerHeartbeat.objects.alive().exists(), "the heartbeat to go stale")
    gone = worker_status()
    assert gone.returncode == 1
    assert "0 of 1 alive" in gone.stdout
    assert "has been seen in the last 2 s" in gone.stderr


def worker_status(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_children(),
        "WORKER_STALE_SECONDS": "2",
        "JOB_SWEEP_SECONDS": "0.2",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "worker_status", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
