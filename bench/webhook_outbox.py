"""What the webhook outbox costs the hottest write: a job's progress report.

Every progress write (`Reporter.flush`) now asks, in its transaction, which of
the owner's endpoints want `job.progress`, and takes the endpoint's progress
slot with a conditional update when one is due. This times flushes of one
running job, in a fresh database, in three cases:

* the outbox's call taken out, as before webhooks;
* no endpoint (most users);
* an endpoint that does not want `job.progress`;
* an endpoint that wants it, throttled (`WEBHOOK_PROGRESS_SECONDS` far above the
  run: the slot is tried and refused on every flush but the first).

    .venv/bin/python bench/webhook_outbox.py            # SQLite
    .venv/bin/python bench/webhook_outbox.py --postgres # PostgreSQL on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import _scratch_postgres  # noqa: E402

FLUSHES = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    os.environ.update(
        SECRET_KEY="a-secret-for-benchmarks-only-0123456789-0123456789",
        WEBHOOK_PROGRESS_SECONDS="86400",
        PROGRESS_MIN_INTERVAL="0",
    )
    os.environ.pop("REDIS_URL", None)
    if args.postgres:
        with _scratch_postgres("bench_webhook_outbox") as url:
            os.environ["DATABASE_URL"] = url
            run("PostgreSQL")
    else:
        folder = tempfile.mkdtemp(prefix="bench-outbox-")
        os.environ["DATABASE_URL"] = f"sqlite:///{folder}/bench.sqlite3"
        run("SQLite")


def run(database: str) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videocreation.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    from projects import lifecycle, progress
    from projects.models import Step
    from webhooks.models import Endpoint

    call_command("migrate", verbosity=0)
    print(f"{database}: {FLUSHES} progress flushes of one running job each case\n")
    print("| case | median µs per flush | p90 µs | SQL statements per flush |")
    print("|---|---|---|---|")
    asks = progress.outbox.job_progressed
    for case, events in [
        ("before webhooks (the outbox call taken out)", "none"),
        ("no endpoint", None),
        ("an endpoint without job.progress", ["job.completed"]),
        ("an endpoint with job.progress (throttled)", ["job.progress"]),
    ]:
        user = User.objects.create_user(f"bench-{len(case)}-{time.monotonic_ns()}")
        progress.outbox.job_progressed = (lambda project: 0) if events == "none" else asks
        if isinstance(events, list):
            Endpoint.objects.create(owner=user, url="https://example.com/hooks", events=events)
        project = lifecycle.create_project(user, {"title": "Bench", "brief": "A brief to time."})
        lifecycle.start_job(project, Step.SCRIPT)
        lifecycle.claim(project.pk, Step.SCRIPT, "bench-worker")
        reporter = progress.Reporter(
            project.pk,
            step=Step.SCRIPT,
            lease_owner="bench-worker",
            stages=[progress.Stage("write", "Writing", 1.0)],
            deadline=float("inf"),
        )
        reporter.begin(0)
        times = []
        for index in range(FLUSHES):
            reporter.pending.message = f"Step {index}"
            started = time.perf_counter()
            reporter.flush()
            times.append((time.perf_counter() - started) * 1e6)
        with CaptureQueriesContext(connection) as queries:
            reporter.pending.message = "counted"
            reporter.flush()
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"| {case} | {median:,.0f} | {p90:,.0f} | {len(queries)} |")
    connections.close_all()


if __name__ == "__main__":
    main()
