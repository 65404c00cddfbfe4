"""The memory of one `manage.py worker`: its main process and each django-q2 cluster under it.

Starts a worker on a throwaway SQLite database, waits until both clusters say
they run, prints each process's proportional set size (PSS, from
/proc/<pid>/smaps_rollup: shared pages split among their sharers) and the
total per cluster, then stops it with SIGTERM (as systemd's KillMode=mixed does)
and times the stop.

    .venv/bin/python bench/worker_memory.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from harness import throwaway_env  # noqa: E402


def main() -> None:
    env = throwaway_env("bench-worker-")
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    log = Path(env["MEDIA_ROOT"]).parent / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [python, "manage.py", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("running.") < 2:
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start: see {log}")
            time.sleep(0.2)
        time.sleep(2)  # the sweeper's first rounds
        report(worker.pid)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        print(f"\nstopped by SIGTERM in {time.monotonic() - started:.1f} s")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)


def report(root: int) -> None:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().split()[3])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))

    def tree(pid: int) -> list[int]:
        return [pid] + [p for child in children.get(pid, []) for p in tree(child)]

    main_pss = pss(root)
    print(f"main process (sweeper): {main_pss / 1024:.0f} MiB")
    total = main_pss
    for sentinel in children.get(root, []):
        processes = tree(sentinel)
        size = sum(pss(pid) for pid in processes)
        total += size
        print(f"cluster under {sentinel}: {len(processes)} processes, {size / 1024:.0f} MiB")
    print(f"the whole worker: {total / 1024:.0f} MiB")


def pss(pid: int) -> int:
    """KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
