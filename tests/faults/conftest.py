"""Servers the fault tests own, to kill and restart; and the product started against them.

- `RedisServer`: a `redis-server` child on a free port, without persistence, so
  a restart comes back empty (as a crashed cache-only Redis does).
- `PostgresCluster`: a throwaway cluster (`initdb` in a temporary folder) that
  a test can restart with `pg_ctl restart -m fast`.
- `Product`: `manage.py worker` and uvicorn web servers started against a given
  `DATABASE_URL`/`REDIS_URL`, each logging to a file; all of them are killed
  (their whole process group) when the test ends, passed or failed.

The test process itself keeps the suite's settings (its PostgreSQL test database
and the machine's Redis): a test that uses its own Redis drives the product
through processes configured for it, the web server's API and the workers.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection

from tests.conftest import AsgiServer
from tests.waiting import wait_for

REDIS_SERVER = shutil.which("redis-server")


def _postgres_bin() -> Path | None:
    """The newest PostgreSQL server's binaries, as Debian installs them."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3])
    )
    return found[-1].parent if found else None


POSTGRES_BIN = _postgres_bin()

# The suite runs twice in CI; these tests belong to the PostgreSQL + Redis
# deployment and take a while, so they run once, in that pass.
on_postgres_pass = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="fault tests run in the PostgreSQL + Redis pass (DATABASE_URL=postgres://…)",
)
needs_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed"
)
needs_postgres_binaries = pytest.mark.skipif(
    POSTGRES_BIN is None, reason="no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
)


def _can_run_postgres() -> bool:
    """As root, the server must run as the `postgres` OS user (it refuses to run as root)."""
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


needs_postgres_user = pytest.mark.skipif(
    not _can_run_postgres(), reason="running as root without a `postgres` OS user and runuser"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- Redis ---------------------------------------------------------------------


class RedisServer:
    """A `redis-server` this test owns: SIGKILLed, then started again, empty, on the same port."""

    def __init__(self, log_path: Path) -> None:
        assert REDIS_SERVER is not None
        self.log_path = log_path
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> RedisServer:
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.answers, f"redis-server to answer PING on port {self.port}", timeout)
        return self

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)

    def run_id(self) -> str:
        return str(self.client().info("server")["run_id"])

    def queued_tasks(self, cluster_name: str = "videocreation") -> int:
        """How many tasks wait in django-q2's list on this server."""
        return int(self.client().llen(f"django_q:{cluster_name}:q"))

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-server.log").start()
    try:
        yield server
    finally:
        server.kill()


# --- PostgreSQL ----------------------------------------------------------------


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free port.

    `initdb` and the server refuse to run as root (CI runs as root): then they
    run as the `postgres` OS user, which owns the folder.
    """

    def __init__(self) -> None:
        assert POSTGRES_BIN is not None
        self.bin = POSTGRES_BIN
        # Not under pytest's tmp_path: that is private to root, and the server
        # (as `postgres`) must reach its data folder.
        self.root = Path(tempfile.mkdtemp(prefix="faults-postgres-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log_path = self.root / "server.log"
        self.port = free_port()
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")

    def _run(self, program: str, *arguments: str, timeout: float = 60) -> None:
        command = [str(self.bin / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{program} {' '.join(arguments)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.server_log()}"
            )

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        settings_lines = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.sockets}'",
            # A throwaway cluster: what a crash would lose does not matter here,
            # and a clean restart (`-m fast`) writes everything out anyway.
            "fsync = off",
            "full_page_writes = off",
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings_lines) + "\n")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "start")

    def restart(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-m", "fast", "restart"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str) -> str:
        """For psycopg in the test process; a short timeout, for reading while it restarts."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-3000:]
        return ""

    def remove(self) -> None:
        """Stop the server whatever state it is in, then delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.remove()


# --- the product's processes -----------------------------------------------------


def product_env(database_url: str, redis_url: str | None, media_root: Path) -> dict[str, str]:
    """The environment of a worker or web server of one deployment; no REDIS_URL: the ORM broker."""
    env = {**os.environ, "DATABASE_URL": database_url, "MEDIA_ROOT": str(media_root)}
    env.pop("REDIS_URL", None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


@dataclass
class Product:
    """Workers and web servers started by one test; `stop_all` kills every one of them."""

    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web_servers: list[AsgiServer] = field(default_factory=list)

    def start_worker(self, env: dict[str, str], name: str = "worker") -> subprocess.Popen[bytes]:
        """`manage.py worker` with one django-q2 worker process unless `env` says otherwise."""
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "worker"],
                cwd=settings.BASE_DIR,
                env={"Q_WORKERS": "1", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(worker)
        return worker

    def wait_until_running(
        self, worker: subprocess.Popen[bytes], name: str = "worker", timeout: float = 30
    ) -> None:
        """Until both its clusters (jobs, webhook deliveries) took their broker.

        A worker started while the broker is down exits.
        """

        def running() -> bool:
            if worker.poll() is not None:
                raise AssertionError(f"The worker exited: {self.log(name)[-3000:]}")
            return self.log(name).count("] running.") >= 2

        wait_for(running, f"the worker {name!r} to run its clusters", timeout)

    def start_web_server(self, env: dict[str, str], name: str = "web") -> AsgiServer:
        server = AsgiServer(self.logs / f"{name}.log", {"DEBUG": "0", **env})
        self.web_servers.append(server)
        return server.start()

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"{name}.log").read_text(errors="replace")
        return ""

    def stop_all(self) -> None:
        for server in self.web_servers:
            if server.process is not None:
                kill_group(server.process)
                server.process = None
        # SIGKILL, not a graceful stop: the test is over, and a django-q2 pusher that
        # met a dead broker sleeps 10 s before a graceful stop can finish.
        for worker in self.workers:
            kill_group(worker)


@pytest.fixture
def product(tmp_path: Path) -> Iterator[Product]:
    processes = Product(logs=tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


# --- helpers for the tests -------------------------------------------------------


def api(server: AsgiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/video-creation",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str, dict[str, Any]], None]:
    """Prints timings past pytest's capture: `pytest tests/faults` shows them as they come."""

    def print_timings(title: str, timings: dict[str, Any]) -> None:
        lines = [f"[faults] {title}"]
        lines += [f"[faults]   {name}: {value}" for name, value in timings.items()]
        with capsys.disabled():
            print("\n" + "\n".join(lines), flush=True)

    return print_timings


def seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
