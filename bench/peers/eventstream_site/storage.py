from __future__ import annotations

from typing import Any

from django_eventstream.storage import DjangoModelStorage


class NumberedStorage(DjangoModelStorage):
    """django-eventstream's database storage, remembering the id it gave the last event.

    `send_event` returns nothing; the hook in serve.py reads `last_id` to tell the
    benchmark which SSE `id:` to wait for. The storage is one instance per thread
    (django_eventstream.utils.get_class), so the hook's thread reads its own.
    """

    last_id = 0

    def append_event(self, channel: str, event_type: str, data: Any) -> Any:
        event = super().append_event(channel, event_type, data)
        self.last_id = event.id
        return event
