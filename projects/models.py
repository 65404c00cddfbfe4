from __future__ import annotations

import contextlib
import math
import operator
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, ExpressionWrapper, F, Q, Value, When
from django.db.models.functions import Now
from django.urls import reverse

from projects.engines.base import ASPECT_SIZES


class Status(models.TextChoices):
    DRAFT = "DRAFT", "Draft"
    GENERATING_SCRIPT = "GENERATING_SCRIPT", "Writing the script"
    RENDERING = "RENDERING", "Rendering"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"


RUNNING_STATUSES = (Status.GENERATING_SCRIPT, Status.RENDERING)


class Step(models.TextChoices):
    SCRIPT = "script", "Script"
    RENDER = "render", "Render"


class AspectRatio(models.TextChoices):
    WIDE = "16:9", "16:9 (landscape)"
    TALL = "9:16", "9:16 (portrait)"
    SQUARE = "1:1", "1:1 (square)"


assert set(AspectRatio.values) == set(ASPECT_SIZES)


class VideoProjectQuerySet(models.QuerySet["VideoProject"]):
    def owned_by(self, user: Any) -> VideoProjectQuerySet:
        return self.filter(owner=user)

    def unfinished(self) -> VideoProjectQuerySet:
        """In progress, still a draft, or finished but not yet told to its owner."""
        return self.filter(
            Q(status__in=[*RUNNING_STATUSES, Status.DRAFT])
            | Q(completed_at__isnull=False, notified=False)
        )

    def not_dismissed(self) -> VideoProjectQuerySet:
        """Leaves out projects whose owner said "Not now" to resuming them, until they change."""
        return self.filter(resume_dismissed=False)

    def running(self) -> VideoProjectQuerySet:
        return self.filter(status__in=RUNNING_STATUSES)

    def count_by_status(self) -> dict[str, int]:
        """How many projects are in each status, every status named (0 where none)."""
        counted = dict(self.order_by().values_list("status").annotate(count=models.Count("pk")))
        return {status: counted.get(status, 0) for status in Status.values}


