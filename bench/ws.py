"""bench/sse.py for WebSocket clients: from a reporter's write to a client on /ws/progress/.

    .venv/bin/python bench/ws.py                         # SQLite
    .venv/bin/python bench/ws.py --postgres              # PostgreSQL (LISTEN/NOTIFY)
    .venv/bin/python bench/ws.py --postgres --clients 5000
    .venv/bin/python bench/ws.py --ack                   # clients ack every event

The same server, database, writes and table as bench/sse.py (read its
docstring); only the clients differ. Each is a raw-socket WebSocket client in
this process: it upgrades with `Authorization: Token …`, subscribes to the
bench project (`{"action": "subscribe", "task_id": …}`), counts as started at
the `status` message that follows, and records when each event's `seq`
arrives. It answers pings, as a browser does. With `--ack` it acks every
event, as the README asks of a client (the server then writes the moved
cursors once a second, WS_CURSOR_FLUSH_SECONDS).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
from pathlib import Path

from harness import bench_server, raise_fd_limit
from sse import Arrivals, _measure

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
SCRATCH_DB = f"videocreation_bench_ws_{os.getpid()}"  # this run's alone, dropped after


def frame(opcode: int, payload: bytes) -> bytes:
    """One client-to-server frame: final, masked (RFC 6455 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


class WsClient:
    """One raw-socket WebSocket client following one project."""

    def __init__(
        self, port: int, token: str, project_id: str, arrivals: Arrivals, *, ack: bool = False
    ) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET /ws/progress/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Token {token}\r\n\r\n"
        ).encode()
        self.subscribe = json.dumps({"action": "subscribe", "task_id": project_id}).encode()
        self.port = port
        self.project_id = project_id
        self.arrivals = arrivals
        self.ack = ack
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
            raise SystemExit("a WebSocket client got no status in 60 s")

    async def _run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"/ws/progress/ answered {head.splitlines()[0]!r}")
        self.writer.write(frame(TEXT, self.subscribe))
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            at = time.perf_counter()
            opcode = first & 0x0F
            if opcode == PING:
                self.writer.write(frame(PONG, payload))
            elif opcode == CLOSE:
                return
            elif opcode == TEXT:
                self._message(json.loads(payload), at)

    def _message(self, message: dict, at: float) -> None:
        seq = (message.get("payload") or {}).get("seq")
        if message["type"] not in ("status", "progress", "log") or seq is None:
            return  # connected, subscribed, pong
        self.started.set()
        self.arrivals.arrived(seq, at)
        if self.ack and self.writer is not None:
            ack = {"action": "ack", "task_id": self.project_id, "seq": seq}
            self.writer.write(frame(TEXT, json.dumps(ack).encode()))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()


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
    parser.add_argument("--updates", type=int, default=40, help="writes per client count")
    parser.add_argument("--ack", action="store_true", help="clients ack every event")
    parser.add_argument("--tree", type=Path, default=TREE, help="the source tree to serve")
    args = parser.parse_args()

    raise_fd_limit(max(args.subscribers) + 200)

    with bench_server(
        args.tree,
        "counting_asgi:application",
        prefix="bench-ws-",
        postgres_db=SCRATCH_DB if args.postgres else None,
        redis=args.redis,
        extra_env={"PYTHONPATH": str(HERE)},  # for counting_asgi
    ) as (port, token, project_id):

        def client(arrivals: Arrivals) -> WsClient:
            return WsClient(port, token, project_id, arrivals, ack=args.ack)

        asyncio.run(_measure(args, port, token, project_id, client))


if __name__ == "__main__":
    main()
