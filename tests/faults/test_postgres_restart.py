"""PostgreSQL restarts in the middle of a render: the job goes on and completes, same attempt.

Everything runs against a throwaway cluster the test owns (migrated, with its
own user and token); the test reads the job's row with psycopg, connecting
afresh each time, so its own reads live through the restart too. Run
`pytest tests/faults -q` to see the timings printed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from psycopg.rows import dict_row

from tests.conftest import BRIEF
from tests.faults.conftest import (
    PostgresCluster,
    Product,
    RedisServer,
    api,
    needs_postgres_binaries,
    needs_postgres_user,
    needs_redis_server,
    on_postgres_pass,
    product_env,
    seconds_since,
)
from tests.media import probe
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.worker,
    on_postgres_pass,
    needs_postgres_binaries,
    needs_postgres_user,
]

DATABASE = "videocreation"
LONG_SCRIPT = {
    "title": "Long enough to restart a database under",
    "scenes": [
        {"index": index, "narration": f"Scene {index + 1}.", "visual": "Sea", "seconds": 4}
        for index in range(4)
    ],
}
CREATE_TOKEN = (
    "from django.contrib.auth.models import User; "
    "from rest_framework.authtoken.models import Token; "
    "print(Token.objects.create(user=User.objects.create_user('alice')).key)"
)
Report = Callable[[str, dict[str, Any]], None]


def _manage(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"manage.py {arguments[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _job(cluster: PostgresCluster, project_id: str) -> dict[str, Any] | None:
    """The job's row, or None while the database does not answer."""
    try:
        with psycopg.connect(cluster.conninfo(DATABASE), row_factory=dict_row) as db:
            return db.execute(
                "SELECT status, completed_steps, attempt, version, video, error_message, "
                "completed_at FROM projects_videoproject WHERE id = %s",
                [project_id],
            ).fetchone()
    except psycopg.OperationalError:
        return None


def _first_event_after(cluster: PostgresCluster, project_id: str, moment: datetime) -> Any:
    try:
        with psycopg.connect(cluster.conninfo(DATABASE)) as db:
            row = db.execute(
                "SELECT min(created_at) FROM projects_progressevent "
                "WHERE project_id = %s AND created_at > %s",
                [project_id, moment],
            ).fetchone()
    except psycopg.OperationalError:
        return None
    return row[0] if row else None


def _pickups(cluster: PostgresCluster, project_id: str) -> int:
    with psycopg.connect(cluster.conninfo(DATABASE)) as db:
        row = db.execute(
            "SELECT count(*) FROM projects_progressevent WHERE project_id = %s "
            "AND kind = 'log' AND payload->>'line' = 'Picked up by a worker'",
            [project_id],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _start_render(client: Any) -> str:
    created = client.post("/projects", json=BRIEF | {"sceneCount": 4, "secondsPerScene": 4})
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    edited = client.patch(f"/projects/{project_id}/script", json={"scriptData": LONG_SCRIPT})
    assert edited.status_code == 200, edited.text
    started = client.post(f"/projects/{project_id}/render")
    assert started.status_code == 202, started.text
    return project_id


def _broker_url(broker: str, request: pytest.FixtureRequest) -> str | None:
    """A Redis server of the test's own (it outlives the database's restart), or the ORM broker."""
    if broker == "orm":
        return None
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    return redis_server.url


def _ended(cluster: PostgresCluster, project_id: str) -> dict[str, Any] | None:
    job = _job(cluster, project_id)
    return job if job is not None and job["status"] != "RENDERING" else None


def _script_written(cluster: PostgresCluster, project_id: str) -> bool:
    job = _job(cluster, project_id)
    return job is not None and job["status"] == "DRAFT" and job["completed_at"] is not None


def _interrupt(cluster: PostgresCluster, product: Product, outage: str) -> None:
    """A quick restart; or a stop long enough for the worker to notice, then a start."""
    if outage == "restart":
        cluster.restart()
        return
    cluster.stop()
    wait_for(
        lambda: "lost the database" in product.log("worker"),
        "the worker to notice that the database is gone",
        timeout=20,
    )
    cluster.start()


@pytest.mark.parametrize(
    ("broker", "outage"),
    [
        pytest.param("redis", "restart", marks=needs_redis_server),
        ("orm", "restart"),
        # With the ORM broker, django-q2's pusher polls the database that is down.
        ("orm", "down until noticed"),
    ],
)
def test_a_render_goes_on_through_a_postgres_restart_without_losing_its_attempt(
    broker: str,
    outage: str,
    postgres_cluster: PostgresCluster,
    product: Product,
    media_root: Path,
    report: Report,
    request: pytest.FixtureRequest,
) -> None:
    postgres_cluster.create_database(DATABASE)
    env = product_env(postgres_cluster.url(DATABASE), _broker_url(broker, request), media_root)
    _manage(env, "migrate", "--noinput")
    token = _manage(env, "shell", "-c", CREATE_TOKEN).strip().splitlines()[-1]
    web = product.start_web_server(env)
    worker = product.start_worker(env)
    product.wait_until_running(worker)
    client = api(web, token)
    project_id = _start_render(client)

    wait_for(
        lambda: (job := _job(postgres_cluster, project_id)) and job["completed_steps"] >= 1,
        "the first scene to be rendered",
        timeout=60,
        every=0.05,
    )
    restart_began = datetime.now(UTC)
    began = time.monotonic()
    _interrupt(postgres_cluster, product, outage)
    restart_seconds = seconds_since(began)
    restarted = datetime.now(UTC)

    # A job started after the restart: the web server and the broker take it, a worker runs it.
    later_id = client.post("/projects", json=BRIEF).json()["id"]
    assert client.post(f"/projects/{later_id}/script").status_code == 202

    next_write = wait_for(
        lambda: _first_event_after(postgres_cluster, project_id, restarted),
        "the job's next progress write after the restart",
        timeout=30,
        every=0.05,
    )
    done = wait_for(
        lambda: _ended(postgres_cluster, project_id),
        "the render to end",
        timeout=90,
        every=0.1,
    )
    wait_for(
        lambda: _script_written(postgres_cluster, later_id),
        "the script job started after the restart to be written",
        timeout=60,
    )
    later_done = seconds_since(began)
    worker_log = product.log("worker")
    report(
        f"PostgreSQL {outage} (pg_ctl -m fast) in the middle of a render, {broker} broker",
        {
            "database unavailable for (s)": restart_seconds,
            "restart done → the job's next progress write (s)": round(
                (next_write - restarted).total_seconds(), 2
            ),
            "restart began → render completed (s)": round(
                (done["completed_at"] - restart_began).total_seconds(), 2
            ),
            "restart began → a script job started after it written (s)": later_done,
            "the worker saw the database go": "lost the database" in worker_log
            or "Could not renew the lease" in worker_log,
        },
    )

    assert done["status"] == "COMPLETED", done["error_message"]
    assert done["attempt"] == 1
    assert done["completed_at"] > restart_began, "the render ended before the restart"
    assert _pickups(postgres_cluster, project_id) == 1
    assert probe(media_root / done["video"]).seconds == pytest.approx(16, abs=0.3)
    # The web server reconnects too: its status answer is the finished job.
    assert client.get(f"/projects/{project_id}/status").json()["status"] == "COMPLETED"
    assert worker.poll() is None, worker_log[-3000:]
