"""Start the peers that issue 13 measures the product against, each in var/peers-venv.

    .venv/bin/python bench/peers/run.py setup             # make or update var/peers-venv
    .venv/bin/python bench/peers/run.py celery-progress   # serve it until Ctrl-C, print the URL

bench/hotpaths.py and bench/sse_peers.py use the two context managers:

* `celery_progress()`: a Celery worker (solo pool) running `hold_at_half`, which
  reports 50 of 100 through celery-progress and holds there, with Redis as the
  broker and the result backend (db 10); and `gunicorn -w 1 -k sync` serving the
  poll. Yields its URL once it answers `"state": "PROGRESS"` at 50 %.
* `django_eventstream(database_url)`: django-eventstream's site migrated onto
  that PostgreSQL database, served by uvicorn in one process; `send(data)` calls
  `send_event` in that process (eventstream_site/serve.py) and returns the
  event's id and when the call began.
* `postgres_cluster(max_connections)`: a throwaway PostgreSQL server for it:
  django-eventstream holds a database connection per open stream, more than the
  machine's server allows (100) at 1,000 clients.

Every process runs in a session of its own and is stopped with its group.
The packages: bench/peers/requirements.txt, installed by bench/peers/setup.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().parent
TREE = PEERS.parents[1]
VENV = TREE / "var" / "peers-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = PEERS / "requirements.txt"
REDIS_URL = "redis://127.0.0.1:6379/10"
# The product's settings and services must not leak into the peers' processes.
_PRODUCT_VARIABLES = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "EVENT_BUS")


def ensure_venv() -> Path:
    """var/peers-venv's Python, after bench/peers/setup.sh if the venv is missing or stale."""
    installed = VENV / "installed-requirements.txt"
    if not (
        PYTHON.exists() and installed.exists() and installed.read_text() == REQUIREMENTS.read_text()
    ):
        print("making var/peers-venv (bench/peers/setup.sh)", flush=True)
        subprocess.run(["sh", str(PEERS / "setup.sh")], check=True)
    return PYTHON


def _peer_env(**variables: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _PRODUCT_VARIABLES}
    env.pop("VIRTUAL_ENV", None)
    return {**env, "PYTHONPATH": str(PEERS), **variables}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], env: dict[str, str], **streams: Any) -> subprocess.Popen:
    quiet = None if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL
    streams.setdefault("stdout", quiet)
    return subprocess.Popen(
        command, cwd=PEERS, env=env, stderr=quiet, start_new_session=True, **streams
    )


def _stop(process: subprocess.Popen, how: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, how)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _check_alive(processes: dict[str, subprocess.Popen]) -> None:
    for name, process in processes.items():
        if process.poll() is not None:
            hint = " (BENCH_SERVER_LOG=1 shows its output)"
            raise SystemExit(f"the peer's {name} exited with {process.returncode}{hint}")


def _wait_for_port(port: int, processes: dict[str, subprocess.Popen], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(processes)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port} in {timeout} s")


# --- celery-progress ------------------------------------------------------------------------


@dataclass(frozen=True)
class CeleryProgressPeer:
    url: str  # the poll of the task held at 50 of 100
    server_pid: int
    server_command: str


_SEND_TASK = """
import sys
from celery_progress_site.tasks import hold_at_half
hold_at_half.apply_async(args=[float(sys.argv[2])], task_id=sys.argv[1])
"""


@contextlib.contextmanager
def celery_progress(
    redis_url: str = REDIS_URL, hold_seconds: float = 3600
) -> Iterator[CeleryProgressPeer]:
    """celery-progress's poll under `gunicorn -w 1 -k sync`, its task held at 50 of 100."""
    python = str(ensure_venv())
    _check_redis(redis_url)
    run = uuid.uuid4().hex[:12]
    queue = f"bench-peers-{run}"
    task_id = str(uuid.uuid4())
    env = _peer_env(
        DJANGO_SETTINGS_MODULE="celery_progress_site.settings",
        BENCH_REDIS_URL=redis_url,
        BENCH_CELERY_QUEUE=queue,
    )
    port = _free_port()
    worker_command = [python, "-m", "celery", "-A", "celery_progress_site", "worker"]
    worker_command += ["--pool", "solo", "--loglevel", "WARNING", "--hostname", f"{queue}@%h"]
    worker_command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    server_command = [python, "-m", "gunicorn", "-w", "1", "-k", "sync"]
    server_command += ["-b", f"127.0.0.1:{port}", "celery_progress_site.wsgi:application"]
    url = f"http://127.0.0.1:{port}/celery-progress/{task_id}/"
    with contextlib.ExitStack() as stack:
        stack.callback(_forget_run, redis_url, queue, task_id)
        worker = _start(worker_command, env)
        # SIGQUIT: a cold shutdown; SIGTERM would wait for the held task to end.
        stack.callback(_stop, worker, signal.SIGQUIT)
        subprocess.run(
            [python, "-c", _SEND_TASK, task_id, str(hold_seconds)], cwd=PEERS, env=env, check=True
        )
        server = _start(server_command, env)
        stack.callback(_stop, server)
        _wait_for_progress(url, {"worker": worker, "gunicorn": server})
        yield CeleryProgressPeer(url, server.pid, shlex.join(["python", *server_command[1:]]))


