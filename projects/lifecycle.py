"""Every change of a project's status, each one a compare-and-set through `progress.write`.

    DRAFT ──start_script──▶ GENERATING_SCRIPT ──finish_script──▶ DRAFT (with a script)
    DRAFT ──start_render──▶ RENDERING ──finish_render──▶ COMPLETED
    GENERATING_SCRIPT ──finish_script, auto_render──▶ RENDERING (in the same transaction)
    running ──fail──▶ FAILED          running ──cancel──▶ DRAFT (nothing lost)
    FAILED / COMPLETED ──start_*──▶ running again
    not running ──delete_project──▶ gone (with its events and files)

Two requests, two workers or a redelivered task racing on one project: the
update's WHERE clause lets exactly one of them win; the others see a row
count of 0 and answer 409 or step aside.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import shutil
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from credits import ledger
from projects import dispatch, progress, storage
from projects.models import RUNNING_STATUSES, EventKind, Status, Step, VideoProject
from projects.ownership import ProjectNotFound
from webhooks import outbox
from webhooks.models import EventType

logger = logging.getLogger(__name__)

STARTABLE = (Status.DRAFT, Status.FAILED, Status.COMPLETED)
EDITABLE = (Status.DRAFT, Status.FAILED)
STATUS_FOR_STEP = {Step.SCRIPT: Status.GENERATING_SCRIPT, Step.RENDER: Status.RENDERING}
# What a person wrote: a duplicate copies these (and the script).
BRIEF_FIELDS = ("title", "brief", "aspect_ratio", "scene_count", "seconds_per_scene", "style")
TITLE_MAX = VideoProject._meta.get_field("title").max_length
COPY_SUFFIX = " (copy)"


class Conflict(Exception):
    """The project's status does not allow the action."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class IdempotencyKeyReused(Exception):
    """A create repeated with the same Idempotency-Key but a different brief."""


def _status_event() -> list[progress.Event]:
    return [(EventKind.STATUS, {})]


def _current_status(project_id: Any) -> str:
    """The project's status now; a project deleted meanwhile is the 404 of a missing one."""
    status = VideoProject.objects.filter(pk=project_id).values_list("status", flat=True).first()
    if status is None:
        raise ProjectNotFound
    return status


def _enqueue(project: VideoProject) -> None:
    """Admit the job and hand its task to the broker once the status change commits.

    Or leave it waiting (its owner's places are taken, or the broker is down):
    the sweeper's relay admits it later. See projects/dispatch.py.
    """
    transaction.on_commit(partial(dispatch.dispatch, project.pk))


def _free_a_place(project: VideoProject) -> None:
    """A job of the owner ended: their longest-waiting job may go."""
    transaction.on_commit(partial(dispatch.dispatch_waiting, project.owner_id))


# --- what people do ----------------------------------------------------------


def create_project(owner: Any, brief_fields: dict[str, Any], **extra: Any) -> VideoProject:
    """A new draft; its log opens with its first status event (seq 1)."""
    with transaction.atomic():
        project = VideoProject.objects.create(owner=owner, **brief_fields, **extra)
        created = progress.write(project.pk, expect=Q(), fields={}, events=_status_event())
    assert created is not None
    return created


def start_job(
    project: VideoProject, step: Step, *, from_statuses: tuple[Status, ...] = STARTABLE
) -> VideoProject:
    """Queue the script or render job; exactly one of many concurrent starts wins."""
    expect = Q(status__in=from_statuses)
    if step == Step.RENDER:
        expect &= Q(script_data__isnull=False)
    with transaction.atomic():
        # Locked for the transaction: the price is that of the script the job will do.
        current = VideoProject.objects.select_for_update().filter(pk=project.pk).first()
        if current is None:
            raise ProjectNotFound  # deleted a moment ago
        price = current.prices()[step]
        place = dispatch.place_at_the_end()
        started = progress.write(
            project.pk,
            expect=expect,
            fields={
                "status": STATUS_FOR_STEP[step],
                "progress": 0,
                "progress_message": dispatch.waiting_message(place),
                "queue_position": place,
                "current_step": step,
                "completed_steps": 0,
                "total_steps": 0,
                "attempt": 1,
                "error_code": "",
                "error_message": "",
                "lease_owner": "",
                "lease_expires_at": None,
                "task_sent_at": None,
                "task_broker": "",
                "started_at": timezone.now(),
                "completed_at": None,
                "notified": False,
                "job_number": F("job_number") + 1,
                "run_started_at": None,
                "estimate_seconds": None,
                "charged": price,
                **({"auto_render": False} if step == Step.RENDER else {}),
            },
            events=_status_event(),
        )
        if started is None:
            status = _current_status(project.pk)
            if status not in from_statuses:
                raise Conflict(_busy_message(status), status)
            raise Conflict("Write the script before rendering the video.", status)
        # Refused: InsufficientCredits rolls the start back with the rest.
        ledger.charge_job(started, started.job_number, step, price, _job_reason(started, step))
        outbox.job_changed(started, EventType.STARTED)
        _enqueue(started)
    return started


