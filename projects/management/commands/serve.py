from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server (manage.py web) and a worker cluster together; Ctrl-C stops both."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        python = sys.executable
        commands = {
            # WEB_CONCURRENCY processes on one port (manage.py web).
            "web": [python, "manage.py", "web", "--host", host, "--port", str(port)],
            "worker": [python, "manage.py", "worker"],
        }
        children = {name: subprocess.Popen(command) for name, command in commands.items()}
        self.stdout.write(f"Serving on http://{host}:{port}/ with a worker; Ctrl-C stops both.")
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and all(child.poll() is None for child in children.values()):
                time.sleep(0.2)
        finally:
            self._stop_all(children)
        failed = [name for name, child in children.items() if child.returncode not in (0, -2, -15)]
        if failed and not stopping:
            raise SystemExit(f"{', '.join(failed)} stopped unexpectedly; stopped the rest.")

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
