"""Requests per second of the status poll, as `make run` serves it (uvicorn, one process).

    .venv/bin/python bench/status.py                      # this tree
    git worktree add /tmp/vc-before <commit>              # an older tree, same venv
    .venv/bin/python bench/status.py --tree /tmp/vc-before

It migrates a throwaway SQLite database with the tree's own code, makes a user,
a token and a project, starts `uvicorn videocreation.asgi:application` from
that tree, and has `--connections` keep-alive clients ask
`GET /api/video-creation/projects/{id}/status` as fast as they are answered for
`--seconds`. The clients run in this process on raw sockets (one core; the
server gets the other). It prints requests/s and the median and p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

from harness import free_port, prepare, serve, throwaway_env, wait_until_serving

HERE = Path(__file__).resolve().parent.parent


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _client(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            began = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            if status != 200:
                raise SystemExit(f"the status endpoint answered {status}")
            latencies.append(time.perf_counter() - began)
    finally:
        writer.close()


async def _load(port: int, request: bytes, connections: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    # A short warm-up, not counted: imports, first connections to the database.
    warm_until = time.perf_counter() + 1
    await asyncio.gather(*(_client(port, request, warm_until, []) for _ in range(connections)))
    until = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, request, until, latencies) for _ in range(connections)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=HERE, help="the source tree to serve")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    env = throwaway_env("bench-status-")
    token, project_id = prepare(args.tree, env)
    port = free_port()
    request = (
        f"GET /api/video-creation/projects/{project_id}/status HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n\r\n"
    ).encode()
    server = serve(args.tree, env, port, "videocreation.asgi:application")
    try:
        asyncio.run(wait_until_serving(port))
        latencies = asyncio.run(_load(port, request, args.connections, args.seconds))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    latencies.sort()
    print(f"tree: {args.tree}")
    print(f"{args.connections} connections, {args.seconds:g} s: {len(latencies)} answers")
    print(f"requests/s: {len(latencies) / args.seconds:,.0f}")
    print(f"latency median: {statistics.median(latencies) * 1000:.1f} ms")
    print(f"latency p99: {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
