"""What authentication costs per status poll, in the web process's own CPU time.

    .venv/bin/python bench/auth_cost.py               # SQLite (throwaway file)
    .venv/bin/python bench/auth_cost.py --postgres    # PostgreSQL (scratch database, dropped after)

Runs each way of finding "the caller's project" many times in one process, on
one kept database connection (as a thread of the web pool does), and prints
the median CPU and wall time per call:

- the project alone, no caller checked (what no authentication would cost);
- a token the way DRF's TokenAuthentication reads it (token + user), then the
  project: the poll before;
- the token joined into the project's query (`ownership.token_holders_project`),
  compiled by the ORM at each call, and compiled once per process (the poll
  now: its caller is checked on every request, nothing about them is cached);
- the same join reading only `version`: a poll answered 304;
- a browser's session: the session row, its user, then the project.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _measure(ways: list[Callable[[], object]], rounds: int) -> list[tuple[float, float]]:
    """Mean CPU and median wall time per call of each way, called in turn (the same noise)."""
    cpu: list[list[float]] = [[] for _ in ways]
    wall: list[list[float]] = [[] for _ in ways]
    for round_ in range(rounds + 50):
        for index, call in enumerate(ways):
            began_cpu, began_wall = time.process_time(), time.perf_counter()
            call()
            if round_ >= 50:  # the first calls warm caches up
                cpu[index].append(time.process_time() - began_cpu)
                wall[index].append(time.perf_counter() - began_wall)
    # process_time ticks coarsely on some kernels: the mean over many calls is fairer.
    return [(statistics.fmean(c), statistics.median(w)) for c, w in zip(cpu, wall, strict=True)]


def run(rounds: int) -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.test import RequestFactory
    from rest_framework.authtoken.models import Token

    from projects import lifecycle
    from projects.api.auth import user_for_token
    from projects.models import VideoProject
    from projects.ownership import (
        owned_project,
        token_holders_project,
        token_holders_row,
        token_holders_version,
    )

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench-auth", password="a-long-bench-password-1")
    key = Token.objects.create(user=user).key
    project = lifecycle.create_project(user, {"title": "Bench", "brief": "A brief."})
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    factory = RequestFactory()

    def by_session() -> object:
        request = factory.get("/")
        request.session = SessionStore(session.session_key)
        return owned_project(get_user(request), project.pk)

    ways: list[tuple[str, Callable[[], object]]] = [
        ("project alone, no caller checked", lambda: VideoProject.objects.get(pk=project.pk)),
        (
            "token read, then project (before)",
            lambda: owned_project(user_for_token(key), project.pk),
        ),
        (
            "token joined into the project's query, compiled each time",
            lambda: token_holders_project(key, project.pk).order_by().first(),
        ),
        (
            "the same, compiled once per process (now)",
            lambda: token_holders_row(key, project.pk),
        ),
        (
            "the same, version only (now, a 304)",
            lambda: token_holders_version(key, project.pk),
        ),
        ("session, its user, then project", by_session),
    ]
    print(f"{os.environ.get('DATABASE_URL', 'sqlite')} — {rounds} calls each")
    print("| way | CPU per call | wall per call | CPU over no caller check |")
    print("|---|---:|---:|---:|")
    results = _measure([call for _, call in ways], rounds)
    baseline = results[0][0]
    for (name, _), (cpu, wall) in zip(ways, results, strict=True):
        extra = (cpu - baseline) * 1e6
        print(f"| {name} | {cpu * 1e6:.0f} µs | {wall * 1e6:.0f} µs | {extra:+.0f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videocreation.settings")
    os.environ.setdefault("SECRET_KEY", "a-secret-for-benchmarks-only-0123456789-0123456789")
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("EVENT_BUS", None)
    os.environ["THROTTLE_CREATE_RATE"] = "off"
    sys.path.insert(0, str(HERE))
    from harness import _scratch_postgres, throwaway_env

    if args.postgres:
        with _scratch_postgres("bench_auth") as url:
            os.environ["DATABASE_URL"] = url
            run(args.rounds)
    else:
        os.environ["DATABASE_URL"] = throwaway_env("bench-auth-")["DATABASE_URL"]
        run(args.rounds)


if __name__ == "__main__":
    main()
