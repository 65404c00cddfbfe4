"""The product's SSE beside django-eventstream's, in one run, both on PostgreSQL.

    .venv/bin/python bench/sse_peers.py                        # 1, 10, 100 and 1,000 clients
    .venv/bin/python bench/sse_peers.py --subscribers 1 1000 --only eventstream

What bench/sse.py --postgres measures, for the product and for django-eventstream
5 (bench/peers/), one after the other, each alone on the machine: one uvicorn
process serves it from a PostgreSQL database (below);
the same raw-socket clients (bench/sse.py's `SseClient`; for django-eventstream
the same code reading its `id: <channel>:<n>` lines) hold 1, then 10, 100 and
1,000 streams at once; for each count, `--updates` writes, each a random 0-300 ms
after the last one reached every client. Per count:

* latency, from the start of the write call to the event's arrival at a client:
  median and p99 over every (write, client) pair, and for the last client to get
  each write, median and p99 over the writes;
* the server process's CPU time (all its threads, /proc) during the writes,
  divided by the writes;
* its resident memory, and the growth over its memory before the first client,
  divided by the clients.

"The write call": for the product, `progress.write` in this process, the path
every reporter takes (a worker is another process; the event reaches the server
by NOTIFY at commit). For django-eventstream, `send_event` in the server process
itself, called by a hook on its standard input (eventstream_site/serve.py):
without Redis or a GRIP proxy it delivers only to the clients of the process that
calls it. Its store is its database storage (the README's reliable-delivery
set-up), on PostgreSQL. Both clocks are CLOCK_MONOTONIC. django-eventstream's
events carry a dict shaped like the product's progress event.

PostgreSQL: a throwaway server of its own (initdb in a temporary folder, the
defaults but `max_connections` = the most clients + 100), one database for each:
django-eventstream's database storage holds a connection per open stream, and
the machine's server (100 connections) refuses its 97th client. Needs PostgreSQL's
binaries (/usr/lib/postgresql); the peer's packages live in var/peers-venv
(bench/peers/setup.sh, run when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from harness import (
    bench_django,
    free_port,
    process_usage,
    raise_fd_limit,
    serve,
    wait_until_serving,
)
from peers.run import django_eventstream, postgres_cluster
from sse import OPEN_AT_ONCE, Arrivals, SseClient, _get_json, _writer, ms, percentile

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
DATABASES = {"product": "videocreation", "eventstream": "eventstream"}
WRITER_APPLICATION = "bench-sse-peers-writer"


class EventstreamClient(SseClient):
    """`SseClient` reading django-eventstream's stream: ids are `<channel>:<n>`.

    It counts as started at the `stream-open` event, which the server sends
    after it has registered the client's listener.
    """

    def __init__(self, port: int, path: str, arrivals: Arrivals) -> None:
        super().__init__(port, path, "", arrivals)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    async def _run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"django-eventstream answered {head.splitlines()[0]!r}")
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
                    if line == b"event: stream-open":
                        self.started.set()
                    elif line.startswith(b"id: "):
                        self.arrivals.arrived(int(line.rsplit(b":", 1)[1]), at)


@dataclass
class Target:
    """A server under test: how to open a client on it, write an event, and wait for clients."""

    name: str
    port: int
    pid: int
    client: Callable[[Arrivals], SseClient]
    write: Callable[[int], tuple[int, float]]  # blocking: (the event's id, when the call began)
    subscribed: Callable[[int], Any]  # async: until the server holds this many clients
    warm_up: Callable[[], Any]  # async: one plain request through the site, before the baseline


@contextlib.contextmanager
def product(database_url: str) -> Iterator[Target]:
    with bench_django(
        TREE,
        prefix="bench-sse-peers-",
        # counting_asgi is in bench/
        extra_env={"DATABASE_URL": database_url, "PYTHONPATH": str(HERE)},
    ) as (env, token, project_id):
        port = free_port()
        server = serve(TREE, env, port, "counting_asgi:application")
        # This process's connections (the writer's) are not the server's: see `connections`.
        os.environ["PGAPPNAME"] = WRITER_APPLICATION  # libpq's default application_name
        path = f"/api/video-creation/projects/{project_id}/events"

        async def subscribed(count: int) -> None:
            while (await _get_json(port, "/bench/counters"))["subscribers"] < count:
                await asyncio.sleep(0.05)

        async def warm_up() -> None:
            await _get_json(port, f"/api/video-creation/projects/{project_id}/status", token)

        try:
            asyncio.run(wait_until_serving(port))
            yield Target(
                "the product",
                port,
                server.pid,
                lambda arrivals: SseClient(port, path, token, arrivals),
                _writer(project_id),
                subscribed,
                warm_up,
            )
        finally:
            del os.environ["PGAPPNAME"]
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


@contextlib.contextmanager
def eventstream(database_url: str) -> Iterator[Target]:
    with django_eventstream(database_url) as peer:

        def write(number: int) -> tuple[int, float]:
            return peer.send(_progress_event(number))

        async def subscribed(count: int) -> None:
            pass  # each client started at `stream-open`, sent once its listener was registered

        async def warm_up() -> None:
            # The site has no other page: a 404 goes through the same middleware.
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
            writer.write(b"GET /events/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            answer = await reader.read()
            writer.close()
            if not answer.startswith(b"HTTP/1.1 404"):
                raise SystemExit(f"django-eventstream's site answered {answer[:100]!r}")

        yield Target(
            "django-eventstream 5.3.4",
            peer.port,
            peer.server_pid,
            lambda arrivals: EventstreamClient(peer.port, peer.path, arrivals),
            write,
            subscribed,
            warm_up,
        )


def _progress_event(number: int) -> dict[str, Any]:
    """What the product's progress event carries, for django-eventstream to send."""
    return {
        "status": "GENERATING_SCRIPT",
        "progress": 50,
        "progressMessage": f"Benchmark update {number}",
        "currentStep": "script",
        "completedSteps": 2,
        "totalSteps": 5,
        "attempt": 1,
        "estimatedSecondsRemaining": None,
        "version": number,
        "updatedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "seq": number,
    }


