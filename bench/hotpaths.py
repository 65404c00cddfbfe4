"""The status poll beside celery-progress's, under wrk, in one run (issue 13's first targets).

    .venv/bin/python bench/hotpaths.py                          # wrk -t2 -c32 -d15s, SQLite
    .venv/bin/python bench/hotpaths.py --postgres               # the product on PostgreSQL
    .venv/bin/python bench/hotpaths.py --server-cmd '{python} manage.py web --port {port}'

Needs wrk (`apt-get install -y wrk`), Redis on 127.0.0.1:6379 (celery-progress's broker
and result backend, db 10) and, with --postgres, PostgreSQL on 127.0.0.1:5432. The
peer's packages live in var/peers-venv (bench/peers/setup.sh, run when missing).

Both servers stay up for the whole run; wrk loads one path at a time, in turn:

a. celery-progress 0.5's poll, `/celery-progress/<task_id>/`, served by
   `gunicorn -w 1 -k sync`, its task held at 50 of 100 by a Celery worker
   (bench/peers/);
b. the product's `GET …/projects/{id}/status` (200), a script job running at
   50 %, served as `make run` serves it (bench/harness.py's `web_command`:
   `manage.py web` where the tree has it, else `manage.py serve`'s uvicorn;
   `--server-cmd` to choose), on a throwaway database (SQLite unless --postgres);
c. the same with `If-None-Match: <its ETag>` (304);
d. the long-poll (`?wait=25&since=<version>`): one client holds it while the
   benchmark writes a progress change through `progress.write`, a random
   0-300 ms after the request went out; from the start of the write call to
   the answer's arrival, `--long-poll-writes` times. Not a wrk figure.

Every wrk run is preceded by an uncounted `--warmup` run and counts the status of
every answer (a Lua script): a single answer other than the one expected fails the
benchmark. `--rounds N` runs a, b and c N times over, in turn, so that a noisy
moment of a shared machine hits every path alike. It prints one table: requests/s,
p50, p99 and requests/s as a multiple of celery-progress's in the same round (each
the median over the rounds), the CPU time the server's processes spent per request
while wrk ran (their whole process group, from /proc: every web process, and the
event loop's share beside the threads'); then the issue's targets, met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import bench_django, free_port, wait_until_serving, web_command
from peers.run import celery_progress

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
SCRATCH_DB = "videocreation_bench_hotpaths"

# Counts every answer's status in each wrk thread and prints them at the end.
STATUS_COUNTER = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      io.write(string.format("STATUS %d %d\\n", status, n))
    end
  end
end
"""
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclasses.dataclass(frozen=True)
class Row:
    path: str
    server: str
    per_second: float | None  # None: not a throughput figure
    p50: float
    p99: float
    note: str = ""
    cpu: float | None = None  # the server's CPU seconds per request (all its processes)


@dataclasses.dataclass(frozen=True)
class Product:
    port: int
    token: str
    project_id: str
    command: str
    pid: int  # leads the server's process group


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def group_cpu(group: int) -> float:
    """CPU seconds (user + system) of every process in process group `group`, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        # After the command's closing parenthesis: pgrp is the 3rd field, utime and stime
        # the 12th and 13th.
        if int(fields[2]) == group:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(
    args: argparse.Namespace,
    name: str,
    server: str,
    url: str,
    headers: list[str],
    expect: int,
    group: int,
) -> Row:
    """wrk's requests/s, p50 and p99 on `url`; every answer must have the status `expect`.

    Also the CPU time the server's process group `group` spent per request while wrk ran.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(STATUS_COUNTER)
    try:
        command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "--latency"]
        command += ["-s", script.name, *(f"-H{header}" for header in headers), url]
        if args.warmup:
            _run_wrk([*command, f"-d{args.warmup}s"], expect)
        cpu_before = group_cpu(group)
        output = _run_wrk([*command, f"-d{args.seconds}s"], expect)
        cpu = group_cpu(group) - cpu_before
    finally:
        os.unlink(script.name)
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", output).group(1))
    errors = re.search(r"Socket errors: (.*)", output)
    note = f"socket errors: {errors.group(1)}" if errors else ""
    return Row(name, server, per_second, p50, p99, note, cpu / (per_second * args.seconds))


def _run_wrk(command: list[str], expect: int) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed: {done.stderr.strip()}")
    statuses: dict[int, int] = {}
    for status, count in re.findall(r"^STATUS (\d+) (\d+)$", done.stdout, re.M):
        statuses[int(status)] = statuses.get(int(status), 0) + int(count)
    if not statuses or set(statuses) != {expect}:
        raise SystemExit(f"{command[-1]} answered {statuses or 'nothing'}, expected only {expect}")
    return done.stdout


