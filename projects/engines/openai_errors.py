"""Reading the errors of APIs in OpenAI's wire format, for the engines that call them.

Which statuses are worth another try, the provider's own sentence, and how
long it asks us to wait before that try.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import openai

# The statuses OpenAI's own client retries: a timeout, a lock, a rate limit, and any 5xx.
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def provider_message(error: openai.APIStatusError) -> str:
    """The sentence the provider sent: the client hands over the inner `error` object."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    text = error.response.text.strip() if error.response is not None else ""
    return text[:300] or error.response.reason_phrase or "no message"


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
