"""`kill -9` the worker in the middle of a webhook delivery: another worker sends the
same message again within seconds, and it is delivered once, under its one webhook-id."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django_q.brokers import get_broker
from standardwebhooks.webhooks import Webhook

from projects import lifecycle
from projects.models import Status, Step, VideoProject
from tests.conftest import database_url_for_children
from tests.faults.conftest import Product, product_env, seconds_since
from tests.receiver import HANG, Received, receiver
from tests.waiting import wait_for
from webhooks.models import Delivery, DeliveryState, Endpoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RECOVERY_LIMIT = 30.0  # seconds from the kill until the message is delivered
WORKER_ENV = {
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
    # The dead worker's claim on the message lasts twice this (webhooks/sending.py).
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    # A message handed to the broker this long ago and not attempted is sent again:
    # the task the dead worker took is gone with it.
    "WEBHOOK_TASK_LOST_SECONDS": "1",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5",
}


def _type_of(request: Received) -> str:
    return str(json.loads(request.body)["type"])


def _written(project: VideoProject) -> VideoProject | None:
    current = VideoProject.objects.get(pk=project.pk)
    done = current.status == Status.DRAFT and current.script_data is not None
    return current if done else None


def test_a_worker_killed_while_delivering_job_completed_is_replaced_and_it_arrives_once(
    product: Product, report: Any, media_root: Path, make_project: Any, alice: User
) -> None:
    """The kill lands after the status change committed and inside the delivery attempt.

    The receiver answers job.started and hangs on the next request, job.completed:
    one worker process does the tasks in turn, and job.started's task was queued
    (with the job's) when the job started, job.completed's only when it ended. The
    test waits until the receiver holds that request and the project is a draft with
    its script, then SIGKILLs the worker's whole process group. The hung attempt
    is cut only after WEBHOOK_TIMEOUT_SECONDS, so no Attempt can be recorded
    before the kill: the test checks there is none, and the message is claimed.
    """
    env = {
        **product_env(database_url_for_children(), settings.REDIS_URL or None, media_root),
        **WORKER_ENV,
    }
    get_broker().purge_queue()  # no task left by an earlier test takes the worker's turn
    with receiver([200, HANG]) as hooks:
        endpoint = Endpoint.objects.create(
            owner=alice, url=hooks.url, events=["job.started", "job.completed"]
        )
        worker_a = product.start_worker(env, "worker-a")
        project = lifecycle.start_job(make_project(), Step.SCRIPT)

        held = hooks.wait_for(2, timeout=120)[1]
        assert _type_of(held) == "job.completed", "the receiver hung on the wrong message"
        assert _written(project), "job.completed was sent before the script was saved"
        os.killpg(worker_a.pid, signal.SIGKILL)  # the cluster and its task process, at once
        killed_at = time.monotonic()
        worker_a.wait()
        completed = Delivery.objects.get(project_id=project.pk, event_type="job.completed")
        assert completed.pk == held.headers["webhook-id"]
        assert not completed.attempt_set.exists(), "the attempt ended before the kill"
        assert completed.state == DeliveryState.PENDING and completed.attempting_until

        product.start_worker(env, "worker-b")
        delivered = wait_for(
            lambda: Delivery.objects.filter(pk=completed.pk, state="delivered").first(),
            "the new worker to deliver job.completed",
            timeout=RECOVERY_LIMIT + 30,
            every=0.05,
        )
        recovered_in = seconds_since(killed_at)
        requests = hooks.wait_for(3)

    report(
        "worker killed (kill -9) while delivering job.completed, a new worker started",
        {"delivered after the kill (s)": recovered_in},
    )
    assert recovered_in <= RECOVERY_LIMIT, f"delivered only after {recovered_in} s"
    assert [_type_of(r) for r in requests] == ["job.started", "job.completed", "job.completed"]
    again = requests[2]
    assert again.headers["webhook-id"] == held.headers["webhook-id"] == delivered.pk
    assert again.body == held.body == delivered.body.encode()
    Webhook(endpoint.secret).verify(again.body, again.headers)
    attempts = list(delivered.attempt_set.all())
    assert [(a.number, a.status_code) for a in attempts] == [(1, 200)]
    assert delivered.attempts == 1 and delivered.attempting_until is None
    deliveries = Delivery.objects.filter(project_id=project.pk, endpoint=endpoint)
    per_type = sorted(deliveries.values_list("event_type", "state"))
    assert per_type == [("job.completed", "delivered"), ("job.started", "delivered")]