class VideoProject(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="video_projects"
    )
    title = models.CharField(max_length=200)
    brief = models.TextField()
    aspect_ratio = models.CharField(
        max_length=5, choices=AspectRatio.choices, default=AspectRatio.WIDE
    )
    scene_count = models.PositiveSmallIntegerField(default=4)
    seconds_per_scene = models.PositiveSmallIntegerField(default=4)
    style = models.CharField(max_length=100, blank=True, default="")
    idempotency_key = models.CharField(max_length=200, blank=True, default="", editable=False)
    idempotency_fingerprint = models.CharField(
        max_length=64, blank=True, default="", editable=False
    )

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=500, blank=True, default="")
    current_step = models.CharField(max_length=10, choices=Step.choices, blank=True, default="")
    completed_steps = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    script_data = models.JSONField(null=True, blank=True)
    video = models.FileField(upload_to="videos/", blank=True, default="")
    # The folder under previews/ holding the previews of the saved `script_data`:
    # a rewrite draws into a new folder, so the saved script's previews stay
    # until the new script is saved. Empty: previews/ itself (projects before it).
    preview_set = models.CharField(max_length=40, blank=True, default="", editable=False)
    error_code = models.CharField(max_length=50, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    attempt = models.PositiveSmallIntegerField(default=0)
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The job's task as an outbox entry: null until a broker has accepted it (the
    # relay sends it then), and which broker it went to (a Redis server's run id:
    # a restarted Redis has lost it).
    task_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    task_broker = models.CharField(max_length=64, blank=True, default="", editable=False)
    version = models.PositiveBigIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    notified = models.BooleanField(default=False)
    # Render as soon as the script is written (projects made by one request that
    # asks for the finished video, as /v1/chat/completions does). Cleared once
    # the render starts or a person cancels, so a later script job waits for review.
    auto_render = models.BooleanField(default=False)
    # Each start is a new job, numbered per project: what the ledger charges and refunds.
    job_number = models.PositiveIntegerField(default=0, editable=False)
    # What the current or last job cost, after any refund.
    charged = models.PositiveIntegerField(default=0, editable=False)
    # While the job waits for a worker: its place in line, 1 = next (projects/dispatch.py).
    queue_position = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # Written by the worker that claims the job (projects/estimates.py): when it began,
    # and how long jobs like it took here; null without any basis.
    run_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    estimate_seconds = models.FloatField(null=True, blank=True, editable=False)
    # The owner said "Not now" to resuming the project: it stays out of `GET
    # unfinished` until it changes again — any write with a status or error event
    # (an edit, a start, a finish, a failure, a cancel) clears it; a running job's
    # progress does not (progress.write).
    resume_dismissed = models.BooleanField(default=False, editable=False)

    objects = VideoProjectQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "lease_expires_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="unique_idempotency_key_per_owner",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="progress_at_most_100"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING_STATUSES

    @property
    def error(self) -> dict[str, str] | None:
        if self.status != Status.FAILED:
            return None
        return {"code": self.error_code, "message": self.error_message}

    @property
    def video_url(self) -> str | None:
        """The finished video, once the last render completed."""
        if self.status != Status.COMPLETED:
            return None
        return self._video_address()

    @property
    def previous_video_url(self) -> str | None:
        """The last finished video while the project is not COMPLETED (re-rendering, edited…)."""
        if self.status == Status.COMPLETED:
            return None
        return self._video_address()

    def _video_address(self) -> str | None:
        if not self.video:
            return None
        # Each render writes a new file: naming it in the URL lets caches and
        # the page tell a new video from the one they hold.
        version = Path(self.video.name).stem
        return f"{reverse('project-video', args=[self.pk])}?v={version}"

    def to_progress_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "progress": self.progress,
            "progressMessage": self.progress_message,
            "currentStep": self.current_step or None,
            "completedSteps": self.completed_steps,
            "totalSteps": self.total_steps,
            "attempt": self.attempt,
            "estimatedSecondsRemaining": self.seconds_left(),
            "version": self.version,
            "updatedAt": _iso(self.updated_at),
        }

    def to_dict(self) -> dict[str, Any]:
        """The project as API clients see it: its brief and its status object."""
        return {
            "title": self.title,
            "brief": self.brief,
            "aspectRatio": self.aspect_ratio,
            "sceneCount": self.scene_count,
            "secondsPerScene": self.seconds_per_scene,
            "style": self.style,
            **self.to_status_dict(),
        }

    def to_status_dict(self) -> dict[str, Any]:
        """The status object of API.md: what every transport tells a client."""
        return {
            "id": str(self.pk),
            "title": self.title,
            **self.to_progress_dict(),
            "scriptData": self.script_data,
            "videoUrl": self.video_url,
            "previousVideoUrl": self.previous_video_url,
            "error": self.error,
            "createdAt": _iso(self.created_at),
            "startedAt": _iso(self.started_at),
            "completedAt": _iso(self.completed_at),
            "notified": self.notified,
            "prices": self.prices(),
            "charged": self.charged,
            "queuePosition": self.queue_position if self.is_running else None,
            "resumeDismissed": self.resume_dismissed,
        }

    def seconds_left(self, now: datetime | None = None) -> int | None:
        """The running job's time left (see projects/estimates.py); None without a basis,
        or while the job waits for a worker.

        At the start it is the expected duration less the share of the bar done; as the
        bar fills, the job's own pace (elapsed / done * left) weighs more.
        """
        expected, began = self.estimate_seconds, self.run_started_at
        if not self.is_running or not self.lease_owner or expected is None or began is None:
            return None
        done = min(self.progress / 100, 0.99)
        elapsed = ((now or datetime.now(UTC)) - began).total_seconds()
        if done <= 0:
            # Before its first report the clock is all there is to count down with.
            return max(1, round(expected - elapsed))
        by_history = expected * (1 - done)
        by_pace = elapsed / done * (1 - done)
        # A running job is never "0 s" from done: the last second is saving the result.
        return max(1, round((1 - done) * by_history + done * by_pace))

    def prices(self) -> dict[str, int]:
        """What starting each job costs now; the render's follows the current script."""
        return {"script": settings.CREDITS_PER_SCRIPT, "render": self.render_price()}

    def render_price(self) -> int:
        return math.ceil(self.video_seconds() * settings.CREDITS_PER_VIDEO_SECOND)

    def video_seconds(self) -> float:
        """How long the video is: the script's scenes, or the brief's before a script."""
        scenes = (self.script_data or {}).get("scenes")
        if scenes:
            return sum(float(scene.get("seconds", 0)) for scene in scenes)
        return float(self.scene_count * self.seconds_per_scene)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class EventKind(models.TextChoices):
    STATUS = "status", "Status"
    PROGRESS = "progress", "Progress"
    LOG = "log", "Log"
    ERROR = "error", "Error"


class ProgressEvent(models.Model):
    """One entry of a project's ordered, durable event log; `seq` equals the project's version."""

    project = models.ForeignKey(VideoProject, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=10, choices=EventKind.choices)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["project", "seq"], name="unique_event_seq_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.project_id} #{self.seq} {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "payload": self.payload,
            "createdAt": _iso(self.created_at),
        }


