"""One SSE stream following 100 busy projects, against 100 streams following one project each.

    .venv/bin/python bench/all_projects.py                  # SQLite (the bus watches the file)
    .venv/bin/python bench/all_projects.py --postgres       # PostgreSQL (LISTEN/NOTIFY)
    .venv/bin/python bench/all_projects.py --redis          # SQLite, wake-ups over Redis
    .venv/bin/python bench/all_projects.py --projects 100 --rounds 10

Each layout gets a web process of its own (uvicorn serving bench/counting_asgi.py,
which counts every SQL statement the process runs and reports its memory and
CPU) on a throwaway database with one user and `--projects` projects:

* `all`: one client on `GET /api/video-creation/events`;
* `each`: one client per project on `GET …/projects/{id}/events`.

Once every client has its first event, it runs `--rounds` rounds; a round
writes one progress event to every project through `progress.write` (the path
every reporter takes), one after another from one thread, and waits until every
client has every event of the round. It prints, per layout: the write-to-arrival
latency (median and p99 over every event and client), and per update (one
event of one project) the SQL statements the server ran, its fan-out reads, its
CPU time, and the bytes the clients received; and the server's resident memory
with its growth from before the clients came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import bench_server, raise_fd_limit
from sse import _get_json, _writer, ms, percentile

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
SCRATCH_DB = f"videocreation_bench_all_{os.getpid()}"


class Arrivals:
    """When each (project, seq) reached each client; wakes the writer when all have a round."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, int], list[float]] = {}
        self.expected: dict[tuple[str, int], int] = {}
        self.missing = 0
        self.done = asyncio.Event()
        self.bytes = 0

    def expect(self, keys: list[tuple[str, int]], clients_per_key: int) -> None:
        self.done.clear()
        self.missing = len(keys) * clients_per_key
        self.expected = dict.fromkeys(keys, clients_per_key)
        if self.missing == 0:
            self.done.set()

    def arrived(self, project: str, seq: int, at: float) -> None:
        key = (project, seq)
        self.times.setdefault(key, []).append(at)
        if key in self.expected:
            self.missing -= 1
            if self.missing == 0:
                self.done.set()


