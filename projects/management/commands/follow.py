"""Follow a job in the terminal: a progress bar, the log as it comes, the outcome as exit code.

It reads the project's event log by `seq` from the database, so it never
misses or repeats an event. Exit codes: 0 done (or nothing running),
1 failed, 2 cancelled, 3 gave up waiting (`--timeout`).

`follow --all <username>` follows every project of that user instead, those
made while it runs too, a line per event with its project's title and short
id, until Ctrl-C or `--timeout` (then it exits 0: there is no one outcome).
"""

from __future__ import annotations

import heapq
import time
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.bus import events_after
from projects.models import RUNNING_STATUSES, EventKind, ProgressEvent, Status, VideoProject

POLL_SECONDS = 0.25
BAR_WIDTH = 24


def _events_after(project_id: Any, cursor: int) -> list[ProgressEvent]:
    return list(ProgressEvent.objects.filter(project_id=project_id, seq__gt=cursor).order_by("seq"))


def _events_of_all(projects: Any, cursors: dict[Any, int]) -> list[tuple[ProgressEvent, str]]:
    """The user's events after each project's cursor (a new project: all of them), with its
    title; each project's in seq order, projects merged by when the events were written.
    Moves `cursors` past them."""
    behind = {
        pk: (cursors.get(pk, 0), title)
        for pk, title, version in projects.values_list("pk", "title", "version")
        if version > cursors.get(pk, 0)
    }
    if not behind:
        return []
    rows = list(events_after({pk: seq for pk, (seq, _) in behind.items()}))
    by_project: dict[Any, list[ProgressEvent]] = {}
    for event in rows:
        by_project.setdefault(event.project_id, []).append(event)
        cursors[event.project_id] = event.seq
    merged = heapq.merge(*by_project.values(), key=lambda event: event.created_at)
    return [(event, behind[event.project_id][1]) for event in merged]


def _settled(payload: dict[str, Any]) -> str:
    """A status with no job running, as a line: how the last job ended, or the draft's state."""
    status = payload.get("status")
    if status == Status.FAILED:
        return f"Failed: {(payload.get('error') or {}).get('message', 'unknown error')}"
    if status == Status.COMPLETED:
        return f"Video ready: {payload.get('videoUrl')}"
    message = payload.get("progressMessage") or ""
    if not message and payload.get("scriptData"):
        message = "Script ready."
    return f"{Status(status).label if status in Status.values else status}  {message}".rstrip()


def _bar(payload: dict[str, Any]) -> str:
    percent = int(payload.get("progress") or 0)
    filled = BAR_WIDTH * percent // 100
    done, total = payload.get("completedSteps", 0), payload.get("totalSteps", 0)
    step = f"step {min(done + 1, total)}/{total}"  # the step under way, as people count
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}%  {step}  "
        f"{payload.get('progressMessage', '')}"
    )


def _outcome(payload: dict[str, Any]) -> int | None:
    """The exit code a status event ends the follow with, or None while a job runs."""
    status = payload.get("status")
    if status in RUNNING_STATUSES:
        return None
    if status == Status.FAILED:
        return 1
    if status == Status.DRAFT and payload.get("completedAt") is None:
        return 2
    return 0


