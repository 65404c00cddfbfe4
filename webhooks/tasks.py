"""django-q2 entry points: fetch by id, call the work; nothing else."""

from __future__ import annotations

from webhooks import sending


def deliver(delivery_id: str, by_hand: bool = False) -> None:
    sending.deliver(delivery_id, by_hand=by_hand)
