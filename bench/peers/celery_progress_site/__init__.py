"""celery-progress 0.5 as its README sets it up: a Django site, a Celery app, one task.

bench/peers/run.py starts it: a worker (`celery -A celery_progress_site worker`) runs
`hold_at_half`, which reports 50 of 100 through celery-progress's `ProgressRecorder` and
then holds there, and gunicorn serves the poll, `/celery-progress/<task_id>/`.
"""

from celery_progress_site.celery import app

__all__ = ["app"]
