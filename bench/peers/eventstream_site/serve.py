"""uvicorn serving the site, and `send_event` on a line of standard input, in one process.

    python -m eventstream_site.serve --port 8001

Each line in is `{"channel": str, "data": object}`; the hook reads
`time.perf_counter()` (CLOCK_MONOTONIC, the same clock in every process on the
machine), calls `send_event(channel, "message", data)`, and writes the line
`{"id": <the event's id>, "began": <that time>}`: "from the write call to the
client" starts where it starts for the product's reporter, at the call.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import uvicorn


def _send_from_stdin() -> None:
    from django.db import connection
    from django_eventstream import send_event
    from django_eventstream.utils import get_storage

    for line in sys.stdin:
        request = json.loads(line)
        began = time.perf_counter()
        send_event(request["channel"], "message", request["data"])
        sys.stdout.write(json.dumps({"id": get_storage().last_id, "began": began}) + "\n")
        sys.stdout.flush()
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from eventstream_site.asgi import application

    threading.Thread(target=_send_from_stdin, name="send-event-hook", daemon=True).start()
    # What bench/harness.py's `serve` gives the product: one process, no access log.
    uvicorn.run(
        application,
        host="127.0.0.1",
        port=args.port,
        backlog=4096,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