class JobTiming(models.Model):
    """How long a finished job took on this installation: the basis of time-left estimates."""

    step = models.CharField(max_length=10, choices=Step.choices)
    engine = models.CharField(max_length=200)
    # Scenes written, or seconds of video rendered.
    size = models.FloatField()
    seconds = models.FloatField()
    finished_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["step", "engine", "-finished_at"])]

    def __str__(self) -> str:
        return f"{self.step} by {self.engine}: {self.size:g} in {self.seconds:.1f} s"


class Transport(models.TextChoices):
    SSE = "sse", "Server-Sent Events"
    WEBSOCKET = "websocket", "WebSocket"
    OPENAI = "openai", "OpenAI-compatible stream"


class LiveClientQuerySet(models.QuerySet["LiveClient"]):
    def connected(self) -> LiveClientQuerySet:
        """Connections whose web process vouched for them recently (a dead process can't)."""
        since = datetime.now(UTC) - timedelta(seconds=settings.LIVE_CLIENT_STALE_SECONDS)
        return self.filter(seen_at__gte=since)

    def gone(self) -> LiveClientQuerySet:
        """Rows whose web process stopped vouching for them (it died without cleaning up)."""
        return self.exclude(pk__in=self.connected().values("pk"))

    def summary(self) -> dict[str, Any]:
        """Connected clients counted by user and by project, each split by transport."""
        clients = list(
            self.connected().values_list("transport", "user__username", "project_id", "session_id")
        )
        sessions = {session for _, _, _, session in clients if session}
        watched: dict[Any, list[Any]] = {}
        for session, project in WebSocketSubscription.objects.filter(
            session_id__in=sessions
        ).values_list("session_id", "project_id"):
            watched.setdefault(session, []).append(project)
        by_user: dict[str, dict[str, int]] = {}
        by_project: dict[str, dict[str, int]] = {}
        for transport, username, project, session in clients:
            counts = by_user.setdefault(username, dict.fromkeys(Transport.values, 0))
            counts[transport] += 1
            for watched_project in [project] if project else watched.get(session, []):
                counts = by_project.setdefault(
                    str(watched_project), dict.fromkeys(Transport.values, 0)
                )
                counts[transport] += 1
        return {
            "total": len(clients),
            "byUser": [{"user": name, **counts} for name, counts in sorted(by_user.items())],
            "byProject": [{"project": pk, **counts} for pk, counts in sorted(by_project.items())],
        }