class Reader:
    """One raw-socket SSE client: records each event's project and seq as it arrives."""

    def __init__(
        self, port: int, path: str, token: str, arrivals: Arrivals, project: str | None
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.port = port
        self.arrivals = arrivals
        self.project = project  # None: the events say which project (`projectId`)
        self.started = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.task = asyncio.create_task(self._run())
        started = asyncio.create_task(self.started.wait())
        await asyncio.wait([self.task, started], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not self.started.is_set():
            started.cancel()
            if self.task.done():
                self.task.result()
            raise SystemExit("a client got no first event in 60 s")

    async def _run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the events endpoint answered {head.splitlines()[0]!r}")
        buffer = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            chunk = (await reader.readexactly(size + 2))[:-2]
            at = time.perf_counter()
            self.arrivals.bytes += len(chunk)
            *blocks, buffer = (buffer + chunk).split(b"\n\n")
            for block in blocks:
                for line in block.split(b"\n"):
                    if line.startswith(b"data: "):
                        self.started.set()
                        data = json.loads(line[6:])
                        if "seq" in data:
                            project = self.project or data["projectId"]
                            self.arrivals.arrived(project, data["seq"], at)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


def _more_projects(first: str, count: int) -> list[str]:
    """The bench user's project `first` and `count - 1` more, made through the lifecycle."""
    from projects import lifecycle
    from projects.models import VideoProject

    owner = VideoProject.objects.get(pk=first).owner
    made = [
        lifecycle.create_project(owner, {"title": f"Bench {n}", "brief": "A brief for the bench."})
        for n in range(1, count)
    ]
    return [first, *(str(project.pk) for project in made)]


async def _measure(args: argparse.Namespace, port: int, token: str, first: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1)  # one thread, so one database connection
    projects = await loop.run_in_executor(thread, _more_projects, first, args.projects)
    writers: dict[str, Callable[[int], tuple[int, float]]] = {
        project: _writer(project) for project in projects
    }
    arrivals = Arrivals()
    await _get_json(port, f"/api/video-creation/projects/{first}/status", token)  # warm-up
    baseline = await _get_json(port, "/bench/counters")
    if args.layout == "all":
        clients = [Reader(port, "/api/video-creation/events", token, arrivals, None)]
    else:
        clients = [
            Reader(port, f"/api/video-creation/projects/{project}/events", token, arrivals, project)
            for project in projects
        ]
    try:
        for start in range(0, len(clients), 50):
            await asyncio.gather(*(client.open() for client in clients[start : start + 50]))
        while (await _get_json(port, "/bench/counters"))["subscribers"] < len(clients):
            await asyncio.sleep(0.05)
        before = await _get_json(port, "/bench/counters")
        bytes_before = arrivals.bytes
        per_key = 1  # every event reaches one client in either layout
        began: dict[tuple[str, int], float] = {}
        number = 0
        for _ in range(args.rounds):
            keys = []
            for project in projects:
                number += 1
                seq, at = await loop.run_in_executor(thread, writers[project], number)
                began[(project, seq)] = at
                keys.append((project, seq))
            arrivals.expect(
                [key for key in keys if len(arrivals.times.get(key, ())) < per_key], per_key
            )
            try:
                await asyncio.wait_for(arrivals.done.wait(), 60)
            except TimeoutError:
                raise SystemExit(f"{arrivals.missing} events never arrived in 60 s") from None
        after = await _get_json(port, "/bench/counters")
        updates = number
        latencies = [at - began[key] for key in began for at in arrivals.times.get(key, ())]
        return {
            "layout": args.layout,
            "clients": len(clients),
            "projects": len(projects),
            "updates": updates,
            "latency_median": statistics.median(latencies),
            "latency_p99": percentile(latencies, 0.99),
            "statements": (after["statements"] - before["statements"]) / updates,
            "reads": (after["fan_out_reads"] - before["fan_out_reads"]) / updates,
            "cpu": (after["cpu_seconds"] - before["cpu_seconds"]) / updates,
            "bytes": (arrivals.bytes - bytes_before) / updates,
            "rss_mib": after["rss_kib"] / 1024,
            "growth_mib": (after["rss_kib"] - baseline["rss_kib"]) / 1024,
        }
    finally:
        for client in clients:
            client.close()
        thread.shutdown()


TABLE_HEAD = (
    "| layout | clients | latency median | p99 | SQL statements per update "
    "| fan-out reads per update | server CPU per update | bytes to clients per update "
    "| server RSS | RSS growth with the clients |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
LAYOUTS = {
    "all": "one stream, `GET events`",
    "each": "one stream per project",
}


def _row(result: dict[str, Any]) -> str:
    return (
        f"| {LAYOUTS[result['layout']]} | {result['clients']} "
        f"| {ms(result['latency_median'])} | {ms(result['latency_p99'])} "
        f"| {result['statements']:.2f} | {result['reads']:.2f} | {ms(result['cpu'])} "
        f"| {result['bytes']:,.0f} B | {result['rss_mib']:.1f} MiB "
        f"| {result['growth_mib']:.1f} MiB |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with LISTEN/NOTIFY")
    parser.add_argument("--redis", action="store_true", help="wake-ups over Redis pub/sub")
    parser.add_argument("--projects", type=int, default=100, help="busy projects (default 100)")
    parser.add_argument("--rounds", type=int, default=10, help="writes to every project")
    parser.add_argument("--tree", type=Path, default=TREE, help="the source tree to serve")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.layout is None:
        # Each layout in a process (and a web server) of its own: memory from the same start.
        print(f"{args.projects} projects, {args.rounds} rounds of one update each", flush=True)
        print(TABLE_HEAD, flush=True)
        for layout in ("all", "each"):
            child = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--layout", layout],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(_row(result), flush=True)
        return

    raise_fd_limit(args.projects + 200)
    with bench_server(
        args.tree,
        "counting_asgi:application",
        prefix="bench-all-",
        postgres_db=f"{SCRATCH_DB}_{args.layout}" if args.postgres else None,
        redis=args.redis,
        extra_env={"PYTHONPATH": str(HERE)},  # for counting_asgi
    ) as (port, token, project_id):
        result = asyncio.run(_measure(args, port, token, project_id))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