class Command(BaseCommand):
    help = "Follow a project's running job: progress bar, live log, and its outcome as exit code."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project_id", help="The project; with --all, the username.")
        parser.add_argument(
            "--all", action="store_true", help="Follow every project of the user named instead."
        )
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--from-start", action="store_true", help="Replay every event first.")
        start.add_argument("--since", type=int, help="Resume after this seq.")
        parser.add_argument("--timeout", type=float, help="Stop waiting after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.tty = self.stdout.isatty()
        self.bar_shown = False
        self.last_bar = ""
        if options["all"]:
            if options["since"] is not None:
                raise CommandError("--since is a seq of one project; with --all use --from-start.")
            self._follow_all(self._user(options["project_id"]), options)
            return
        project = self._project(options["project_id"])
        self.stdout.write(f"{project.title} — {project.get_status_display()}")
        replaying = options["from_start"] or options["since"] is not None
        if not replaying and not project.is_running:
            self.stdout.write("No job is running.")
            return
        if replaying:
            cursor = 0 if options["from_start"] else options["since"]
        else:
            cursor = project.version
            self._draw(project.to_progress_dict())
        code = self._follow(
            project.pk,
            cursor,
            options["timeout"],
            running=project.is_running and not replaying,
            replay_to=project.version if replaying else cursor,
        )
        if code:
            raise SystemExit(code)

    def _user(self, username: str) -> Any:
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"There is no user named {username!r}.") from None

    # --- every project of a user ---

    def _follow_all(self, user: Any, options: dict[str, Any]) -> None:
        projects = VideoProject.objects.owned_by(user)
        cursors = {} if options["from_start"] else dict(projects.values_list("pk", "version"))
        running = projects.running().order_by("created_at")
        self.stdout.write(
            f"Following the {len(cursors) if cursors else projects.count()} projects of "
            f"{user.get_username()} ({running.count()} running); Ctrl-C to stop."
        )
        if not options["from_start"]:
            for project in running:
                self._line_of(project.pk, project.title, _bar(project.to_progress_dict()))
        deadline = time.monotonic() + options["timeout"] if options["timeout"] else None
        try:
            while deadline is None or time.monotonic() < deadline:
                self._show_all(_events_of_all(projects, cursors))
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            pass

    def _show_all(self, events: list[tuple[ProgressEvent, str]]) -> None:
        for event, title in events:
            if event.kind == EventKind.LOG:
                for line in event.payload.get("lines", [event.payload.get("line", "")]):
                    self._line_of(event.project_id, title, line)
            elif event.kind == EventKind.PROGRESS or event.payload["status"] in RUNNING_STATUSES:
                self._line_of(event.project_id, title, _bar(event.payload))
            elif event.kind == EventKind.STATUS:  # the failure is told once, by its status
                self._line_of(event.project_id, title, _settled(event.payload))

    def _line_of(self, project_id: Any, title: str, text: str) -> None:
        self.stdout.write(f"{title} [{uuid.UUID(str(project_id)).hex[:8]}]  {text}")

    def _project(self, project_id: str) -> VideoProject:
        try:
            return VideoProject.objects.get(pk=uuid.UUID(project_id))
        except (ValueError, VideoProject.DoesNotExist):
            raise CommandError(f"There is no project with the id {project_id!r}.") from None

    def _follow(
        self, project_id: Any, cursor: int, timeout: float | None, *, running: bool, replay_to: int
    ) -> int:
        """Show events in seq order until a job ends after `replay_to`; return its exit code."""
        deadline = time.monotonic() + timeout if timeout else None
        outcome = 0
        while True:
            # Read before the events: a job seen ended here has all its events committed.
            job_runs = VideoProject.objects.running().filter(pk=project_id).exists()
            for event in _events_after(project_id, cursor):
                cursor = event.seq
                self._show(event)
                status = event.payload.get("status")
                if status in RUNNING_STATUSES:
                    running = True
                elif event.kind == EventKind.STATUS and running:
                    running, outcome = False, _outcome(event.payload) or 0
                    self._announce(event.payload, outcome)
                    if cursor >= replay_to:
                        self._end_bar()
                        return outcome
            if not job_runs and cursor >= replay_to:
                self._end_bar()
                return outcome
            if deadline is not None and time.monotonic() > deadline:
                self._line("Stopped waiting.")
                return 3
            time.sleep(POLL_SECONDS)

    def _show(self, event: ProgressEvent) -> None:
        if event.kind == EventKind.LOG:
            # One event carries every line logged in a moment; older events, one `line`.
            for line in event.payload.get("lines", [event.payload.get("line", "")]):
                self._line(line)
        elif event.kind != EventKind.ERROR:  # the failure is told once, by `_announce`
            self._draw(event.payload)

    def _announce(self, payload: dict[str, Any], outcome: int) -> None:
        if outcome == 1:
            self._line(f"Failed: {(payload.get('error') or {}).get('message', 'unknown error')}")
        elif outcome == 2:
            self._line("Cancelled.")
        elif payload.get("status") == Status.COMPLETED:
            self._line(f"Video ready: {payload.get('videoUrl')}")
        else:
            self._line("Script ready.")

    def _draw(self, payload: dict[str, Any]) -> None:
        text = _bar(payload)
        if text == self.last_bar:
            return
        self.last_bar = text
        if self.tty:
            self.stdout.write(f"\r\033[K{text}", ending="")
            self.stdout.flush()
            self.bar_shown = True
        else:
            self.stdout.write(text)

    def _line(self, text: str) -> None:
        self._end_bar()
        self.stdout.write(text)

    def _end_bar(self) -> None:
        self.last_bar = ""  # a log line pushed the bar away: draw it again next time
        if self.bar_shown:
            self.stdout.write("\r\033[K", ending="")
            self.bar_shown = False