class LiveClient(models.Model):
    """One open SSE or WebSocket connection, in whichever web process holds it.

    Rows are how `GET active` sees every process. The process deletes the row
    when the client leaves and refreshes `seen_at` for all its clients in one
    statement now and then; the row of a process that died stops being
    refreshed, soon counts as gone, and is pruned with old history.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    transport = models.CharField(max_length=10, choices=Transport.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="live_clients"
    )
    # SSE: the project it streams. WebSocket: see the session's subscriptions.
    project = models.ForeignKey(
        VideoProject, null=True, blank=True, on_delete=models.CASCADE, related_name="live_clients"
    )
    session = models.ForeignKey(
        "WebSocketSession", null=True, blank=True, on_delete=models.CASCADE, related_name="clients"
    )
    process = models.CharField(max_length=100)
    opened_at = models.DateTimeField(auto_now_add=True)
    seen_at = models.DateTimeField(db_index=True)

    objects = LiveClientQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.transport} client of {self.user_id} in {self.process}"


class WebSocketSessionQuerySet(models.QuerySet["WebSocketSession"]):
    async def resume(self, user: Any, old_client_id: str) -> WebSocketSession:
        """The user's session `old_client_id` (its `resumed` set), or a new one.

        Someone else's id, or an unknown or malformed one, gets a new session:
        the same answer for each, so client ids cannot be probed.
        """
        session = None
        if old_client_id:
            with contextlib.suppress(ValueError):
                session = await self.filter(client_id=uuid.UUID(old_client_id), user=user).afirst()
        if session is None:
            session = await self.acreate(user=user)
            session.resumed = False
        else:
            await self.filter(pk=session.pk).aupdate(updated_at=datetime.now(UTC))
            session.resumed = True
        return session

    def idle_since(self, moment: datetime) -> WebSocketSessionQuerySet:
        return self.filter(updated_at__lt=moment)


class WebSocketSession(models.Model):
    """A WebSocket client's resumable state: who it is and where it is in each project's log.

    It outlives the connection (and the web process), so a client that
    reconnects with `?old_client_id=` picks up every project where it left off.
    """

    client_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="websocket_sessions"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = WebSocketSessionQuerySet.as_manager()
    resumed = False  # set by `resume`: whether a reconnecting client picked this session up

    def __str__(self) -> str:
        return f"WebSocket session {self.client_id}"


# Cursors per UPDATE: each adds a few parameters, well under SQLite's limit of 32,766.
ADVANCE_CHUNK = 500


class WebSocketSubscriptionQuerySet(models.QuerySet["WebSocketSubscription"]):
    def advance_many(self, acks: Mapping[tuple[str, str], int]) -> int:
        """Move many cursors at once: `{(session client_id, project id): acked seq}`.

        One UPDATE per `ADVANCE_CHUNK` cursors, however many sockets acked. Never
        moves back: two sockets of one session (a reconnect that beat the old
        socket's goodbye) may report in either order. Returns the rows moved.
        """
        items = list(acks.items())
        moved = 0
        for start in range(0, len(items), ADVANCE_CHUNK):
            chunk = items[start : start + ADVANCE_CHUNK]
            ahead = [
                Q(session_id=session, project_id=project)
                & (Q(last_seq__isnull=True) | Q(last_seq__lt=seq))
                for (session, project), seq in chunk
            ]
            target = Case(
                *[
                    When(session_id=session, project_id=project, then=Value(seq))
                    for (session, project), seq in chunk
                ],
                default=F("last_seq"),
                output_field=models.PositiveBigIntegerField(),
            )
            moved += self.filter(reduce(operator.or_, ahead)).update(last_seq=target)
        return moved


class WebSocketSubscription(models.Model):
    """A session's interest in one project, and the last `seq` its client acknowledged.

    `last_seq` is the client's own word only (DESIGN.md principle 12): the
    `since` it subscribed with, then its acks, written in batches by
    `projects.cursors`. Null until it has said anything: a reconnect then
    starts again from the project's current status.
    """

    session = models.ForeignKey(
        WebSocketSession, on_delete=models.CASCADE, related_name="subscriptions"
    )
    project = models.ForeignKey(
        VideoProject, on_delete=models.CASCADE, related_name="websocket_subscriptions"
    )
    last_seq = models.PositiveBigIntegerField(null=True, blank=True)

    objects = WebSocketSubscriptionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "project"], name="unique_subscription")
        ]

    def __str__(self) -> str:
        return f"{self.session_id} follows {self.project_id} from #{self.last_seq}"


class QueueSample(models.Model):
    """How many jobs waited and ran at one minute: the operator page's history of the queue.

    Written at most once a minute by whichever process gets there first (a
    scrape of /metrics, the operator page, a django-q2 schedule); see
    projects/metrics.py.
    """

    minute = models.DateTimeField(unique=True)
    waiting = models.PositiveIntegerField()
    running = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}: {self.waiting} waiting, {self.running} running"


class WorkerHeartbeatQuerySet(models.QuerySet["WorkerHeartbeat"]):
    def with_age(self) -> WorkerHeartbeatQuerySet:
        """Each row with `age`, the time since its last beat by the database's clock.

        Beats are written with the database's clock too, so workers and web
        processes on machines whose clocks disagree still agree on the age.
        """
        age = ExpressionWrapper(Now() - F("seen_at"), output_field=models.DurationField())
        return self.annotate(age=age)

    def alive(self) -> WorkerHeartbeatQuerySet:
        stale = timedelta(seconds=settings.WORKER_STALE_SECONDS)
        return self.filter(seen_at__gte=Now() - stale)

    def of_queue(self, queue: str, broker: str) -> WorkerHeartbeatQuerySet:
        return self.filter(queue=queue, broker=broker)


class WorkerHeartbeat(models.Model):
    """One `manage.py worker` cluster, as its main process last vouched for it.

    The sweeper writes `seen_at` once a sweep (JOB_SWEEP_SECONDS) and deletes
    the row when the cluster stops; a cluster killed outright leaves its row,
    which goes stale after WORKER_STALE_SECONDS and is pruned a day later.
    django-q2's own cluster stats live in Django's cache, which without Redis
    is each process's own memory: a web process could not see them.
    """

    # host:pid:random — a restarted worker that gets the same pid is a new row.
    name = models.CharField(max_length=150, unique=True)
    host = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    queue = models.CharField(max_length=100)
    broker = models.CharField(max_length=20)
    processes = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    objects = WorkerHeartbeatQuerySet.as_manager()

    def __str__(self) -> str:
        return f"worker {self.host}:{self.pid} on {self.broker} queue {self.queue}"

    def to_dict(self) -> dict[str, Any]:
        """Needs `age` (`WorkerHeartbeat.objects.with_age()`)."""
        seconds_ago = max(self.age.total_seconds(), 0.0)
        return {
            "host": self.host,
            "pid": self.pid,
            "queue": self.queue,
            "broker": self.broker,
            "processes": self.processes,
            "startedAt": _iso(self.started_at),
            "secondsAgo": round(seconds_ago, 1),
            "alive": seconds_ago <= settings.WORKER_STALE_SECONDS,
        }
