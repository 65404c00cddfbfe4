from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django_q.brokers import get_broker

from projects.models import EventKind, Status, VideoProject
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_twenty_concurrent_starts_give_one_job(alice: Any, make_project: Any) -> None:
    project = make_project()
    broker = get_broker()
    broker.purge_queue()
    barrier = threading.Barrier(20)
    answers: list[Any] = []

    def start() -> None:
        client = api_client_for(alice)
        barrier.wait(timeout=10)
        try:
            answers.append(client.post(f"/api/video-creation/projects/{project.pk}/script"))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] + [409] * 19
    refused = [answer.json() for answer in answers if answer.status_code == 409]
    assert {body["status"] for body in refused} == {"GENERATING_SCRIPT"}
    project.refresh_from_db()
    assert project.status == Status.GENERATING_SCRIPT
    started = project.events.filter(kind=EventKind.STATUS, payload__status="GENERATING_SCRIPT")
    assert started.count() == 1
    assert broker.queue_size() == 1
    broker.purge_queue()
    assert VideoProject.objects.count() == 1
