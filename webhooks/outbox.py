"""Webhook messages queued in the same transaction as the status change that causes them.

The lifecycle calls `job_changed` (started, completed, failed, cancelled) and
the progress reporter calls `job_progressed` inside the transaction that
writes the project's row, so a committed change always has its messages and
a rolled-back one never does. Each message is a `Delivery` row with its id
and body fixed; after commit its first attempt goes to the broker as a
django-q2 task. A task lost with a broker, a worker killed before sending,
or a retry coming due are picked up by `relay`, which every worker's sweeper
runs each second: the row is the outbox, the broker only carries the hint.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task
from rest_framework.utils.encoders import JSONEncoder

from webhooks.models import Delivery, DeliveryState, Endpoint, EventType

logger = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.tasks.deliver"
# How many due messages one relay hands to the broker; the next sweep takes the rest.
RELAY_BATCH = 500


def job_changed(project: Any, event_type: EventType) -> int:
    """Queue `event_type` about the project's job for every endpoint of its owner that asked."""
    endpoints = Endpoint.objects.listening(project.owner_id, event_type)
    return _queue(project, event_type, endpoints)


def job_progressed(project: Any) -> int:
    """Queue `job.progress` for each endpoint that had none in the last WEBHOOK_PROGRESS_SECONDS."""
    endpoints = Endpoint.objects.listening(project.owner_id, EventType.PROGRESS)
    if not endpoints:
        return 0
    now = timezone.now()
    quiet_since = now - timedelta(seconds=settings.WEBHOOK_PROGRESS_SECONDS)
    due = Q(progress_queued_at__isnull=True) | Q(progress_queued_at__lte=quiet_since)
    # A conditional update per endpoint: two workers reporting at once queue one message.
    taken = [
        endpoint
        for endpoint in endpoints
        if Endpoint.objects.filter(due, pk=endpoint.pk).update(progress_queued_at=now)
    ]
    return _queue(project, EventType.PROGRESS, taken, now)


def _queue(
    project: Any, event_type: str, endpoints: list[Endpoint], now: datetime | None = None
) -> int:
    if not endpoints:
        return 0
    now = now or timezone.now()
    body = message_body(event_type, project.to_status_dict(), now)
    deliveries = Delivery.objects.bulk_create(
        Delivery(
            endpoint=endpoint,
            event_type=event_type,
            project_id=project.pk,
            body=body,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint in endpoints
    )
    for delivery in deliveries:
        transaction.on_commit(partial(send, delivery.pk))
    return len(deliveries)


def message_body(event_type: str, data: dict[str, Any], now: datetime) -> str:
    """The Standard Webhooks body: `type`, `timestamp` and the status object as `data`."""
    body = {"type": event_type, "timestamp": now, "data": data}
    return json.dumps(body, cls=JSONEncoder, separators=(",", ":"), ensure_ascii=False)


def send(delivery_id: str, now: datetime | None = None) -> bool:
    """Hand the message's next attempt to the broker, if it is due and no task holds it."""
    now = now or timezone.now()
    if not Delivery.objects.due(now).filter(pk=delivery_id).update(sent_at=now):
        return False  # not due, already sent, or another sweeper sent it a moment ago
    return _hand_to_broker(delivery_id, now)


def _hand_to_broker(delivery_id: str, sent_at: datetime, by_hand: bool = False) -> bool:
    """The task of the message's attempt; on a broker error it is due again at once."""
    try:
        async_task(DELIVER_TASK, delivery_id, by_hand=by_hand, cluster=settings.WEBHOOK_QUEUE)
    except Exception:
        Delivery.objects.filter(pk=delivery_id, sent_at=sent_at).update(sent_at=None)
        logger.warning("Could not queue webhook message %s; the relay will send it", delivery_id)
        return False
    return True


def relay(now: datetime | None = None) -> int:
    """Send every message whose attempt is due and that no broker holds; how many were sent."""
    now = now or timezone.now()
    due = Delivery.objects.due(now).order_by("next_attempt_at")
    return sum(send(pk, now) for pk in due.values_list("pk", flat=True)[:RELAY_BATCH])


def resend(delivery: Delivery) -> Delivery:
    """Send a message again by hand: the same id and body, attempted at once by a task."""
    now = timezone.now()
    with transaction.atomic():
        Delivery.objects.filter(pk=delivery.pk).update(
            state=DeliveryState.PENDING, next_attempt_at=now, sent_at=now, delivered_at=None
        )
        transaction.on_commit(partial(_hand_to_broker, delivery.pk, now, by_hand=True))
    delivery.refresh_from_db()
    return delivery