def _job_reason(project: VideoProject, step: Step) -> str:
    if step == Step.SCRIPT:
        return f"Script of “{project.title}”"[:300]
    return f"Render of “{project.title}”"[:300]


def retry(project: VideoProject) -> VideoProject:
    """Start a failed project's last job again; a project in any other status is refused."""
    if project.status != Status.FAILED:
        raise Conflict(
            f"Only a failed project can be retried; this one is {project.get_status_display()}.",
            project.status,
        )
    if project.current_step not in Step.values:
        raise Conflict("The project has no last job to retry.", project.status)
    return start_job(project, Step(project.current_step), from_statuses=(Status.FAILED,))


def create_project_once(owner: Any, brief_fields: dict[str, Any], key: str) -> VideoProject:
    """The project this Idempotency-Key made, or a new one; the key with another brief: refused."""
    fingerprint = hashlib.sha256(json.dumps(brief_fields, sort_keys=True).encode()).hexdigest()
    mine = VideoProject.objects.owned_by(owner)
    try:
        project = mine.filter(idempotency_key=key).first() or create_project(
            owner, brief_fields, idempotency_key=key, idempotency_fingerprint=fingerprint
        )
    except IntegrityError:
        # A concurrent request with the same key created it a moment ago.
        project = mine.get(idempotency_key=key)
    if project.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was used before with a different body.")
    return project


def start_video(owner: Any, brief_fields: dict[str, Any], key: str | None = None) -> VideoProject:
    """A new project whose script job is queued and whose render follows it unreviewed.

    With an Idempotency-Key, a repeated request returns the project the first one
    made (running or finished) instead of starting another.
    """
    with transaction.atomic():
        if key is None:
            project = create_project(owner, brief_fields, auto_render=True)
        else:
            project = create_project_once(owner, brief_fields | {"auto_render": True}, key)
            if project.version > 1:
                return project
        # The whole video is asked for: refuse (and create nothing) unless it can be paid.
        price = sum(project.prices().values())
        balance = ledger.balance_of(owner.pk)
        if balance < price:
            raise ledger.InsufficientCredits(balance, price)
        return start_job(project, Step.SCRIPT, from_statuses=(Status.DRAFT,))


def cancel(project: VideoProject) -> VideoProject:
    """Stop the running job; the project goes back to DRAFT with its brief and script intact.

    The job is refunded in full, in the same transaction.
    """
    with transaction.atomic():
        cancelled = progress.write(
            project.pk,
            expect=Q(status__in=RUNNING_STATUSES),
            fields={
                "status": Status.DRAFT,
                "progress_message": "Cancelled",
                "auto_render": False,
                "lease_owner": "",
                "lease_expires_at": None,
                "queue_position": None,
                "charged": 0,
            },
            events=_status_event(),
        )
        if cancelled is not None:
            step = cancelled.current_step
            ledger.refund_jobs(
                cancelled, cancelled.job_number, f"Refund: the {step} job was cancelled"
            )
            outbox.job_changed(cancelled, EventType.CANCELLED)
            _free_a_place(cancelled)
    if cancelled is None:
        raise Conflict("There is no running job to cancel.", _current_status(project.pk))
    return cancelled


