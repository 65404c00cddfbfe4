from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from celery_progress.backend import ProgressRecorder


@shared_task(bind=True)
def hold_at_half(self: Any, seconds: float) -> None:
    """Report 50 of 100 the way celery-progress's README does, then hold there."""
    ProgressRecorder(self).set_progress(50, 100, description="Rendering scene 2 of 4")
    time.sleep(seconds)  # the benchmark stops the worker long before this ends
