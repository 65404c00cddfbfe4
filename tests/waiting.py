from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], what: str, timeout: float = 30.0, every: float = 0.02
) -> T:
    """Poll `condition` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    seen = condition()
    while not seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"Waited {timeout:g} s for {what}; last seen: {seen!r}")
        time.sleep(every)
        seen = condition()
    return seen