def mark_notified(project: VideoProject) -> VideoProject:
    """The owner has been told the last job finished. Saying it twice changes nothing."""
    if project.notified and not project.is_running:
        return project
    told = progress.write(
        project.pk,
        expect=~Q(status__in=RUNNING_STATUSES) & Q(notified=False),
        fields={"notified": True},
        events=_status_event(),
    )
    if told is not None:
        return told
    current = VideoProject.objects.get(pk=project.pk)
    if current.is_running:
        raise Conflict("The job is still running; there is nothing to be told yet.", current.status)
    return current


def dismiss_resume(project: VideoProject) -> VideoProject:
    """The owner said "Not now" to resuming the project: `GET unfinished` leaves it out
    until it changes again. Saying it twice changes nothing.

    The dismissal is announced like any other change (every open tab hears
    `resumeDismissed`); the next change of the project's state clears it
    (progress.write), its running job's progress does not.
    """
    dismissed = progress.write(
        project.pk,
        expect=Q(resume_dismissed=False),
        fields={"resume_dismissed": True},
        events=_status_event(),
    )
    if dismissed is not None:
        return dismissed
    current = VideoProject.objects.filter(pk=project.pk).first()
    if current is None:
        raise ProjectNotFound
    return current


def duplicate_project(project: VideoProject) -> VideoProject:
    """A new DRAFT of the same owner with the project's brief and script, as saved now.

    Any status will do: while a job runs, the copy has the script saved before
    it. The title says it is a copy; the saved script's scene previews are
    copied once the new project is committed. Creating a project costs no
    credits, and neither does this.
    """
    saved = VideoProject.objects.select_related("owner").filter(pk=project.pk).first()
    if saved is None:
        raise ProjectNotFound
    brief = {name: getattr(saved, name) for name in BRIEF_FIELDS}
    brief["title"] = _copy_title(saved.title)
    with transaction.atomic():
        copy = create_project(
            saved.owner,
            brief,
            script_data=saved.script_data,
            preview_set=saved.preview_set if saved.script_data else "",
        )
        if saved.script_data:
            scenes = len(saved.script_data.get("scenes") or [])
            transaction.on_commit(
                partial(_copy_previews, saved.pk, copy.pk, saved.preview_set, scenes)
            )
    return copy


def _copy_title(title: str) -> str:
    return title[: TITLE_MAX - len(COPY_SUFFIX)].rstrip() + COPY_SUFFIX


def _copy_previews(source_id: Any, copy_id: Any, preview_set: str, scenes: int) -> None:
    """Best effort: a preview that cannot be copied is one the copy shows without."""
    from projects.pipeline import preview_name  # the pipeline imports lifecycle

    for index in range(scenes):
        source = preview_name(source_id, index, preview_set)
        try:
            with storage.media().open(source) as preview:
                storage.media().save(
                    preview_name(copy_id, index, preview_set),
                    File(preview, name=posixpath.basename(source)),
                )
        except FileNotFoundError:
            continue
        except Exception:
            logger.exception("Could not copy the preview %s to project %s", source, copy_id)


def delete_project(project: VideoProject) -> None:
    """Remove a project with no queued or running job: its row, its events, its files.

    Raises `Conflict` while a job is queued or running (cancel it first), and
    `ProjectNotFound` if it is already gone. The ledger keeps its entries (their
    project becomes null): money that moved stays explained. The files go once
    the deletion commits, so a rollback leaves nothing missing.
    """
    with transaction.atomic():
        # The row's lock (SQLite: the write lock the transaction begins with), as
        # `start_job` takes it: a start racing with us waits, then finds it gone.
        found = (
            VideoProject.objects.select_for_update()
            .filter(pk=project.pk)
            .values_list("status", "video")
            .first()
        )
        if found is None:
            raise ProjectNotFound
        status, video = found
        if status in RUNNING_STATUSES:
            raise Conflict(_undeletable_message(status), status)
        VideoProject.objects.filter(pk=project.pk).delete()
        transaction.on_commit(partial(_remove_files, project.pk, video))


def _undeletable_message(status: str) -> str:
    if status == Status.RENDERING:
        return "The video is rendering; cancel the render before deleting the project."
    return "The script is being written; cancel it before deleting the project."


def _remove_files(project_id: Any, video: str) -> None:
    """The project's results in the media storage, and its work files on this machine.

    Clips another worker machine kept on its own disk (a cancelled or failed
    render's checkpoints) are not reachable from here.
    """
    from projects.pipeline import previews_folder, project_dir, videos_folder

    storage.delete(video)
    storage.remove_folder(videos_folder(project_id))
    storage.remove_folder(previews_folder(project_id))
    # Clips and an engine's work; on a local storage the previews' folder is in it too.
    shutil.rmtree(project_dir(project_id), ignore_errors=True)


