"""A webhook receiver on loopback: it records every request and answers as a test tells it.

(And `register`, which makes an endpoint through the API.)

`answers` is the script of what it says, in order (a status code, or `HANG` to
accept the request and never answer); after the script it answers 200.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rest_framework.test import APIClient

HANG = "hang"
WEBHOOKS = "/api/video-creation/webhooks"


def register(api: APIClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    """An endpoint made through the API (all events unless named): its body, with its secret."""
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = events
    answer = api.post(WEBHOOKS, body, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    answers: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_answer(self) -> int | str:
        with self._lock:
            return self.answers.pop(0) if self.answers else 200

    def record(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests, once they have all arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"The receiver got {len(self.received)} requests, not {count}")


@contextmanager
def receiver(answers: list[int | str] | None = None) -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 for the length of the block."""
    released = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            state.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            answer = state.next_answer()
            if answer == HANG:
                released.wait()  # until the test ends: the sender must give up by itself
                return
            self.send_response(int(answer))
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if int(answer) < 300 else b"not now")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(
        url=f"http://127.0.0.1:{server.server_port}/hooks/videos", answers=list(answers or [])
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        released.set()
        server.shutdown()
        server.server_close()
