"""What the benchmarks share: a throwaway database set up by a tree's own code, and uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SETUP = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from projects import lifecycle
user = User.objects.create_user("bench")
project = lifecycle.create_project(user, {"title": "Bench", "brief": "A brief for the benchmark."})
print("BENCH", Token.objects.create(user=user).key, project.pk)
"""


def throwaway_env(prefix: str) -> dict[str, str]:
    """The environment for a server on a fresh SQLite file and media folder, no Redis."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "MEDIA_ROOT": str(workdir / "media"),
        "SECRET_KEY": "a-secret-for-benchmarks-only-0123456789-0123456789",
        "DEBUG": "0",
        # One bench user opens up to 1,000 streams and starts job after job.
        "MAX_STREAMS_PER_USER": "0",
        "THROTTLE_CREATE_RATE": "off",
        "THROTTLE_START_RATE": "off",
    }
    for name in ("REDIS_URL", "EVENT_BUS"):
        env.pop(name, None)
    return env


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to its hard limit (children inherit it).

    Each stream client is a descriptor in the benchmark and one in the server;
    the usual soft limit (1,024) runs out before 1,000 clients. An operator
    sets the same for the web server: `LimitNOFILE=` in its systemd unit,
    `ulimit -n` in its shell, `nofile` in /etc/security/limits.conf.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"{needed} open files are needed but the hard limit is {hard}: "
            f"raise it (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE= for a service)"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(tree: Path, env: dict[str, str]) -> tuple[str, str]:
    """Migrate the database `env` names; make a user, its token and a project."""
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
    made = subprocess.run(
        [python, "manage.py", "shell", "-c", SETUP],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    line = next(line for line in made.stdout.splitlines() if line.startswith("BENCH "))
    _, token, project_id = line.split()
    return token, project_id


def serve(tree: Path, env: dict[str, str], port: int, app: str) -> subprocess.Popen[bytes]:
    """uvicorn serving `app` from `tree`, one process, in its own process group."""
    command = [sys.executable, "-m", "uvicorn", app]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    command += ["--backlog", "4096"]
    return subprocess.Popen(
        command,
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL,
        start_new_session=True,
    )


async def wait_until_serving(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"uvicorn did not answer on port {port} in {timeout} s")


POSTGRES_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def bench_django(
    tree: Path,
    *,
    prefix: str,
    postgres_db: str | None = None,
    redis: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[dict[str, str], str, str]]:
    """A throwaway database, migrated, with Django set up on it in this process.

    The database is a temporary SQLite file, or the scratch PostgreSQL database
    `postgres_db`, created first and dropped after. Yields (the environment for
    the product's processes, the bench user's token, its project's id).
    """
    env = throwaway_env(prefix)
    env["DJANGO_SETTINGS_MODULE"] = "videocreation.settings"
    env.update(extra_env or {})
    if redis:
        env["REDIS_URL"] = REDIS_URL
        env["EVENT_BUS"] = "redis"
    with contextlib.ExitStack() as stack:
        if postgres_db:
            env["DATABASE_URL"] = stack.enter_context(_scratch_postgres(postgres_db))
        token, project_id = prepare(tree, env)
        os.environ.update(env)
        sys.path.insert(0, str(tree))
        import django

        django.setup()
        from django.conf import settings
        from django.db import connections

        stack.callback(connections.close_all)
        print(f"database: {settings.DATABASES['default']['ENGINE']}, bus: {settings.EVENT_BUS}")
        yield env, token, project_id


@contextlib.contextmanager
def bench_server(
    tree: Path,
    app: str,
    *,
    prefix: str,
    postgres_db: str | None = None,
    redis: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[int, str, str]]:
    """uvicorn serving `app` on a throwaway database (`bench_django`), all torn down after.

    Yields (port, token, project id).
    """
    with bench_django(
        tree, prefix=prefix, postgres_db=postgres_db, redis=redis, extra_env=extra_env
    ) as (env, token, project_id):
        port = free_port()
        server = serve(tree, env, port, app)
        try:
            asyncio.run(wait_until_serving(port))
            yield port, token, project_id
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:  # thousands of streams may take longer to end
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@contextlib.contextmanager
def _scratch_postgres(name: str) -> Iterator[str]:
    import psycopg

    def drop(admin: psycopg.Connection) -> None:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        drop(admin)
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            drop(admin)


def web_command(tree: Path, port: int) -> list[str]:
    """The product's web server as `make run` starts it, on `port`, without the worker.

    `manage.py web` where the tree has it; before that, the uvicorn command that
    `manage.py serve` runs beside its worker.
    """
    python = sys.executable
    if (tree / "projects" / "management" / "commands" / "web.py").exists():
        return [python, "manage.py", "web", "--host", "127.0.0.1", "--port", str(port)]
    command = [python, "-m", "uvicorn", "videocreation.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    return [*command, "--timeout-graceful-shutdown", "3"]


def process_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, all threads) and resident KiB of process `pid`, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command's closing parenthesis, utime and stime are the 12th and 13th fields.
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return cpu, int(line.split()[1])
    return cpu, 0
