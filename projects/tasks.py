"""django-q2 entry points: fetch by id, call the pipeline; nothing else."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from projects import bus, dispatch, lifecycle, pipeline, progress
from webhooks import outbox


def generate_script(project_id: str) -> None:
    pipeline.generate_script(project_id)


def render_video(project_id: str) -> None:
    pipeline.render(project_id)


def sweep_lost_jobs() -> int:
    """A once-a-minute backstop for plain `qcluster` clusters; `worker` sweeps every second."""
    return lifecycle.sweep_lost_jobs() + dispatch.relay() + outbox.relay()


def prune_history() -> int:
    events = progress.prune_history(timedelta(days=settings.EVENT_RETENTION_DAYS))
    return events + bus.prune_departed()
