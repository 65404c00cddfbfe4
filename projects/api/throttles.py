"""Per-user rates for the writes that cost work: creating projects and starting jobs.

DRF's `UserRateThrottle`, keyed on the user, with its rate read from our
settings when a request comes (DRF binds its own rate table at import, where
a changed setting never reaches it). The history lives in Django's cache,
which every web process shares: Redis, or without it files on the machine.
DRF reads and writes a history without a lock, so a burst of concurrent
requests may slip a few past the rate; the rate is a brake, not
an invariant (the stream cap, which must hold, is counted in the database).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework.throttling import UserRateThrottle

logger = logging.getLogger(__name__)


class _PostThrottle(UserRateThrottle):
    """Counts a user's POSTs to a view; its other methods (list, edit) pass free."""

    rate_setting: str

    def get_rate(self) -> str | None:
        return getattr(settings, self.rate_setting)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if request.method != "POST" or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}

    def allow_request(self, request: Any, view: Any) -> bool:
        """Open when the cache is down: a Redis outage must not refuse every start.

        Starts stay durable through it (the project row is the task's outbox);
        the brake comes back with the cache.
        """
        try:
            return super().allow_request(request, view)
        except Exception:  # the cache backend's own errors (redis.ConnectionError, OSError)
            logger.warning("The throttle's cache is unreachable; letting %s through", self.scope)
            self.history = []
            return True

    def wait(self) -> float | None:
        """Seconds until the oldest request that fills the window leaves it.

        DRF's own estimate spreads the wait over the requests left, and gives
        none at all when the history holds more than a lowered rate allows.
        """
        if not self.history:
            return None
        holding = self.history[min(self.num_requests, len(self.history)) - 1]
        return max(0.0, self.duration - (self.now - holding))


class CreateThrottle(_PostThrottle):
    scope = "create"
    rate_setting = "THROTTLE_CREATE_RATE"


class StartThrottle(_PostThrottle):
    scope = "start"
    rate_setting = "THROTTLE_START_RATE"


@dataclass(frozen=True)
class _Caller:
    """What the throttles read of a request, for callers outside DRF."""

    user: Any
    method: str = "POST"


def start_wait(user: Any) -> float | None:
    """None if `user` may start a job now (and it is counted); else the seconds to wait.

    For `/v1/chat/completions`, a plain Django view that starts a job too.
    """
    throttle = StartThrottle()
    if throttle.allow_request(_Caller(user), None):
        return None
    return throttle.wait() or 1.0


def throttled_message(wait: float | None) -> str:
    seconds = max(1, math.ceil(wait or 1))  # as DRF rounds its Retry-After
    return f"Too many requests; try again in {seconds} second{'s' if seconds != 1 else ''}."
