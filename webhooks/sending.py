"""One attempt at a webhook message: claim it, sign it, POST it, record what happened.

Every attempt of a message sends the same `webhook-id` and body, signed anew
with the attempt's own `webhook-timestamp` (receivers refuse old ones), per
the Standard Webhooks specification, with its `standardwebhooks` library. A
2xx answer delivers it; a timeout, a refused connection or any other answer
schedules the next attempt after `WEBHOOK_RETRY_SCHEDULE[n]` seconds, until
the schedule runs out. An endpoint whose attempts have all failed for
`WEBHOOK_DISABLE_AFTER_SECONDS` is turned off, and its owner sees why on the
page. No transaction is open while the receiver is called.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from webhooks import endpoints
from webhooks.addresses import RefusedAddress, connection_for
from webhooks.models import Attempt, Delivery, DeliveryState, Endpoint

USER_AGENT = "videocreation-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    response_body: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver(
    delivery_id: str, now: datetime | None = None, *, by_hand: bool = False
) -> Attempt | None:
    """Make the message's due attempt; None if it is not due, done, or another task holds it."""
    now = now or timezone.now()
    # An attempt ends by its time limit (the watchdog); a claim held twice as long
    # belongs to a worker that died, and the next task may take the message.
    held_for = timedelta(seconds=2 * settings.WEBHOOK_TIMEOUT_SECONDS)
    claimed = (
        Delivery.objects.filter(pk=delivery_id, state=DeliveryState.PENDING)
        .filter(next_attempt_at__lte=now)
        .filter(Q(attempting_until__isnull=True) | Q(attempting_until__lt=now))
        .update(attempting_until=now + held_for)
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("endpoint").get(pk=delivery_id)
    outcome = post(delivery, now)
    return _record(delivery, outcome, now, by_hand)


def post(delivery: Delivery, now: datetime) -> Outcome:
    """POST the message to its endpoint once; what came back, or why nothing did."""
    endpoint = delivery.endpoint
    body = delivery.body.encode()
    signatures = [
        Webhook(secret).sign(delivery.id, now, body) for secret in endpoint.signing_secrets(now)
    ]
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()
    connection = connection_for(endpoint.url, timeout)
    # The socket timeout bounds each wait; this bounds the whole attempt, so a receiver
    # that answers a byte at a time cannot hold a worker.
    cut = threading.Event()
    watchdog = threading.Timer(timeout, _cut, args=(connection, cut))
    watchdog.start()
    try:
        connection.request("POST", _target(endpoint.url), body=body, headers=headers)
        response = connection.getresponse()
        # Only the start of the answer is read: a receiver cannot make us hold a big one.
        answer = response.read(settings.WEBHOOK_RESPONSE_LIMIT)
        status_code, error = response.status, ""
        if not 200 <= status_code < 300:
            error = f"The receiver answered {status_code} {response.reason}".strip()[:500]
    except Exception as failed:  # every failure is the attempt's outcome
        status_code, answer = None, b""
        error = _explain(failed, timeout, cut=cut.is_set())
    finally:
        watchdog.cancel()
        connection.close()
    return Outcome(
        status_code=status_code,
        error=error,
        response_body=answer.decode("utf-8", "replace"),
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    cut.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the attempt itself
            sock.shutdown(socket.SHUT_RDWR)


def _explain(failed: Exception, timeout: float, *, cut: bool) -> str:
    if cut or isinstance(failed, TimeoutError | socket.timeout):
        return f"No answer within {timeout:g} s"
    if isinstance(failed, RefusedAddress):
        return str(failed)[:500]
    if isinstance(failed, ConnectionRefusedError):
        return "The receiver refused the connection"
    if isinstance(failed, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed: {failed}"[:500]
    if isinstance(failed, socket.gaierror):
        return "The receiver's host could not be found"
    if isinstance(failed, http.client.HTTPException):
        return f"The receiver's answer was not HTTP: {type(failed).__name__}"
    return f"{type(failed).__name__}: {failed}"[:500]


def _record(delivery: Delivery, outcome: Outcome, now: datetime, by_hand: bool) -> Attempt | None:
    """Write the attempt and what comes next; None if our claim ran out and another took it."""
    number = delivery.attempts + 1
    fields: dict[str, object] = {"attempts": number, "attempting_until": None, "sent_at": None}
    if outcome.delivered:
        fields |= {"state": DeliveryState.DELIVERED, "delivered_at": now}
    else:
        fields |= _next_attempt(number, now)
    with transaction.atomic():
        # Only while the claim is still ours: an attempt that outlived it (a slow DNS
        # answer) leaves the record to the task that took the message over.
        ours = Delivery.objects.filter(pk=delivery.pk, attempting_until=delivery.attempting_until)
        if not ours.update(**fields):
            return None
        if outcome.delivered:
            Endpoint.objects.filter(pk=delivery.endpoint_id).update(failing_since=None)
        else:
            _note_failure(delivery.endpoint_id, now)
        return Attempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=now,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
            response_body=outcome.response_body,
            by_hand=by_hand,
        )


def _next_attempt(failed_attempts: int, now: datetime) -> dict[str, object]:
    """When to try again after the `failed_attempts`th failure, or give up."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if failed_attempts > len(schedule):
        return {"state": DeliveryState.FAILED, "next_attempt_at": None}
    return {"next_attempt_at": now + timedelta(seconds=schedule[failed_attempts - 1])}


def _note_failure(endpoint_id: object, now: datetime) -> None:
    Endpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(failing_since=now)
    a_day_ago = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    endpoints.turn_off(endpoint_id, _disabled_reason(), only_if=Q(failing_since__lte=a_day_ago))


def _disabled_reason() -> str:
    hours = settings.WEBHOOK_DISABLE_AFTER_SECONDS / 3600
    span = "a day" if hours == 24 else f"{hours:g} hours"
    return (
        f"Turned off: every delivery failed for {span}. "
        "Fix the receiver, then turn the endpoint back on."
    )
