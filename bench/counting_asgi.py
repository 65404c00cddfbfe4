"""The project's ASGI application, plus what bench/sse.py reads from inside the server.

Served only by the benchmark (`uvicorn counting_asgi:application`). It counts
every SQL statement the process runs, on every thread's connection, and
answers `GET /bench/counters` with that count, the bus's fan-out reads and its
subscriber count, and the process's resident memory and CPU time (all threads).
"""

from __future__ import annotations

import itertools
import json
import resource
from pathlib import Path

from django.db.backends.signals import connection_created

from videocreation.asgi import application as project_application

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
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await project_application(scope, receive, send)