def _check_redis(redis_url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_timeout=2).ping()
    except redis.RedisError as error:
        raise SystemExit(
            f"celery-progress needs Redis at {redis_url} ({error}); start one: "
            'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
        ) from None


def _wait_for_progress(
    url: str, processes: dict[str, subprocess.Popen], timeout: float = 60
) -> None:
    """Until the poll says the task is at 50 of 100: the worker took it and reported."""
    deadline = time.monotonic() + timeout
    seen: Any = "no answer"
    while time.monotonic() < deadline:
        _check_alive(processes)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                seen = json.load(response)
        except (OSError, ValueError) as error:
            seen = repr(error)
        else:
            if seen.get("state") == "PROGRESS" and seen["progress"]["current"] == 50:
                return
        time.sleep(0.1)
    raise SystemExit(f"celery-progress's task was not at 50 % in {timeout} s; last seen: {seen}")


def _forget_run(redis_url: str, queue: str, task_id: str) -> None:
    """Delete what this run left in Redis: its queue's keys and the task's result."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [f"celery-task-meta-{task_id}", *client.scan_iter(match=f"*{queue}*")]
    client.delete(*keys)


# --- django-eventstream ---------------------------------------------------------------------


@dataclass
class EventstreamPeer:
    port: int
    server_pid: int
    path: str  # the channel's event stream
    channel: str
    _server: subprocess.Popen

    def send(self, data: dict[str, Any]) -> tuple[int, float]:
        """`send_event` in the server process: (the event's id, `perf_counter()` at the call)."""
        assert self._server.stdin and self._server.stdout
        self._server.stdin.write(json.dumps({"channel": self.channel, "data": data}) + "\n")
        self._server.stdin.flush()
        while True:
            line = self._server.stdout.readline()
            if not line:
                raise SystemExit("django-eventstream's server closed its hook (it exited?)")
            with contextlib.suppress(ValueError):
                sent = json.loads(line)
                return sent["id"], sent["began"]


@contextlib.contextmanager
def django_eventstream(database_url: str, channel: str = "project-1") -> Iterator[EventstreamPeer]:
    """django-eventstream 5 on the existing, empty PostgreSQL database at `database_url`.

    Its database storage holds a connection per open stream (each stream reads on
    a thread of its own that keeps one): the server's `max_connections` must
    exceed the clients (`postgres_cluster`).
    """
    python = str(ensure_venv())
    env = _peer_env(
        DJANGO_SETTINGS_MODULE="eventstream_site.settings", BENCH_DATABASE_URL=database_url
    )
    subprocess.run([python, "-m", "django", "migrate", "-v0"], cwd=PEERS, env=env, check=True)
    port = _free_port()
    command = [python, "-m", "eventstream_site.serve", "--port", str(port)]
    server = _start(
        command, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        _wait_for_port(port, {"uvicorn": server})
        yield EventstreamPeer(port, server.pid, f"/events/{channel}/", channel, server)
    finally:
        assert server.stdin
        with contextlib.suppress(OSError):
            server.stdin.close()
        _stop(server)


# --- a PostgreSQL server of their own -------------------------------------------------------


@contextlib.contextmanager
def postgres_cluster(max_connections: int) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yields the URL of its `postgres` database.

    PostgreSQL's defaults (as the machine's cluster has them) but for
    `max_connections`. `initdb` and the server refuse to run as root: then they run
    as the `postgres` OS user, as the fault tests' cluster does (tests/faults).
    """
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise SystemExit("no PostgreSQL server here: apt-get install -y postgresql")
    binaries = found[-1].parent
    root = Path(tempfile.mkdtemp(prefix="bench-peers-postgres-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    as_postgres = os.geteuid() == 0
    if as_postgres:
        for path in (root, sockets):
            shutil.chown(path, "postgres", "postgres")

    def run(program: str, *arguments: str) -> None:
        command = [str(binaries / program), *arguments]
        if as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise SystemExit(f"{program} failed: {done.stdout}{done.stderr}{tail}")

    port = _free_port()
    try:
        run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{sockets}'\nmax_connections = {max_connections}\n"
            )
        run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "start")
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["setup", "celery-progress"])
    args = parser.parse_args()
    if args.what == "setup":
        print(ensure_venv())
        return
    with celery_progress() as peer:
        print(f"{peer.server_command}: {peer.url} (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    sys.exit(main())
