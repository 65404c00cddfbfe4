"""Follow a job in the terminal: a progress bar, the log as it comes, the outcome as exit code.

It reads the project's event log by `seq` from the database, so it never
misses or repeats an event. Exit codes: 0 done (or nothing running),
1 failed, 2 cancelled, 3 gave up waiting (`--timeout`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.models import RUNNING_STATUSES, EventKind, ProgressEvent, Status, VideoProject

POLL_SECONDS = 0.25
BAR_WIDTH = 24


def _events_after(project_id: Any, cursor: int) -> list[ProgressEvent]:
    return list(ProgressEvent.objects.filter(project_id=project_id, seq__gt=cursor).order_by("seq"))


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
        parser.add_argument("project_id")
        start = parser.add_mutually_exclusive_group()
        start.add_argument("--from-start", action="store_true", help="Replay every event first.")
        start.add_argument("--since", type=int, help="Resume after this seq.")
        parser.add_argument("--timeout", type=float, help="Stop waiting after this many seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self._project(options["project_id"])
        self.tty = self.stdout.isatty()
        self.bar_shown = False
        self.last_bar = ""
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
        percent = int(payload.get("progress") or 0)
        filled = BAR_WIDTH * percent // 100
        done, total = payload.get("completedSteps", 0), payload.get("totalSteps", 0)
        step = f"step {min(done + 1, total)}/{total}"  # the step under way, as people count
        text = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}%  {step}  "
            f"{payload.get('progressMessage', '')}"
        )
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