def edit_brief(project: VideoProject, changes: dict[str, Any]) -> VideoProject:
    edited = progress.write(
        project.pk, expect=Q(status__in=EDITABLE), fields=changes, events=_status_event()
    )
    if edited is None:
        status = _current_status(project.pk)
        raise Conflict(
            f"The brief can be edited only in a draft or failed project ({status}).", status
        )
    return edited


def edit_script(project: VideoProject, script_data: dict[str, Any]) -> VideoProject:
    edited = progress.write(
        project.pk,
        expect=Q(status=Status.DRAFT),
        fields={"script_data": script_data},
        events=_status_event(),
    )
    if edited is None:
        status = _current_status(project.pk)
        raise Conflict(f"The script can be edited only in a draft project ({status}).", status)
    return edited


def _busy_message(status: str) -> str:
    if status == Status.GENERATING_SCRIPT:
        return "The script is being written; wait for it or cancel it first."
    if status == Status.RENDERING:
        return "The video is rendering; wait for it or cancel it first."
    return f"The project cannot start a job while it is {status}."


# --- what workers do -----------------------------------------------------------


def claim(
    project_id: Any, step: Step, lease_owner: str, basis: dict[str, Any] | None = None
) -> VideoProject | None:
    """Take the job for this worker, unless another live worker holds it or it is not queued.

    `basis`: when the run began and how long it should take (projects/estimates.py).
    """
    now = timezone.now()
    return progress.write(
        project_id,
        expect=Q(status=STATUS_FOR_STEP[step]) & (Q(lease_owner="") | Q(lease_expires_at__lt=now)),
        fields={
            "lease_owner": lease_owner,
            "lease_expires_at": now + timedelta(seconds=settings.JOB_LEASE_SECONDS),
            "progress_message": "Starting",
            "queue_position": None,
            **(basis or {}),
        },
        events=[
            progress.log_event("Picked up by a worker"),
            (EventKind.PROGRESS, {}),
        ],
    )


def next_attempt(project_id: Any, lease_owner: str, attempt: int, reason: str) -> bool:
    """A transient failure: the same worker tries again. False if the job is no longer ours."""
    return (
        progress.write(
            project_id,
            expect=Q(status__in=RUNNING_STATUSES, lease_owner=lease_owner),
            fields={"attempt": attempt, "progress_message": reason[:500]},
            events=[progress.log_event(reason), (EventKind.PROGRESS, {})],
        )
        is not None
    )


def finish_script(
    project_id: Any, lease_owner: str, script_data: dict[str, Any], preview_set: str | None = None
) -> bool:
    """Save the script; a project set to `auto_render` has its render queued in the same commit.

    `preview_set`, the folder of the new script's previews, is saved in the same write.
    """
    with transaction.atomic():
        finished = _finish(
            project_id,
            lease_owner,
            Status.GENERATING_SCRIPT,
            {
                "status": Status.DRAFT,
                "script_data": script_data,
                "progress_message": "Script ready",
                **({"preview_set": preview_set} if preview_set is not None else {}),
            },
        )
        if finished is not None and finished.auto_render:
            _start_auto_render(finished)
    return finished is not None


def _start_auto_render(project: VideoProject) -> None:
    """The render asked for with the brief; if the balance fell short meanwhile, say so instead."""
    try:
        with transaction.atomic():
            start_job(project, Step.RENDER, from_statuses=(Status.DRAFT,))
    except ledger.InsufficientCredits as refused:
        message = (
            f"Script ready; rendering it costs {refused.price} credits "
            f"and the balance is {refused.balance}."
        )
        progress.write(
            project.pk,
            expect=Q(status=Status.DRAFT),
            fields={
                "auto_render": False,
                "progress_message": message,
                "error_code": "insufficient_credits",
                "error_message": message,
            },
            events=[progress.log_event(message), *_status_event()],
        )


