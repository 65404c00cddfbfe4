"""Reading the errors of APIs in OpenAI's wire format, for the engines that call them.

Which statuses are worth another try, the provider's own sentence, and how
long it asks us to wait before that try.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime
from typing import Any

import openai

# The statuses OpenAI's own client retries: a timeout, a lock, a rate limit, and any 5xx.
TRANSIENT_STATUSES = frozenset({408, 409, 429})
# A provider's sentence goes into the job's log and error, which its owner reads:
# addresses in it (ours, a proxy's, the provider's) are for the worker's log only.
# (A sentence's last full stop or bracket is not part of the address.)
_ADDRESS = re.compile(r"\b(?:https?|wss?)://\S*[^\s.,;:!?)\]'\"]", re.IGNORECASE)


def is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def provider_message(error: openai.APIStatusError) -> str:
    """The sentence the provider sent (the client hands over the inner `error` object).

    A body that is not the provider's JSON (a proxy's HTML page, a stack
    trace) is not shown: the status's reason phrase stands in for it.
    """
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return without_addresses(body["message"].strip()[:300]) or "no message"
    reason = error.response.reason_phrase if error.response is not None else ""
    return reason or "no message"


def without_addresses(text: str) -> str:
    return _ADDRESS.sub("(an address)", text)


def retry_after(headers: Any) -> float | None:
    """How long the provider asks us to wait: `retry-after-ms`, or `Retry-After` (seconds, date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
