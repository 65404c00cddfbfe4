"""The one write path for a project's state and its event log.

`write` is the only function that changes a project's client-visible fields:
in one transaction it applies a compare-and-set update, bumps `version` by the
number of events, and appends those events numbered `seq = version`. The
lifecycle (status changes) and the `Reporter` (progress, steps, log lines)
both go through it.

The `Reporter` coalesces: an engine may report ten thousand times a second,
yet it writes at most one transaction per `PROGRESS_MIN_INTERVAL`, and the
last state is always written when a stage ends or the job finishes. Log lines
coalesce the same way: every line logged since the last write travels, in
order, in one `log` event (`log_event`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from projects import bus
from projects.engines.base import JobStopped
from projects.models import (
    RUNNING_STATUSES,
    EventKind,
    ProgressEvent,
    Status,
    Step,
    VideoProject,
)
from webhooks import outbox

Event = tuple[str, dict[str, Any]]
# Events that say the project's state changed, not just how far its job has got.
_CHANGES = frozenset({EventKind.STATUS, EventKind.ERROR})


def write(
    project_id: Any, *, expect: Q, fields: dict[str, Any], events: Iterable[Event]
) -> VideoProject | None:
    """Apply `fields` if the project matches `expect`, and append `events`; all or nothing.

    Returns the updated project, or None when it did not match (another
    request, worker or cancel got there first).
    """
    events = list(events)
    if "resume_dismissed" not in fields and any(kind in _CHANGES for kind, _ in events):
        # The project's state changes: an owner who said "Not now" is asked again.
        fields = {**fields, "resume_dismissed": False}
    # Inside a caller's transaction no savepoint: a failure here fails the whole change.
    with transaction.atomic(savepoint=False):
        updated = VideoProject.objects.filter(expect, pk=project_id).update(
            **fields, version=F("version") + len(events), updated_at=timezone.now()
        )
        if updated != 1:
            return None
        # The row is locked by our UPDATE until commit, so this read and the
        # seq numbers below cannot interleave with another writer's.
        project = VideoProject.objects.get(pk=project_id)
        first_seq = project.version - len(events) + 1
        created = ProgressEvent.objects.bulk_create(
            ProgressEvent(
                project_id=project.pk,
                seq=first_seq + offset,
                kind=kind,
                payload=event_payload(project, kind, extra) | {"seq": first_seq + offset},
            )
            for offset, (kind, extra) in enumerate(events)
        )
        if events:
            bus.announce(project.pk, created)
    return project


def delete_history(project: VideoProject) -> int | None:
    """Clear the log of a project with no running job; None if one runs.

    `version` keeps counting, so every client's cursor stays valid. The row
    lock keeps a job from starting (and logging) half way through.
    """
    with transaction.atomic():
        idle = VideoProject.objects.select_for_update().filter(pk=project.pk)
        if not idle.exclude(status__in=RUNNING_STATUSES).exists():
            return None
        deleted, _ = ProgressEvent.objects.filter(project=project).delete()
    return deleted


def prune_history(older_than: timedelta) -> int:
    """Drop the events of projects that finished (or were left) more than `older_than` ago."""
    cutoff = timezone.now() - older_than
    idle = VideoProject.objects.exclude(status__in=RUNNING_STATUSES).filter(updated_at__lt=cutoff)
    deleted, _ = ProgressEvent.objects.filter(project__in=idle).delete()
    return deleted


def event_payload(project: VideoProject, kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    """What an event carries: the status object's fields that apply to its kind."""
    if kind == EventKind.STATUS:
        return project.to_status_dict() | extra
    if kind == EventKind.PROGRESS:
        return project.to_progress_dict() | extra
    return dict(extra)


def extend_lease(project_id: Any, lease_owner: str) -> bool:
    """Keep holding a job; not a client-visible change, so no event. False if the job is gone."""
    expires = timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)
    return (
        VideoProject.objects.filter(
            pk=project_id,
            status__in=[Status.GENERATING_SCRIPT, Status.RENDERING],
            lease_owner=lease_owner,
        ).update(lease_expires_at=expires)
        == 1
    )


class JobTimedOut(JobStopped):
    """The job ran past `JOB_TIME_LIMIT`."""


class JobCancelled(JobStopped):
    """The project left its running status (cancelled), or another worker holds the job now."""


@dataclass(frozen=True)
class Stage:
    """One step of a job as a person sees it ("Rendering scene 2 of 4") and its share of the bar."""

    name: str
    message: str
    weight: float


# A log line longer than this is cut: one runaway line must not fill an event.
MAX_LOG_LINE = 2000
# Lines waiting for the next write; past either bound they are written at once,
# inside the interval, so a flood of output holds a bounded amount of memory
# (a few MB) and still makes only a handful of events a second.
MAX_PENDING_LINES = 20_000
MAX_PENDING_CHARS = 4_000_000


def log_event(*lines: str) -> Event:
    """One `log` event carrying `lines` in order; `line` joins them for older clients."""
    return (EventKind.LOG, {"lines": list(lines), "line": "\n".join(lines)})