@dataclass(frozen=True)
class Figures:
    clients: int
    median: float
    p99: float
    last_median: float
    last_p99: float
    cpu_per_update: float
    rss_kib: int
    kib_per_client: float
    connections: int


async def measure(
    target: Target, counts: list[int], updates: int, connections: Callable[[], int]
) -> list[Figures]:
    """The figures per client count; `connections`: the database connections the server holds."""
    arrivals = Arrivals()
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1)  # one thread, so one database connection
    clients: list[SseClient] = []
    figures = []
    number = 0
    try:
        # Uncounted: a request (as bench/sse.py makes), and a write (the writer's first
        # database connection; django-eventstream's first `send_event`).
        await target.warm_up()
        await loop.run_in_executor(thread, target.write, number)
        _, baseline_kib = process_usage(target.pid)
        print(f"{target.name}: server memory before any client: {baseline_kib / 1024:.1f} MiB")
        print(
            "| clients | latency median | p99 | last client median | last client p99 "
            "| server CPU per update | server RSS | RSS per client | server's DB connections |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count in counts:
            while len(clients) < count:
                batch = [
                    target.client(arrivals) for _ in range(min(OPEN_AT_ONCE, count - len(clients)))
                ]
                clients += batch
                await asyncio.gather(*(client.open() for client in batch))
            arrivals.clients = len(clients)
            await asyncio.wait_for(target.subscribed(count), timeout=60)
            cpu_before, _ = process_usage(target.pid)
            latencies: list[float] = []
            last: list[float] = []
            for _ in range(updates):
                await asyncio.sleep(random.uniform(0, 0.3))
                number += 1
                seq, began = await loop.run_in_executor(thread, target.write, number)
                await arrivals.all_have(seq, timeout=60)
                times = arrivals.times.pop(seq)
                latencies += [at - began for at in times]
                last.append(max(times) - began)
            cpu_after, rss_kib = process_usage(target.pid)
            row = Figures(
                count,
                statistics.median(latencies),
                percentile(latencies, 0.99),
                statistics.median(last),
                percentile(last, 0.99),
                (cpu_after - cpu_before) / updates,
                rss_kib,
                (rss_kib - baseline_kib) / count,
                connections(),
            )
            figures.append(row)
            print(
                f"| {count:,} | {ms(row.median)} | {ms(row.p99)} | {ms(row.last_median)} "
                f"| {ms(row.last_p99)} | {ms(row.cpu_per_update)} | {rss_kib / 1024:.1f} MiB "
                f"| {row.kib_per_client:.0f} KiB | {row.connections} |",
                flush=True,
            )
    finally:
        for client in clients:
            client.close()
        thread.shutdown()
    return figures


def side_by_side(results: dict[str, list[Figures]]) -> None:
    names = list(results)
    print()
    print("| clients | " + " | ".join(names) + " |")
    print("|---:|" + "---|" * len(names))
    for index, count in enumerate(row.clients for row in results[names[0]]):
        cells = []
        for name in names:
            row = results[name][index]
            cells.append(
                f"{ms(row.median)} / {ms(row.p99)}, last {ms(row.last_median)}; "
                f"{row.kib_per_client:.0f} KiB, {ms(row.cpu_per_update)} CPU, "
                f"{row.connections} connections"
            )
        print(f"| {count:,} | " + " | ".join(cells) + " |")
    print(
        "(latency median / p99, the last client's median; RSS per client, CPU per update, "
        "database connections held)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--subscribers",
        "--clients",
        type=int,
        nargs="+",
        default=[1, 10, 100, 1000],
        help="client counts, each held while its updates are measured (default 1 10 100 1000)",
    )
    parser.add_argument("--updates", type=int, default=40, help="writes per client count")
    parser.add_argument("--only", choices=["product", "eventstream"], help="measure one of them")
    args = parser.parse_args()
    # Each client is a socket here and one in the server (which inherits this limit).
    raise_fd_limit(max(args.subscribers) + 200)

    targets = {"product": product, "eventstream": eventstream}
    results = {}
    # django-eventstream holds a database connection per stream: more than the
    # machine's PostgreSQL allows. Both run on one throwaway server that allows them.
    with postgres_cluster(max(args.subscribers) + 100) as admin_url:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for database in DATABASES.values():
                admin.execute(f"CREATE DATABASE {database}")
        for key, start in targets.items():
            if args.only in (None, key):
                database_url = admin_url.rsplit("/", 1)[0] + "/" + DATABASES[key]

                def connections(database: str = DATABASES[key]) -> int:
                    with psycopg.connect(admin_url) as admin:
                        query = (
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = %s AND application_name <> %s"
                        )
                        return admin.execute(query, [database, WRITER_APPLICATION]).fetchone()[0]

                with start(database_url) as target:
                    figures = measure(target, args.subscribers, args.updates, connections)
                    results[target.name] = asyncio.run(figures)
    if len(results) > 1:
        side_by_side(results)


if __name__ == "__main__":
    main()
