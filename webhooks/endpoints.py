"""Every change to an endpoint, for the API and the admin alike.

Each is a conditional update of the fields it changes, never a save of a row
read earlier: the sender writes `failing_since` and `disabled_at`, and the
progress throttle `progress_queued_at`, while a request or a page holds a copy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webhooks import outbox
from webhooks.models import EVENT_TYPES, Delivery, DeliveryState, Endpoint, new_secret

TURNED_OFF_BY_OWNER = "Turned off by you."
TURNED_OFF_BY_OPERATOR = "Turned off by an operator."


class TooManyEndpoints(Exception):
    """The owner has `WEBHOOK_MAX_ENDPOINTS` endpoints already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} endpoints already")
        self.limit = limit


class EndpointOff(Exception):
    """A message cannot be sent again while its endpoint is turned off."""


def check_room(owner_id: Any) -> None:
    """Lock the owner's row until commit and refuse a new endpoint past the limit.

    Two creates (the owner's and an operator's) cannot both take the last place.
    """
    get_user_model().objects.select_for_update().filter(pk=owner_id).first()
    limit = settings.WEBHOOK_MAX_ENDPOINTS
    if Endpoint.objects.filter(owner_id=owner_id).count() >= limit:
        raise TooManyEndpoints(limit)


def create(
    owner_id: Any,
    url: str,
    events: list[str] | None = None,
    description: str = "",
    enabled: bool = True,
) -> Endpoint:
    with transaction.atomic():
        check_room(owner_id)
        return Endpoint.objects.create(
            owner_id=owner_id,
            url=url,
            events=events or list(EVENT_TYPES),
            description=description,
            disabled_at=None if enabled else timezone.now(),
            disabled_reason="" if enabled else TURNED_OFF_BY_OWNER,
        )


def edit(endpoint: Endpoint, changes: dict[str, Any]) -> Endpoint:
    """Change the address, the events or the description (and nothing else)."""
    if changes:
        Endpoint.objects.filter(pk=endpoint.pk).update(**changes, updated_at=timezone.now())
    endpoint.refresh_from_db()
    return endpoint


def turn_off(endpoint_id: Any, reason: str, only_if: Q | None = None) -> int | None:
    """Turn it off and stop its waiting messages (each can be sent again by hand later).

    How many messages stopped; None if it was off already (or `only_if` does not hold).
    """
    now = timezone.now()
    with transaction.atomic():
        switched = Endpoint.objects.filter(only_if or Q(), pk=endpoint_id, disabled_at__isnull=True)
        if not switched.update(disabled_at=now, disabled_reason=reason, updated_at=now):
            return None
        waiting = Delivery.objects.filter(endpoint_id=endpoint_id, state=DeliveryState.PENDING)
        return waiting.update(state=DeliveryState.FAILED, next_attempt_at=None, sent_at=None)


def turn_on(endpoint_id: Any) -> bool:
    """On again, and the failures before are history; False if it was on."""
    turned_on = Endpoint.objects.filter(pk=endpoint_id, disabled_at__isnull=False).update(
        disabled_at=None, disabled_reason="", failing_since=None, updated_at=timezone.now()
    )
    return bool(turned_on)


def rotate_secret(endpoint: Endpoint) -> Endpoint:
    """A new secret; the old one signs beside it for `WEBHOOK_SECRET_GRACE_SECONDS`."""
    grace = timedelta(seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    with transaction.atomic():
        current = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        now = timezone.now()
        Endpoint.objects.filter(pk=endpoint.pk).update(
            previous_secret=current.secret,
            previous_secret_expires_at=now + grace,
            secret=new_secret(),
            updated_at=now,
        )
    endpoint.refresh_from_db()
    return endpoint


def resend(delivery: Delivery) -> Delivery:
    """Send the message again by hand; EndpointOff while its endpoint is turned off."""
    with transaction.atomic():
        # Locked, so a Turn off running now waits and then gives this message up with
        # the others, rather than missing the one this puts back.
        on = Endpoint.objects.select_for_update().filter(
            pk=delivery.endpoint_id, disabled_at__isnull=True
        )
        if on.first() is None:
            raise EndpointOff
        return outbox.resend(delivery)
