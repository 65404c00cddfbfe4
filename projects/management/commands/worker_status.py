"""`manage.py worker_status`: this queue's workers, as their heartbeats tell; exit 1 if none live.

It reads what `/healthz/workers` reads (see videocreation/health.py), so it
answers the same from any machine that reaches the database.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from videocreation.health import list_workers, this_queue


class Command(BaseCommand):
    help = (
        "List the `manage.py worker` clusters of this queue with when each was last seen; "
        "exit 1 when none has been seen within WORKER_STALE_SECONDS."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the list as JSON."
        )

    def handle(self, *args: Any, as_json: bool, **options: Any) -> None:
        try:
            workers = list_workers()
        except DatabaseError as error:
            raise CommandError(
                f"Could not read the workers' heartbeats (is the database migrated?): {error}"
            ) from error
        if as_json:
            self.stdout.write(json.dumps(workers, indent=2))
        else:
            self._print_table(workers)
        if not any(worker["alive"] for worker in workers):
            queue, broker = this_queue()
            raise CommandError(
                f"No worker of queue {queue!r} on the {broker} broker has been seen in the "
                f"last {settings.WORKER_STALE_SECONDS:g} s."
            )

    def _print_table(self, workers: list[dict[str, Any]]) -> None:
        if not workers:
            return
        rows = [("host", "pid", "processes", "started", "last seen", "")]
        for worker in workers:
            rows.append(
                (
                    worker["host"],
                    str(worker["pid"]),
                    str(worker["processes"]),
                    worker["startedAt"],
                    f"{worker['secondsAgo']:g} s ago",
                    "alive" if worker["alive"] else "gone",
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())
        alive = sum(worker["alive"] for worker in workers)
        queue, broker = this_queue()
        self.stdout.write(f"{alive} of {len(workers)} alive (queue {queue!r}, {broker} broker).")
