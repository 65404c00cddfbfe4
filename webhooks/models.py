"""A user's webhook endpoints, the deliveries queued for them (the outbox) and every attempt.

A `Delivery` is one message: its `id` is the `webhook-id` every attempt sends,
and its `body` is fixed when it is queued, so each attempt signs and sends the
same bytes. See webhooks/outbox.py for when messages are queued and
webhooks/sending.py for how they are sent.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class EventType(models.TextChoices):
    STARTED = "job.started", "A job started"
    PROGRESS = "job.progress", "A job moved on (at most one per WEBHOOK_PROGRESS_SECONDS)"
    COMPLETED = "job.completed", "A job completed"
    FAILED = "job.failed", "A job failed"
    CANCELLED = "job.cancelled", "A job was cancelled"


EVENT_TYPES = [choice.value for choice in EventType]


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class EndpointQuerySet(models.QuerySet["Endpoint"]):
    def listening(self, owner_id: Any, event_type: str) -> list[Endpoint]:
        """The owner's enabled endpoints that asked for `event_type`.

        Filtered here rather than in SQL: SQLite has no JSON `contains`, and a
        user has a handful of endpoints.
        """
        endpoints = self.filter(owner_id=owner_id, disabled_at__isnull=True)
        return [endpoint for endpoint in endpoints if event_type in endpoint.events]


class Endpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    # Checked by webhooks.addresses.check_url (http or https, a public address), not by a form.
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=200, blank=True, default="")
    secret = models.CharField(max_length=100, default=new_secret)
    # After a rotation the old secret still signs, beside the new one, until then.
    previous_secret = models.CharField(max_length=100, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when it was turned off: by its owner, or after failing for a day.
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    # The first failed attempt since the last one that succeeded.
    failing_since = models.DateTimeField(null=True, blank=True)
    # When its last `job.progress` was queued: at most one per WEBHOOK_PROGRESS_SECONDS.
    progress_queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.url

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets every attempt signs with: the current one, and the last one in its grace."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def to_dict(self) -> dict[str, Any]:
        """The endpoint as the API shows it, without its secret (shown once, when made)."""
        return {
            "id": str(self.pk),
            "url": self.url,
            "events": self.events,
            "description": self.description,
            "enabled": self.enabled,
            "disabledAt": self.disabled_at,
            "disabledReason": self.disabled_reason,
            "failingSince": self.failing_since,
            "previousSecretExpiresAt": self.previous_secret_expires_at,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Waiting to be sent, or to be tried again"
    DELIVERED = "delivered", "Delivered (the receiver answered 2xx)"
    FAILED = "failed", "Given up (every retry failed, or the endpoint was turned off)"


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def due(self, now: datetime) -> DeliveryQuerySet:
        """Pending, its attempt due, and no task for it in the broker (or one sent long ago)."""
        lost_before = now - timedelta(seconds=settings.WEBHOOK_TASK_LOST_SECONDS)
        return self.filter(
            models.Q(sent_at__isnull=True) | models.Q(sent_at__lt=lost_before),
            state=DeliveryState.PENDING,
            next_attempt_at__lte=now,
            endpoint__disabled_at__isnull=True,
        )


class Delivery(models.Model):
    # The `webhook-id` header: the same on every attempt of this message.
    id = models.CharField(primary_key=True, max_length=40, default=new_message_id, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=20, choices=EventType.choices)
    # A plain id, not a key: a deleted project's deliveries stay in the endpoint's record.
    project_id = models.UUIDField(null=True, blank=True)
    # The JSON body exactly as every attempt sends and signs it.
    body = models.TextField()
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The outbox's mark: when a task for the next attempt went to the broker (null: not yet).
    sent_at = models.DateTimeField(null=True, blank=True)
    # Held by the task attempting it now, until then (a second task steps aside).
    attempting_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhooks_delivery_due"),
            models.Index(fields=["endpoint", "-created_at"], name="webhooks_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"

    def to_dict(self, attempts: list[Attempt] | None = None) -> dict[str, Any]:
        shown = {
            "id": self.id,
            "endpointId": str(self.endpoint_id),
            "type": self.event_type,
            "projectId": str(self.project_id) if self.project_id else None,
            "state": self.state,
            "attemptCount": self.attempts,
            "nextAttemptAt": self.next_attempt_at if self.state == DeliveryState.PENDING else None,
            "createdAt": self.created_at,
            "deliveredAt": self.delivered_at,
        }
        if attempts is not None:
            shown["attempts"] = [attempt.to_dict() for attempt in attempts]
        return shown


class Attempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    # Null when no answer came (a timeout, a refused connection, a refused address).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    # The start of the receiver's answer, for the person reading why it failed.
    response_body = models.TextField(blank=True, default="")
    by_hand = models.BooleanField(default=False)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhooks_attempt_once"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "startedAt": self.started_at,
            "durationMs": self.duration_ms,
            "statusCode": self.status_code,
            "error": self.error,
            "responseBody": self.response_body,
            "byHand": self.by_hand,
        }
