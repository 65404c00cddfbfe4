"""Time remaining: how close `estimatedSecondsRemaining` came to the truth over a run of jobs.

    .venv/bin/python bench/estimates.py              # SQLite, 12 projects
    .venv/bin/python bench/estimates.py --postgres   # a scratch PostgreSQL database, dropped after
    .venv/bin/python bench/estimates.py --jobs 20 --seed 7

It migrates a throwaway database (bench/harness.py), starts one real worker
(`manage.py worker`, Q_WORKERS=1, the local engine, media in a temporary
folder) and, one project at a time, through the product's own functions:
creates a project of 1-4 scenes (16:9), runs its script job, gives each scene
2-5 s with `edit_script`, and runs its render job; each job is waited for by
polling its row. Sizes come from a random generator with a fixed seed.

After each job it reads the job's progress and status events. For every event
with an estimate, the truth is the project's `completed_at` less the event's
`updatedAt`. It prints, per job: its size, its run time (claim to result), the
estimate at the first event that has one (the claim, at 0 %) against the truth
there, and the absolute error at the first events at or past 25, 50 and 75 % of
the bar; then, per step, the median and p90 (nearest rank) absolute error, in
seconds and in % of the job's run time, at the claim and at 50 %, and how many
jobs had no estimate at all (those before any job of their step had finished).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import bench_django

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
SCRATCH_DB = "videocreation_bench_estimates"
MARKS = (25, 50, 75)
JOB_DEADLINE = 180.0


@dataclass
class Sample:
    """One event of a job: where the bar was, what it said was left, and what was."""

    progress: int
    estimate: int
    truth: float


@dataclass
class JobRun:
    number: int
    step: str
    size: float
    run_seconds: float
    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def first(self) -> Sample | None:
        return self.samples[0] if self.samples else None

    def at(self, mark: int) -> Sample | None:
        """The first event with an estimate at or past `mark` % of the bar."""
        return next((sample for sample in self.samples if sample.progress >= mark), None)


# --- the worker ------------------------------------------------------------------


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=TREE,
            env={**env, "Q_WORKERS": "1", "VIDEO_ENGINE": "local"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_until_running(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited:\n{log_path.read_text()[-3000:]}")
        log = log_path.read_text(errors="replace")
        if "Q Cluster" in log and "running." in log:
            return
        time.sleep(0.1)
    raise SystemExit(f"the worker's cluster did not start in 60 s:\n{log_path.read_text()[-3000:]}")


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=15)
    except ProcessLookupError:
        pass


# --- the jobs --------------------------------------------------------------------


def _run_job(project: Any, step: str) -> tuple[Any, int]:
    """Start the job and wait for its end: the project as it ended, the seq of the job's start."""
    from projects import lifecycle
    from projects.models import RUNNING_STATUSES, VideoProject

    started = lifecycle.start_job(project, step)
    deadline = time.monotonic() + JOB_DEADLINE
    rows = VideoProject.objects.filter(pk=project.pk)
    while (status := rows.values_list("status", flat=True).get()) in RUNNING_STATUSES:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the {step} job of {project.pk} still {status} after {JOB_DEADLINE} s"
            )
        time.sleep(0.05)
    ended = rows.get()
    if ended.completed_at is None or ended.error_code:
        raise SystemExit(f"the {step} job of {project.pk} ended {status}: {ended.error_message}")
    return ended, started.version


def _measure(number: int, ended: Any, first_seq: int, step: str, size: float, label: str) -> JobRun:
    from projects.models import EventKind, ProgressEvent

    events = ProgressEvent.objects.filter(
        project=ended,
        seq__gte=first_seq,
        kind__in=[EventKind.PROGRESS, EventKind.STATUS],
    ).order_by("seq")
    job = JobRun(
        number=number,
        step=str(step),
        size=size,
        run_seconds=(ended.completed_at - ended.run_started_at).total_seconds(),
        label=label,
    )
    for payload in events.values_list("payload", flat=True):
        estimate = payload.get("estimatedSecondsRemaining")
        if estimate is None:
            continue
        at = datetime.fromisoformat(payload["updatedAt"])
        truth = (ended.completed_at - at).total_seconds()
        job.samples.append(Sample(payload["progress"], estimate, truth))
    return job


def _script_for(project: Any, rng: random.Random) -> dict[str, Any]:
    """The written script, each scene given 2-5 s: renders of varied length."""
    script = dict(project.script_data)
    script["scenes"] = [
        {**scene, "seconds": rng.randint(2, 5)} for scene in project.script_data["scenes"]
    ]
    return script


