"""Webhooks sent by a real `manage.py worker`: a whole job's messages, and retries on a schedule.

The test process starts the job (its messages go to the broker after commit);
the worker process runs the job, queues the progress and completion messages
and makes every attempt, as in production. See tests/faults/ for a worker
killed in the middle of a delivery.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook

from projects import lifecycle
from projects.models import Step, VideoProject
from tests.receiver import Received, Receiver, receiver, register
from tests.waiting import wait_for
from webhooks.models import Attempt, Delivery, DeliveryState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

WEBHOOKS = "/api/video-creation/webhooks"
PROGRESS_SECONDS = 0.2
# What the worker process reads: loopback receivers allowed, retries half a second apart.
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5",
    "WEBHOOK_PROGRESS_SECONDS": str(PROGRESS_SECONDS),
    # The job writes its progress four times as often as job.progress may be sent.
    "PROGRESS_MIN_INTERVAL": str(PROGRESS_SECONDS / 4),
    # The retries are relayed by the sweeper: sweep often so they go when due.
    "JOB_SWEEP_SECONDS": "0.2",
}


@pytest.fixture
def worker(
    monkeypatch: pytest.MonkeyPatch, settings: Any, request: pytest.FixtureRequest
) -> subprocess.Popen[bytes]:
    """`qcluster`, one worker process, started with the webhook settings above."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # for registering in this process
    for name, value in WORKER_ENV.items():
        monkeypatch.setenv(name, value)  # before `qcluster` copies the environment
    return request.getfixturevalue("qcluster")


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as listening:
        yield listening


def message(request: Received) -> dict[str, Any]:
    return json.loads(request.body)


def timestamp_of(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(message["timestamp"])


def all_delivered(count: int) -> bool:
    return Delivery.objects.filter(state=DeliveryState.DELIVERED).count() == count


def test_a_script_job_run_by_a_worker_sends_started_progress_and_completed_once_each(
    alice_api: APIClient,
    worker: subprocess.Popen[bytes],
    hooks: Receiver,
    make_project: Any,
) -> None:
    endpoint = register(alice_api, hooks.url)
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    written = wait_for(
        lambda: (p := VideoProject.objects.get(pk=project.pk)).script_data and p,
        "the worker to write the script",
        timeout=120,
        every=0.1,
    )
    deliveries = Delivery.objects.filter(project_id=project.pk)
    wait_for(
        lambda: not deliveries.exclude(state=DeliveryState.DELIVERED).exists() and deliveries,
        "every message of the job to be delivered",
    )
    requests = hooks.wait_for(deliveries.count())

    assert written.status == "DRAFT", written.error
    ids = Counter(r.headers["webhook-id"] for r in requests)
    assert set(ids.values()) == {1}, f"a message arrived twice: {ids}"
    assert set(ids) == {delivery.pk for delivery in deliveries}
    messages = sorted((message(r) for r in requests), key=timestamp_of)
    types = [m["type"] for m in messages]
    assert types[0] == "job.started" and types[-1] == "job.completed", types
    assert types.count("job.started") == types.count("job.completed") == 1, types
    assert set(types[1:-1]) == {"job.progress"}, types
    assert {m["data"]["currentStep"] for m in messages} == {"script"}
    assert [m["data"]["status"] for m in messages] == (
        ["GENERATING_SCRIPT"] * (len(messages) - 1) + ["DRAFT"]
    )
    assert messages[-1]["data"]["scriptData"] == written.script_data
    secret = endpoint["secret"]
    for request in requests:
        Webhook(secret).verify(request.body, request.headers)  # raises if it does not verify
    assert all(r.path == "/hooks/videos" for r in requests)
    assert Attempt.objects.filter(delivery__in=deliveries, status_code=200).count() == len(requests)


def test_progress_messages_are_queued_no_closer_than_the_setting(
    alice_api: APIClient,
    worker: subprocess.Popen[bytes],
    hooks: Receiver,
    make_project: Any,
) -> None:
    register(alice_api, hooks.url, ["job.progress"])
    project = lifecycle.start_job(make_project(), Step.SCRIPT)

    wait_for(
        lambda: VideoProject.objects.get(pk=project.pk).script_data,
        "the worker to write the script",
        timeout=120,
        every=0.1,
    )
    progress = Delivery.objects.filter(project_id=project.pk).order_by("created_at")
    queued = [delivery.created_at for delivery in progress]
    reports = project.events.filter(kind="progress").count()

    assert queued, "no job.progress was queued"
    gaps = [later - earlier for earlier, later in itertools.pairwise(queued)]
    assert all(gap >= timedelta(seconds=PROGRESS_SECONDS) for gap in gaps), gaps
    # The job wrote more progress than was sent: the setting held some back.
    assert len(queued) < reports, (len(queued), reports)
    wait_for(lambda: all_delivered(len(queued)), "the progress messages to be delivered")


def test_a_receiver_failing_twice_gets_the_same_message_a_third_time_and_it_is_delivered(
    alice_api: APIClient, worker: subprocess.Popen[bytes], make_project: Any
) -> None:
    with receiver([500, 500]) as hooks:
        register(alice_api, hooks.url, ["job.started"])
        project = lifecycle.start_job(make_project(), Step.SCRIPT)
        delivery = wait_for(
            lambda: Delivery.objects.filter(project_id=project.pk, state="delivered").first(),
            "the third attempt to deliver the message",
        )
        requests = hooks.wait_for(3)

    assert [r.headers["webhook-id"] for r in requests] == [delivery.pk] * 3
    assert [r.body for r in requests] == [delivery.body.encode()] * 3
    attempts = list(delivery.attempt_set.all())
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert attempts[0].error == "The receiver answered 500 Internal Server Error"
    # Each retry waited its turn in WEBHOOK_RETRY_SCHEDULE (0.5 s).
    starts = [a.started_at for a in attempts]
    assert all(b - a >= timedelta(seconds=0.5) for a, b in itertools.pairwise(starts))
    assert delivery.attempts == 3
    assert Delivery.objects.filter(project_id=project.pk).count() == 1
