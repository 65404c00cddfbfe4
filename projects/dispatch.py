"""Which queued job gets a worker next: the fair queue, and the relay of tasks to the broker.

A started job is *queued* (a running status, no lease) until a worker claims
it. The committed project row is its task's outbox: `task_sent_at` stays null
until the job is *admitted* and its task handed to the broker.

* Fair: a job is admitted only while its owner has fewer than
  `MAX_ACTIVE_JOBS_PER_USER` jobs admitted or running. One user's twenty
  starts hold at most that many places in the broker; the rest wait here, so
  another user's first job waits only for the jobs already running. The
  admission counts and marks under a lock on the owner's user row, so two
  concurrent starts cannot both take the last place.
* Durable: `dispatch` runs after the start commits; a broker that is down
  leaves the job unadmitted and the sweeper of any `manage.py worker`
  (`relay`, every `JOB_SWEEP_SECONDS`) tries again, admits waiting jobs as
  places free up, and sends again the tasks a broker lost: a Redis server that
  restarted (another `run_id` than the one recorded at sending), or a task a
  worker took and died with before claiming it (sent long ago). A task sent
  twice is harmless: the second delivery finds the job claimed and steps aside.
* Visible: the relay numbers the line (`queue_position`, 1 = next: admitted
  jobs by when they were sent, then waiting ones by when they were started)
  and writes each change through `progress.write`, so every transport shows
  "Waiting for a worker — 2 jobs ahead of yours".
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.redis_broker import Redis
from django_q.tasks import async_task

from projects import progress
from projects.models import EventKind, Status, Step, VideoProject

logger = logging.getLogger(__name__)

TASK_FOR_STEP = {
    Step.SCRIPT: "projects.tasks.generate_script",
    Step.RENDER: "projects.tasks.render_video",
}
# A job admitted but unclaimed for this long is sent again: a worker may have
# taken its task from the broker and died before claiming it.
UNCLAIMED_AFTER = timedelta(minutes=5)


def queued() -> Any:
    return VideoProject.objects.running().filter(lease_owner="")


def _step_of(project: VideoProject) -> Step:
    return Step.SCRIPT if project.status == Status.GENERATING_SCRIPT else Step.RENDER


def dispatch(project_id: Any) -> bool:
    """Admit the queued job and send its task, if its owner has a free place; else it waits."""
    try:
        step = _admit(project_id)
    except Exception:  # the broker's own errors (redis, database) while reading its run id
        logger.warning("Could not reach the broker for %s; will retry", project_id, exc_info=True)
        return False
    if step is None:
        return False
    try:
        async_task(TASK_FOR_STEP[step], str(project_id))
    except Exception:
        logger.warning("Could not queue the %s job of %s; will retry", step, project_id)
        VideoProject.objects.filter(pk=project_id, lease_owner="").update(task_sent_at=None)
        return False
    return True


def _admit(project_id: Any) -> Step | None:
    with transaction.atomic():
        project = (
            queued()
            .filter(pk=project_id, task_sent_at__isnull=True)
            .only("owner", "status")
            .first()
        )
        if project is None:
            return None
        # Serializes the admissions of one user's jobs (SQLite: the write lock does).
        get_user_model().objects.select_for_update().filter(pk=project.owner_id).first()
        active = (
            VideoProject.objects.running()
            .filter(owner_id=project.owner_id)
            .filter(Q(task_sent_at__isnull=False) | ~Q(lease_owner=""))
            .count()
        )
        if active >= settings.MAX_ACTIVE_JOBS_PER_USER:
            return None
        admitted = queued().filter(pk=project_id, task_sent_at__isnull=True)
        if not admitted.update(task_sent_at=timezone.now(), task_broker=broker_epoch()):
            return None
    return _step_of(project)


def broker_epoch() -> str:
    """Which life of the broker a task went to: a Redis server that restarts has lost its queue.

    django-q2's ORM broker keeps tasks in our own database, which outlives restarts.
    """
    broker = get_broker()
    if isinstance(broker, Redis):
        return str(broker.connection.info("server")["run_id"])
    return "database"


def dispatch_waiting(owner_id: Any) -> None:
    """A place of the owner's freed up: admit their longest-waiting job."""
    for project_id in _waiting().filter(owner_id=owner_id).values_list("pk", flat=True)[:1]:
        dispatch(project_id)


def _waiting() -> Any:
    return queued().filter(task_sent_at__isnull=True).order_by("started_at")


def relay() -> int:
    """Send again what a broker lost, admit waiting jobs, renumber the line; how many were sent."""
    epoch = broker_epoch()
    lost = queued().filter(
        Q(task_sent_at__isnull=False)
        & (~Q(task_broker=epoch) | Q(task_sent_at__lt=timezone.now() - UNCLAIMED_AFTER))
    )
    sent = 0
    for project in lost.only("pk", "status", "task_sent_at"):
        step = _step_of(project)
        # Claimed for this resend by a conditional update: two sweepers send it once.
        again = queued().filter(pk=project.pk, task_sent_at=project.task_sent_at)
        if not again.update(task_sent_at=timezone.now(), task_broker=epoch):
            continue
        try:
            async_task(TASK_FOR_STEP[step], str(project.pk))
        except Exception:
            # Waiting again: admitted anew once the broker answers.
            queued().filter(pk=project.pk).update(task_sent_at=None)
            raise
        logger.warning("Queued the %s job of %s again: no broker held it", step, project.pk)
        sent += 1
    for project_id in _waiting().values_list("pk", flat=True):
        sent += dispatch(project_id)
    number_the_line()
    return sent


def number_the_line() -> None:
    """Write each queued job's place in line where it changed (1 = next)."""
    line = queued().order_by(F("task_sent_at").asc(nulls_last=True), "started_at", "pk")
    for place, (project_id, known) in enumerate(line.values_list("pk", "queue_position"), 1):
        if known != place:
            progress.write(
                project_id,
                expect=Q(lease_owner="", queue_position=known),
                fields={"queue_position": place, "progress_message": waiting_message(place)},
                events=[(EventKind.PROGRESS, {})],
            )


def place_at_the_end() -> int:
    """The place in line of a job queued now."""
    return queued().count() + 1


def waiting_message(place: int) -> str:
    if place <= 1:
        return "Queued"
    ahead = place - 1
    return f"Waiting for a worker — {ahead} job{'s' if ahead > 1 else ''} ahead of yours"