@dataclass
class _Pending:
    progress: int
    message: str
    completed_steps: int
    log_lines: list[str] = field(default_factory=list)
    log_chars: int = 0

    def add_line(self, line: str) -> None:
        self.log_lines.append(line)
        self.log_chars += len(line)

    def log_is_full(self) -> bool:
        return len(self.log_lines) >= MAX_PENDING_LINES or self.log_chars >= MAX_PENDING_CHARS

    def take_log(self) -> list[str]:
        lines, self.log_lines, self.log_chars = self.log_lines, [], 0
        return lines


class Reporter:
    """Turns stage-by-stage reports into coalesced writes on one running job."""

    def __init__(
        self,
        project_id: Any,
        *,
        step: Step,
        lease_owner: str,
        stages: list[Stage],
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.project_id = project_id
        self.step = step
        self.status = Status.GENERATING_SCRIPT if step == Step.SCRIPT else Status.RENDERING
        self.lease_owner = lease_owner
        self.stages = stages
        self.deadline = deadline
        self.clock = clock
        self.total_weight = sum(stage.weight for stage in stages) or 1.0
        self.stage_index = 0
        self.done_weight = 0.0
        self.floor = 0
        self.pending = _Pending(progress=0, message="Starting", completed_steps=0)
        self.dirty = True
        self.last_write = -math.inf
        self.last_contact = clock()

    # --- what engines and the pipeline call ---------------------------------

    def begin(self, index: int, message: str | None = None) -> StageReporter:
        self.stage_index = index
        self.done_weight = sum(stage.weight for stage in self.stages[:index])
        self.pending.completed_steps = index
        self.pending.message = message or self.stages[index].message
        self._set_fraction(0.0)
        self.dirty = True
        self.maybe_flush()
        return StageReporter(self)

    def end_stage(self) -> None:
        index = self.stage_index
        self.done_weight = sum(stage.weight for stage in self.stages[: index + 1])
        self.pending.completed_steps = index + 1
        self._set_fraction(0.0)
        self.dirty = True
        self.maybe_flush()

    def update(self, fraction: float, message: str | None = None) -> None:
        self._set_fraction(fraction)
        if message is not None and message != self.pending.message:
            self.pending.message = message[:500]
            self.dirty = True
        self.maybe_flush()

    def log(self, line: str) -> None:
        self.pending.add_line(line[:MAX_LOG_LINE])
        self.dirty = True
        if self.pending.log_is_full():
            self.flush()
        else:
            self.maybe_flush()

    def new_attempt(self) -> None:
        """A retry may honestly move the bar back (it redoes the stage it failed in)."""
        self.floor = 0

    def check(self) -> None:
        now = self.clock()
        if now > self.deadline:
            raise JobTimedOut()
        if now - self.last_contact < 0.5:
            return
        if self.dirty:
            self.flush()
        elif not extend_lease(self.project_id, self.lease_owner):
            raise JobCancelled()
        self.last_contact = now

    def maybe_flush(self) -> None:
        if self.clock() > self.deadline:
            raise JobTimedOut()
        if self.dirty and self.clock() - self.last_write >= settings.PROGRESS_MIN_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write the pending state now; raise JobCancelled if the job is no longer ours."""
        pending = self.pending
        # Every line since the last write travels in one event, however many there are.
        events: list[Event] = [log_event(*pending.log_lines)] if pending.log_lines else []
        events.append((EventKind.PROGRESS, {}))
        with transaction.atomic():
            project = write(
                self.project_id,
                expect=Q(status=self.status, lease_owner=self.lease_owner),
                fields={
                    "progress": pending.progress,
                    "progress_message": pending.message,
                    "current_step": self.step,
                    "completed_steps": pending.completed_steps,
                    "total_steps": len(self.stages),
                    "lease_expires_at": timezone.now()
                    + timedelta(seconds=settings.JOB_LEASE_SECONDS),
                },
                events=events,
            )
            if project is not None:
                # In the same transaction: a committed report has its messages (webhooks/outbox.py).
                outbox.job_progressed(project)
        if project is None:
            raise JobCancelled()
        pending.take_log()
        self.dirty = False
        self.last_write = self.last_contact = self.clock()

    # --- inside ----------------------------------------------------------------

    def _set_fraction(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        weight = self.stages[self.stage_index].weight if self.stages else 0.0
        done = (self.done_weight + weight * fraction) / self.total_weight
        # 100 is written only by the lifecycle, once the result is saved.
        percent = max(self.floor, min(99, math.floor(done * 100)))
        if percent != self.pending.progress:
            self.pending.progress = percent
            self.dirty = True
        self.floor = percent


class StageReporter:
    """The `StageProgress` an engine is handed for one stage."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def update(self, fraction: float, message: str | None = None) -> None:
        self._reporter.update(fraction, message)

    def log(self, line: str) -> None:
        self._reporter.log(line)

    def check(self) -> None:
        self._reporter.check()