# --- the product ----------------------------------------------------------------------------


def _start_running_job(project_id: str) -> None:
    """The bench project's script job started, claimed and at 50 %, as a worker leaves it."""
    from django.db.models import Q

    from projects import lifecycle, progress
    from projects.models import EventKind, Step, VideoProject

    project = VideoProject.objects.get(pk=project_id)
    lifecycle.start_job(project, Step.SCRIPT)
    if lifecycle.claim(project_id, Step.SCRIPT, "bench-hotpaths") is None:
        raise SystemExit("the bench project's script job could not be claimed")
    progress.write(
        project_id,
        expect=Q(),
        fields={"progress": 50, "progress_message": "Writing scene 2 of 4", "total_steps": 5},
        events=[(EventKind.PROGRESS, {})],
    )


def _server_command(template: str | None, port: int) -> list[str]:
    if not template:
        return web_command(TREE, port)
    return shlex.split(template.format(python=sys.executable, port=port))


@contextlib.contextmanager
def product_server(args: argparse.Namespace) -> Iterator[Product]:
    """The product's web server on a throwaway database, its bench project mid-job."""
    with bench_django(
        TREE, prefix="bench-hotpaths-", postgres_db=SCRATCH_DB if args.postgres else None
    ) as (env, token, project_id):
        _start_running_job(project_id)
        port = free_port()
        command = _server_command(args.server_cmd, port)
        server = subprocess.Popen(
            command,
            cwd=TREE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_SERVER_LOG") else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            asyncio.run(wait_until_serving(port, timeout=60))
            yield Product(
                port,
                token,
                project_id,
                shlex.join(command).replace(sys.executable, "python"),
                server.pid,
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a keep-alive connection: (status, headers, body, arrival time)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    arrived = time.perf_counter()
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ", 2)[1]), headers, body, arrived


def _status_path(product: Product) -> str:
    return f"/api/video-creation/projects/{product.project_id}/status"


def _status_request(product: Product, query: str = "") -> bytes:
    return (
        f"GET {_status_path(product)}{query} HTTP/1.1\r\nHost: 127.0.0.1:{product.port}\r\n"
        f"Authorization: Token {product.token}\r\n\r\n"
    ).encode()


async def _current_status(product: Product) -> tuple[str, dict]:
    """The status object and its ETag; the job must read as running at 50 %."""
    reader, writer = await asyncio.open_connection("127.0.0.1", product.port)
    try:
        status, headers, body, _ = await _get(reader, writer, _status_request(product))
    finally:
        writer.close()
    if status != 200:
        raise SystemExit(f"the status endpoint answered {status}: {body[:300]!r}")
    project = json.loads(body)
    if project["status"] != "GENERATING_SCRIPT" or project["progress"] != 50:
        raise SystemExit(f"the bench project is not running at 50 %: {project}")
    return headers["etag"], project


def _long_poll(args: argparse.Namespace, product: Product, version: int) -> Row:
    latencies = asyncio.run(_long_poll_round_trips(args, product, version))
    p50, p99 = _median_p99(latencies)
    name = "product: long-poll, from the write call to the answer"
    return Row(name, product.command, None, p50, p99, f"{len(latencies)} writes")


async def _long_poll_round_trips(
    args: argparse.Namespace, product: Product, version: int
) -> list[float]:
    from django.db.models import Q

    from projects import progress
    from projects.models import EventKind

    def write(number: int) -> tuple[int, float]:
        began = time.perf_counter()
        project = progress.write(
            product.project_id,
            expect=Q(),
            fields={"progress_message": f"Benchmark update {number}"},
            events=[(EventKind.PROGRESS, {})],
        )
        return project.version, began

    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1)  # one thread, so one database connection
    reader, writer = await asyncio.open_connection("127.0.0.1", product.port)
    latencies = []
    try:
        for number in range(args.long_poll_writes):
            request = _status_request(product, f"?wait=25&since={version}")
            answer = asyncio.create_task(_get(reader, writer, request))
            await asyncio.sleep(random.uniform(0, 0.3))
            seq, began = await loop.run_in_executor(thread, write, number)
            status, _, body, arrived = await asyncio.wait_for(answer, timeout=30)
            version = json.loads(body)["version"] if status == 200 else -1
            if version < seq:
                raise SystemExit(f"the long-poll answered {status} {body[:300]!r} after seq {seq}")
            latencies.append(arrived - began)
    finally:
        writer.close()
        thread.shutdown()
    return latencies


def _median_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# --- the run --------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> tuple[list[list[Row]], Row | None]:
    """Each round's wrk rows (celery-progress, 200, 304), and the long-poll's row."""
    with celery_progress() as peer, product_server(args) as product:
        etag, project = asyncio.run(_current_status(product))
        url = f"http://127.0.0.1:{product.port}{_status_path(product)}"
        auth = f"Authorization: Token {product.token}"
        loads = [
            (
                "celery-progress 0.5: its poll",
                peer.server_command,
                peer.url,
                [],
                200,
                peer.server_pid,
            ),
            ("product: status poll, 200", product.command, url, [auth], 200, product.pid),
            (
                "product: status poll, 304 (If-None-Match)",
                product.command,
                url,
                [auth, f"If-None-Match: {etag}"],
                304,
                product.pid,
            ),
        ]
        rounds = []
        for number in range(1, args.rounds + 1):
            rows = [wrk(args, *load) for load in loads]
            rates = ", ".join(f"{row.per_second:,.0f}" for row in rows)
            print(f"round {number}: {rates} requests/s", flush=True)
            rounds.append(rows)
        # Last: its writes change the project, and so the ETag the 304 rows ask with.
        long_poll = _long_poll(args, product, project["version"]) if args.long_poll_writes else None
    return rounds, long_poll


def _over_rounds(rows: tuple[Row, ...]) -> Row:
    """One load's rows of every round as one: each figure the median over the rounds."""
    rates = [row.per_second for row in rows]
    notes = list(dict.fromkeys(row.note for row in rows if row.note))
    if len(rows) > 1:
        notes.insert(0, f"rounds: {', '.join(f'{rate:,.0f}' for rate in rates)}/s")
    return Row(
        rows[0].path,
        rows[0].server,
        statistics.median(rates),
        statistics.median(row.p50 for row in rows),
        statistics.median(row.p99 for row in rows),
        "; ".join(notes),
        statistics.median(row.cpu for row in rows) if rows[0].cpu is not None else None,
    )


def report(args: argparse.Namespace, rounds: list[list[Row]], long_poll: Row | None) -> None:
    """The table: with several rounds, each figure and each ratio is the median over them."""
    loads = list(zip(*rounds, strict=True))  # per load, its row of each round
    summary = [_over_rounds(rows) for rows in loads]
    ratios = [
        statistics.median(
            row.per_second / peer.per_second for row, peer in zip(rows, loads[0], strict=True)
        )
        for rows in loads
    ]
    for server in dict.fromkeys(row.server for row in [*summary, long_poll] if row):
        print(f"server: {server}")
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s (after {args.warmup} s); "
        f"{args.rounds} round(s) of the three loads, one after the other"
    )
    print("| path | requests/s | p50 | p99 | server CPU per request | x celery-progress | |")
    print("|---|---:|---:|---:|---:|---:|---|")
    lines: list[tuple[Row, float | None]] = list(zip(summary, ratios, strict=True))
    if long_poll:
        lines.append((long_poll, None))
    for row, ratio in lines:
        rate = f"{row.per_second:,.0f}" if row.per_second is not None else "—"
        times = f"{ratio:.2f}" if ratio is not None else "—"
        cpu = f"{row.cpu * 1e6:,.0f} µs" if row.cpu is not None else "—"
        print(
            f"| {row.path} | {rate} | {row.p50 * 1000:.1f} ms "
            f"| {row.p99 * 1000:.1f} ms | {cpu} | {times} | {row.note} |"
        )
    ok, not_modified = summary[1], summary[2]
    targets = [
        ("status 200 ≥ 1.3 x celery-progress", ratios[1] >= 1.3),
        ("status 304 ≥ 2,500/s", not_modified.per_second >= 2500),
        ("p99 ≤ 50 ms (200 and 304)", max(ok.p99, not_modified.p99) <= 0.050),
    ]
    for name, met in targets:
        print(f"target {name}: {'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (32)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk -d, counted (15)")
    parser.add_argument("--warmup", type=int, default=2, help="an uncounted wrk run first (2 s)")
    parser.add_argument(
        "--server-cmd",
        help="the product's web server: a command with {python} and {port} "
        "(default: bench/harness.py's web_command, as `make run` serves)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the three wrk loads, one after the other"
    )
    parser.add_argument("--postgres", action="store_true", help="the product on PostgreSQL")
    parser.add_argument(
        "--long-poll-writes", type=int, default=40, help="long-poll round trips (0: none)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/hotpaths.py needs wrk: apt-get install -y wrk")
    report(args, *measure(args))


if __name__ == "__main__":
    main()
