"""From a reporter's write to an SSE client: latency, database work and memory per subscriber count.

    .venv/bin/python bench/sse.py                   # SQLite (no Redis: the bus watches the file)
    .venv/bin/python bench/sse.py --postgres        # PostgreSQL (LISTEN/NOTIFY)
    .venv/bin/python bench/sse.py --redis           # SQLite, wake-ups over Redis pub/sub
    .venv/bin/python bench/sse.py --postgres --clients 5000
    .venv/bin/python bench/sse.py --tree /tmp/before   # another source tree, same venv

It migrates a throwaway database (a temporary SQLite file, or a scratch
PostgreSQL database it drops afterwards), makes a user and a project, and
starts one uvicorn process serving the project (bench/counting_asgi.py wraps it
to count every SQL statement the process runs and to report its memory). It
then opens SSE clients on `GET …/projects/{id}/events` — 1, then 10, 100 and
1,000 at once, on raw sockets in this process — and for each count makes
`--updates` writes through `progress.write`, the path every reporter takes,
each a progress event. Before each write it waits a random 0-300 ms (so writes
fall anywhere in the SQLite poll period) and after it waits until every client
has the event. For each count it prints:

* latency: from the start of the write call to the event's arrival at a
  client, median and p99 over every (update, client) pair; and to its
  arrival at the last client, median and p99 over the updates; and how long
  the write call itself took (its transaction, the commit's flush to disk
  included), median; and, where the wake-up carries the events (PostgreSQL,
  Redis), from the moment the server's bus heard it to the last client's
  arrival (both `time.perf_counter()`, one clock), median: the server's share;
* statements per update: every SQL statement the server ran during the
  updates (fan-out reads, safety or SQLite polls, live-client refreshes),
  divided by the updates; and the bus's fan-out log reads per update;
* the server's CPU time (all its threads) per update;
* the server's resident memory, and its growth per subscriber over the
  memory before any subscriber.

A client count past ~1,000 needs more file descriptors than the usual soft
limit of 1,024, in this process and in the server's: it raises its own soft
limit (the server inherits it) and says so when the hard limit is too low.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import bench_server, raise_fd_limit

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
# Of this run alone: the scratch database is dropped at the end, and others may bench too.
SCRATCH_DB = f"videocreation_bench_sse_{os.getpid()}"
OPEN_AT_ONCE = 50  # clients connecting concurrently while a count is built up


class Arrivals:
    """When each client saw each seq; wakes the writer when all clients have one."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = defaultdict(list)
        self.clients = 0
        self._waiting: tuple[int, asyncio.Event] | None = None

    def arrived(self, seq: int, at: float) -> None:
        self.times[seq].append(at)
        if self._waiting and self._waiting[0] == seq and len(self.times[seq]) >= self.clients:
            self._waiting[1].set()

    async def all_have(self, seq: int, timeout: float) -> None:
        done = asyncio.Event()
        self._waiting = (seq, done)
        if len(self.times[seq]) >= self.clients:
            done.set()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            got = len(self.times[seq])
            message = f"only {got} of {self.clients} clients got seq {seq} in {timeout} s"
            raise SystemExit(message) from None
        finally:
            self._waiting = None