def finish_render(project_id: Any, lease_owner: str, video_name: str) -> bool:
    finished = _finish(
        project_id,
        lease_owner,
        Status.RENDERING,
        {"status": Status.COMPLETED, "video": video_name, "progress_message": "Video ready"},
    )
    return finished is not None


def _finish(
    project_id: Any, lease_owner: str, running: Status, fields: dict[str, Any]
) -> VideoProject | None:
    with transaction.atomic():
        finished = progress.write(
            project_id,
            expect=Q(status=running, lease_owner=lease_owner),
            fields={
                **fields,
                "progress": 100,
                "completed_steps": F("total_steps"),
                "completed_at": timezone.now(),
                "lease_owner": "",
                "lease_expires_at": None,
            },
            events=_status_event(),
        )
        if finished is not None:
            outbox.job_changed(finished, EventType.COMPLETED)
            _free_a_place(finished)
    return finished


def fail(
    project_id: Any,
    lease_owner: str | None,
    code: str,
    message: str,
    *,
    lease_expired_by: datetime | None = None,
) -> bool:
    """The job failed for good. `lease_owner=None` fails it whoever holds it.

    The sweeper passes `lease_expired_by`: a worker that renewed its lease a
    moment ago keeps its job.
    """
    expect = Q(status__in=RUNNING_STATUSES)
    if lease_owner is not None:
        expect &= Q(lease_owner=lease_owner)
    if lease_expired_by is not None:
        expect &= Q(lease_expires_at__lt=lease_expired_by)
    with transaction.atomic():
        failed = progress.write(
            project_id,
            expect=expect,
            fields={
                "status": Status.FAILED,
                "error_code": code,
                "error_message": message,
                "progress_message": "Failed",
                "completed_at": timezone.now(),
                "lease_owner": "",
                "lease_expires_at": None,
                "queue_position": None,
                "charged": 0,
            },
            events=[
                (EventKind.ERROR, {"error": {"code": code, "message": message}}),
                *_status_event(),
            ],
        )
        if failed is not None:
            step = failed.current_step
            ledger.refund_jobs(failed, failed.job_number, f"Refund: the {step} job failed")
            outbox.job_changed(failed, EventType.FAILED)
            _free_a_place(failed)
    return failed is not None


def sweep_lost_jobs() -> int:
    """Put back jobs whose worker died (their lease ran out); returns how many."""
    now = timezone.now()
    lost = VideoProject.objects.running().filter(lease_owner__gt="", lease_expires_at__lt=now)
    fields = ("pk", "status", "lease_owner", "attempt", "completed_steps", "total_steps")
    return sum(_put_back(project, now) for project in lost.only(*fields))


def _put_back(project: VideoProject, now: datetime) -> int:
    step = Step.SCRIPT if project.status == Status.GENERATING_SCRIPT else Step.RENDER
    if project.attempt >= settings.JOB_MAX_ATTEMPTS:
        return int(
            fail(
                project.pk,
                project.lease_owner,
                "worker_lost",
                f"The worker running this job stopped responding {project.attempt} times; "
                "the job was stopped. Try again.",
                lease_expired_by=now,
            )
        )
    attempt = project.attempt + 1
    message = _resuming_message(project, step)
    reason = f"{message} (attempt {attempt} of {settings.JOB_MAX_ATTEMPTS})"
    with transaction.atomic():
        # The same conditional update re-checks the expiry: a worker that renewed
        # its lease between our read and this write keeps its job.
        put_back = progress.write(
            project.pk,
            expect=Q(
                status=project.status,
                lease_owner=project.lease_owner,
                lease_expires_at__lt=now,
            ),
            fields={
                "attempt": attempt,
                "lease_owner": "",
                "lease_expires_at": None,
                "task_sent_at": None,
                "task_broker": "",
                "queue_position": None,
                "progress_message": message,
            },
            events=[progress.log_event(reason), (EventKind.PROGRESS, {})],
        )
        if put_back is None:
            return 0
        _enqueue(put_back)
    logger.warning("Put back project %s: %s", project.pk, reason)
    return 1


def _resuming_message(project: VideoProject, step: Step) -> str:
    if step == Step.RENDER and 0 < project.completed_steps < project.total_steps:
        return f"Worker lost — resuming from scene {project.completed_steps + 1}"
    if step == Step.RENDER:
        return "Worker lost — starting the render again"
    return "Worker lost — writing the script again"
