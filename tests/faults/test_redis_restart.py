"""Redis, the task broker, is killed and comes back empty: no job is lost, none runs twice.

A worker and a web server run on a Redis server the test owns (and on the
suite's PostgreSQL test database). Run `pytest tests/faults -q` to see the
timings printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from projects.models import EventKind, Status, VideoProject
from tests.conftest import BRIEF, database_url_for_children
from tests.faults.conftest import (
    Product,
    RedisServer,
    api,
    needs_redis_server,
    on_postgres_pass,
    product_env,
    seconds_since,
)
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.worker,
    on_postgres_pass,
    needs_redis_server,
]

JOBS = 5
# The promise: a task lost with Redis is back within 30 s.
BACK_WITHIN = 30.0
Report = Callable[[str, dict[str, Any]], None]


def _start_product(
    product: Product, redis_server: RedisServer, media_root: Path
) -> tuple[httpx.Client, Any]:
    env = product_env(database_url_for_children(), redis_server.url, media_root)
    # One user's jobs must wait in Redis itself, not in the fair queue's database line.
    env["MAX_ACTIVE_JOBS_PER_USER"] = str(JOBS)
    web = product.start_web_server(env)
    worker = product.start_worker(env)
    product.wait_until_running(worker)
    alice = User.objects.create_user("alice", password="alice-password-1")
    return api(web, Token.objects.create(user=alice).key), worker


def _start_script_job(client: httpx.Client) -> str:
    created = client.post("/projects", json=BRIEF)
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    started = client.post(f"/projects/{project_id}/script")
    assert started.status_code == 202, started.text
    return project_id


def _claimed_at(project_id: str) -> datetime | None:
    """When a worker picked the job up (its "Picked up" log line), if one did."""
    pickup = (
        VideoProject.objects.get(pk=project_id)
        .events.filter(kind=EventKind.LOG, payload__line="Picked up by a worker")
        .order_by("seq")
        .first()
    )
    return pickup.created_at if pickup else None


def _written_once(project_id: str) -> None:
    """The script job ran exactly once: one pickup, one saved script, on the first attempt."""
    project = VideoProject.objects.get(pk=project_id)
    assert project.status == Status.DRAFT, (project.status, project.error_message)
    assert project.attempt == 1
    assert len(project.script_data["scenes"]) == BRIEF["sceneCount"]
    events = project.events.order_by("seq")
    pickups = events.filter(kind=EventKind.LOG, payload__line="Picked up by a worker")
    saved = events.filter(kind=EventKind.STATUS, payload__progressMessage="Script ready")
    assert pickups.count() == 1, [event.payload for event in pickups]
    assert saved.count() == 1, [event.payload for event in saved]


def _all_written(project_ids: list[str]) -> bool:
    statuses = VideoProject.objects.filter(pk__in=project_ids).values_list("status", flat=True)
    return all(status == Status.DRAFT for status in statuses)


def test_jobs_waiting_in_redis_all_run_once_after_redis_restarts_empty(
    product: Product, redis_server: RedisServer, media_root: Path, report: Report
) -> None:
    client, worker = _start_product(product, redis_server, media_root)
    project_ids = [_start_script_job(client) for _ in range(JOBS)]
    # One worker process takes one task at a time: the rest wait in Redis.
    wait_for(lambda: _claimed_at(project_ids[0]), "the first job to be picked up", timeout=30)
    waiting_in_redis = redis_server.queued_tasks()
    assert waiting_in_redis >= 1, "no task waited in Redis: the test would prove nothing"
    old_run_id = redis_server.run_id()

    redis_server.kill()
    killed_at = time.monotonic()
    restarted_wall = timezone.now()
    redis_server.start()
    restarted_at = time.monotonic()
    assert redis_server.run_id() != old_run_id
    assert redis_server.queued_tasks() == 0, "the restarted Redis should have lost its queue"

    unclaimed = [pid for pid in project_ids if _claimed_at(pid) is None]
    assert unclaimed, "every job was picked up before the kill: nothing was lost"
    wait_for(
        lambda: VideoProject.objects.filter(
            pk__in=unclaimed, task_sent_at__gte=restarted_wall
        ).exists(),
        "a lost task to be sent again",
        timeout=BACK_WITHIN,
        every=0.05,
    )
    requeued = seconds_since(restarted_at)
    wait_for(
        lambda: any((_claimed_at(pid) or restarted_wall) > restarted_wall for pid in unclaimed),
        "a lost job to be picked up again",
        timeout=BACK_WITHIN,
        every=0.05,
    )
    first_started = seconds_since(restarted_at)
    wait_for(lambda: _all_written(project_ids), f"all {JOBS} scripts to be written", timeout=60)
    all_done = seconds_since(restarted_at)
    report(
        f"Redis SIGKILLed and restarted empty with {JOBS} script jobs queued",
        {
            "tasks waiting in Redis at the kill": waiting_in_redis,
            "jobs not yet picked up at the kill": len(unclaimed),
            "Redis down for (s)": round(restarted_at - killed_at, 2),
            "restart → first lost task sent again (s)": requeued,
            "restart → first lost job picked up (s)": first_started,
            "restart → all jobs done (s)": all_done,
        },
    )

    for project_id in project_ids:
        _written_once(project_id)
    assert first_started <= BACK_WITHIN
    assert worker.poll() is None, product.log("worker")[-3000:]


def test_a_job_started_while_redis_is_down_is_accepted_and_runs_when_it_is_back(
    product: Product, redis_server: RedisServer, media_root: Path, report: Report
) -> None:
    client, worker = _start_product(product, redis_server, media_root)
    redis_server.kill()

    project_id = _start_script_job(client)
    # The committed row is the outbox: no broker took the task, so it is marked unsent.
    assert VideoProject.objects.get(pk=project_id).task_sent_at is None
    # The worker's sweeper meets the outage too, and must live through it.
    wait_for(
        lambda: "sweeper could not reach" in product.log("worker"),
        "the worker's sweeper to try the broker while it is down",
        timeout=BACK_WITHIN,
    )
    redis_server.start()
    back_at = time.monotonic()

    wait_for(lambda: _claimed_at(project_id), "the job to be picked up", timeout=BACK_WITHIN)
    started = seconds_since(back_at)
    wait_for(lambda: _all_written([project_id]), "the script to be written", timeout=60)
    report(
        "a script job started while Redis was down",
        {
            "Redis back → job picked up (s)": started,
            "Redis back → script written (s)": seconds_since(back_at),
        },
    )

    _written_once(project_id)
    assert worker.poll() is None, product.log("worker")[-3000:]