class SseClient:
    """One raw-socket SSE client: HTTP/1.1, chunked body, `id:` lines recorded as they arrive."""

    def __init__(self, port: int, path: str, token: str, arrivals: Arrivals) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Token {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.port = port
        self.arrivals = arrivals
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
            raise SystemExit("an SSE client got no first event in 60 s")

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
            buffer += (await reader.readexactly(size + 2))[:-2]
            at = time.perf_counter()
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        self.started.set()
                        self.arrivals.arrived(int(line[4:]), at)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


async def _get_json(port: int, path: str, token: str = "") -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Token {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{path} answered {head.splitlines()[0]!r}")
    return json.loads(body)


def _writer(project_id: str) -> Callable[[int], tuple[int, float]]:
    """A function writing one progress event the way a reporter does; returns (seq, seconds)."""
    from django.db.models import Q

    from projects import progress
    from projects.models import EventKind

    def write(number: int) -> tuple[int, float]:
        began = time.perf_counter()
        project = progress.write(
            project_id,
            expect=Q(),
            fields={"progress_message": f"Benchmark update {number}"},
            events=[(EventKind.PROGRESS, {})],
        )
        return project.version, began

    return write


def _commit_without_flush_wait() -> None:
    """This thread's PostgreSQL commits return before the WAL reaches the disk."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")


def percentile(values: list[float], share: float) -> float:
    """The value at `share` (0-1) of the sorted `values`, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


TABLE_HEAD = (
    "| subscribers | latency median | p99 | last client median | last client p99 "
    "| the write call itself | wake-up heard → last client | SQL statements per update "
    "| fan-out reads per update | server CPU per update | server RSS | RSS per subscriber |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


async def _measure(
    args: argparse.Namespace,
    port: int,
    token: str,
    project_id: str,
    client: Callable[[Arrivals], Any] | None = None,
) -> None:
    """The table for `args.subscribers` clients made by `client` (SSE clients by default)."""
    arrivals = Arrivals()
    path = f"/api/video-creation/projects/{project_id}/events"
    if client is None:

        def client(arrivals: Arrivals) -> SseClient:
            return SseClient(port, path, token, arrivals)

    write = _writer(project_id)

    def timed_write(number: int) -> tuple[int, float, float]:
        seq, began = write(number)
        return seq, began, time.perf_counter()

    thread = ThreadPoolExecutor(max_workers=1)  # one thread, so one database connection
    loop = asyncio.get_running_loop()
    clients: list[Any] = []
    if getattr(args, "async_commit", False):
        await loop.run_in_executor(thread, _commit_without_flush_wait)

    await _get_json(port, f"/api/video-creation/projects/{project_id}/status", token)  # warm-up
    baseline = await _get_json(port, "/bench/counters")
    print(f"server memory before any subscriber: {baseline['rss_kib'] / 1024:.1f} MiB")
    print(TABLE_HEAD)
    number = 0
    try:
        for count in args.subscribers:
            while len(clients) < count:
                batch = [client(arrivals) for _ in range(min(OPEN_AT_ONCE, count - len(clients)))]
                clients += batch
                await asyncio.gather(*(client.open() for client in batch))
            arrivals.clients = len(clients)
            while (await _get_json(port, "/bench/counters"))["subscribers"] < count:
                await asyncio.sleep(0.05)
            before = await _get_json(port, "/bench/counters")
            latencies: list[float] = []
            last: list[float] = []
            calls: list[float] = []
            last_at: dict[int, float] = {}
            for _ in range(args.updates):
                await asyncio.sleep(random.uniform(0, 0.3))
                number += 1
                seq, began, ended = await loop.run_in_executor(thread, timed_write, number)
                calls.append(ended - began)
                await arrivals.all_have(seq, timeout=60)
                times = arrivals.times.pop(seq)
                latencies += [at - began for at in times]
                last.append(max(times) - began)
                last_at[seq] = max(times)
            after = await _get_json(port, "/bench/counters")
            statements = (after["statements"] - before["statements"]) / args.updates
            reads = (after["fan_out_reads"] - before["fan_out_reads"]) / args.updates
            cpu = (after["cpu_seconds"] - before["cpu_seconds"]) / args.updates
            growth = (after["rss_kib"] - baseline["rss_kib"]) / count
            heard = {int(seq): at for seq, at in after.get("heard", {}).items()}
            server = [at - heard[seq] for seq, at in last_at.items() if seq in heard]
            server_share = ms(statistics.median(server)) if server else "n/a"
            print(
                f"| {count:,} | {ms(statistics.median(latencies))} "
                f"| {ms(percentile(latencies, 0.99))} "
                f"| {ms(statistics.median(last))} | {ms(percentile(last, 0.99))} "
                f"| {ms(statistics.median(calls))} | {server_share} "
                f"| {statements:.1f} | {reads:.2f} | {ms(cpu)} | {after['rss_kib'] / 1024:.1f} MiB "
                f"| {growth:.1f} KiB |",
                flush=True,
            )
    finally:
        for client in clients:
            client.close()
        thread.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with LISTEN/NOTIFY")
    parser.add_argument("--redis", action="store_true", help="wake-ups over Redis pub/sub")
    parser.add_argument(
        "--subscribers",
        "--clients",
        type=int,
        nargs="+",
        default=[1, 10, 100, 1000],
        help="client counts, each held while its updates are measured (default 1 10 100 1000)",
    )
    parser.add_argument("--updates", type=int, default=40, help="writes per subscriber count")
    parser.add_argument("--tree", type=Path, default=TREE, help="the source tree to serve")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="PostgreSQL: the writes do not wait for the disk (synchronous_commit=off), "
        "to see the latency the product adds apart from the commit's flush",
    )
    args = parser.parse_args()

    # Each client is a socket here and one in the server (which inherits this limit).
    raise_fd_limit(max(args.subscribers) + 200)

    with bench_server(
        args.tree,
        "counting_asgi:application",
        prefix="bench-sse-",
        postgres_db=SCRATCH_DB if args.postgres else None,
        redis=args.redis,
        extra_env={"PYTHONPATH": str(HERE)},  # for counting_asgi
    ) as (port, token, project_id):
        asyncio.run(_measure(args, port, token, project_id))


if __name__ == "__main__":
    main()
