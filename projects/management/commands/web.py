from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Serve the web application: WEB_CONCURRENCY uvicorn processes (default: one per core) "
        "sharing one port, each with WEB_THREADS threads for requests that answer at once."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.WEB_CONCURRENCY,
            help="web processes (default WEB_CONCURRENCY: %(default)s)",
        )
        # Open SSE streams would hold a restart for 30 minutes; their clients
        # reconnect with Last-Event-ID and miss nothing.
        parser.add_argument(
            "--graceful-seconds",
            type=int,
            default=3,
            help="how long a stopping process lets open requests finish (default %(default)s)",
        )

    def handle(
        self,
        *args: Any,
        host: str,
        port: int,
        processes: int,
        graceful_seconds: int,
        **options: Any,
    ) -> None:
        if processes < 1:
            raise SystemExit("--processes must be at least 1.")
        command = [sys.executable, "-m", "uvicorn", "videocreation.asgi:application"]
        command += ["--host", host, "--port", str(port), "--workers", str(processes)]
        # A full backlog drops connections before any process sees them.
        command += ["--backlog", "2048", "--no-access-log"]
        command += ["--timeout-graceful-shutdown", str(graceful_seconds)]
        sys.stdout.flush()
        os.execv(sys.executable, command)
