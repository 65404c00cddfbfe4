"""The project's ASGI application, plus what bench/sse.py reads from inside the server.

Served only by the benchmark (`uvicorn counting_asgi:application`). It counts
every SQL statement the process runs, on every thread's connection, and
answers `GET /bench/counters` with that count, the bus's fan-out reads and its
subscriber count, the process's resident memory and CPU time (all threads),
and when (`time.perf_counter()`, the same clock as the benchmark's) its bus
heard each of the last wake-ups that carried events, by the last seq carried.
"""

from __future__ import annotations

import importlib
import itertools
import json
import resource
import time
from pathlib import Path

from django.db.backends.signals import connection_created

from videocreation.asgi import application as project_application

bus_module = importlib.import_module("projects.bus")  # once the import above set Django up

_statements = itertools.count()
_counted = 0


def _count(execute, sql, params, many, context):
    global _counted
    _counted = next(_statements) + 1
    return execute(sql, params, many, context)


def _watch(sender, connection, **kwargs):
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_watch)

_heard: dict[int, float] = {}
_heard_by_bus = getattr(bus_module.Bus, "heard", None)


def _heard_at(bus, message):
    at = time.perf_counter()
    _, _, carried = message.partition(" ")
    if carried.endswith("]"):
        seq = json.loads(carried)[-1]["seq"]
        _heard.setdefault(seq, at)
        if len(_heard) > 5000:
            del _heard[min(_heard)]
    return _heard_by_bus(bus, message)


if _heard_by_bus is not None:  # not in an older tree
    bus_module.Bus.heard = _heard_at


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/bench/counters":
        from projects.bus import get_bus

        bus = get_bus()
        body = json.dumps(
            {
                "statements": _counted,
                "fan_out_reads": bus.reads,
                "subscribers": bus.subscriber_count,
                "rss_kib": _rss_kib(),
                "cpu_seconds": _cpu_seconds(),
                "heard": _heard,
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await project_application(scope, receive, send)