def _run_all(jobs: int, seed: int, show_events: bool) -> list[JobRun]:
    from django.contrib.auth.models import User

    from credits import ledger
    from projects import estimates, lifecycle
    from projects.models import Step

    # Not every task sent to the broker on the console.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    rng = random.Random(seed)
    user = User.objects.get(username="bench")
    ledger.grant(user.pk, jobs * 100, "Benchmark of time estimates")
    runs: list[JobRun] = []
    for number in range(1, jobs + 1):
        scenes, seconds = rng.randint(1, 4), rng.randint(2, 5)
        project = lifecycle.create_project(
            user,
            {
                "title": f"Estimate {number}",
                "brief": "A short film about how long things take, for the estimate benchmark.",
                "aspect_ratio": "16:9",
                "scene_count": scenes,
                "seconds_per_scene": seconds,
            },
        )
        ended, first_seq = _run_job(project, Step.SCRIPT)
        # The size is the scene count; each scene's preview lasts `seconds`.
        label = f"{scenes} sc x {seconds} s"
        runs.append(_measure(number, ended, first_seq, Step.SCRIPT, scenes, label))
        edited = lifecycle.edit_script(ended, _script_for(ended, rng))
        ended, first_seq = _run_job(edited, Step.RENDER)
        size = estimates.size_of(ended, Step.RENDER)
        label = f"{size:g} s"
        runs.append(_measure(number, ended, first_seq, Step.RENDER, size, label))
        for job in runs[-2:]:
            _print_job(job, show_events)
    return runs


# --- the report ------------------------------------------------------------------


def _error(sample: Sample | None) -> float | None:
    return None if sample is None else abs(sample.estimate - sample.truth)


def _cell(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


HEADER = (
    f"{'job':>3} {'step':<6} {'size':>11} {'run s':>6} {'claim est':>9} {'truth':>6} "
    f"{'err':>5} {'err %':>6} " + " ".join(f"{f'err@{mark}%':>7}" for mark in MARKS)
)


def _print_job(job: JobRun, show_events: bool) -> None:
    first = job.first
    error = _error(first)
    cells = [
        f"{job.number:>3}",
        f"{job.step:<6}",
        f"{job.label:>11}",
        f"{job.run_seconds:>6.2f}",
        f"{_cell(first and first.estimate, 'd'):>9}",
        f"{_cell(first and first.truth, '.2f'):>6}",
        f"{_cell(error):>5}",
        f"{_cell(error and 100 * error / job.run_seconds, '.0f'):>6}",
        *(f"{_cell(_error(job.at(mark))):>7}" for mark in MARKS),
    ]
    print(" ".join(cells), flush=True)
    if show_events:
        events = (
            f"{sample.progress}%:{sample.estimate}/{sample.truth:.2f}" for sample in job.samples
        )
        print("      " + " ".join(events), flush=True)


def _nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _summary(runs: list[JobRun], step: str) -> None:
    jobs = [job for job in runs if job.step == step]
    without = sum(1 for job in jobs if job.first is None)
    print(f"\n{step}: {len(jobs)} jobs, {without} without any estimate")
    for label, mark in (("claim (0 %)", 0), ("at 50 %", 50)):
        pairs = [(job, sample) for job in jobs if (sample := job.at(mark)) is not None]
        if not pairs:
            print(f"  {label}: no estimates")
            continue
        signed = [sample.estimate - sample.truth for _, sample in pairs]
        seconds = [abs(error) for error in signed]
        shares = [
            100 * error / job.run_seconds for error, (job, _) in zip(seconds, pairs, strict=True)
        ]
        print(
            f"  {label:<12} n={len(pairs):>2}  abs error median {statistics.median(seconds):.2f} s"
            f" ({statistics.median(shares):.0f} %), p90 {_nearest_rank(seconds, 0.9):.2f} s"
            f" ({_nearest_rank(shares, 0.9):.0f} %); median signed (estimate - truth)"
            f" {statistics.median(signed):+.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    parser.add_argument("--jobs", type=int, default=12, help="projects: one script + one render")
    parser.add_argument("--seed", type=int, default=1, help="of the sizes")
    parser.add_argument(
        "--events", action="store_true", help="also print each job's (%%, estimate, truth)"
    )
    args = parser.parse_args()
    began = time.monotonic()
    with bench_django(
        TREE, prefix="bench-estimates-", postgres_db=SCRATCH_DB if args.postgres else None
    ) as (env, _, _):
        log_path = Path(env["MEDIA_ROOT"]).parent / "worker.log"
        worker = _start_worker(env, log_path)
        try:
            _wait_until_running(worker, log_path)
            print(f"worker log: {log_path}\n\n{HEADER}", flush=True)
            runs = _run_all(args.jobs, args.seed, args.events)
        finally:
            _stop_worker(worker)
    for step in ("script", "render"):
        _summary(runs, step)
    print(f"\nwall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
