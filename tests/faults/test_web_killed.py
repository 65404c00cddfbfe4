"""`kill -9` the web server while an SSE client and a WebSocket client follow a render:
both reconnect to a fresh server and, between them and the log, nothing is missed or
processed twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from projects import lifecycle
from projects.models import Step, VideoProject
from tests.conftest import AsgiServer
from tests.live import assert_each_once, job_over, long_render
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


class Follower(threading.Thread):
    """A client that follows one project until its job is over, reconnecting as needed.

    `processed` holds the seqs it handled, each once: a replay after a crash may
    repeat what it had already handled (its last acknowledgement may not have been
    saved), and it skips those, as the README tells clients to. `repeats` counts them.
    """

    def __init__(self, server: AsgiServer, token: str, project: VideoProject) -> None:
        super().__init__(daemon=True)
        self.server, self.token, self.project = server, token, project
        self.processed: list[int] = []
        self.repeats = 0
        self.connections = 0
        self.error: BaseException | None = None
        self.stop_at = 0  # the project's version when its job ended; set by the test
        self.resumed_at = 0.0  # when the first event came over a second connection

    def handle(self, seq: int) -> None:
        if self.connections >= 2 and not self.resumed_at:
            self.resumed_at = time.monotonic()
        if self.processed and seq <= self.processed[-1]:
            self.repeats += 1
            return
        self.processed.append(seq)

    def done(self) -> bool:
        return bool(self.stop_at) and bool(self.processed) and self.processed[-1] >= self.stop_at

    def run(self) -> None:
        deadline = time.monotonic() + 120
        try:
            while not self.done() and time.monotonic() < deadline:
                try:
                    self.connections += 1
                    self.follow_once()
                except (httpx.TransportError, ConnectionClosed, OSError):
                    wait_for(self.server.serving, "the web server to come back", timeout=60)
        except BaseException as error:  # reported by the test
            self.error = error

    def follow_once(self) -> None:
        raise NotImplementedError


class SseFollower(Follower):
    def follow_once(self) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        if self.processed:
            headers["Last-Event-ID"] = str(self.processed[-1])
        url = f"{self.server.url}/api/video-creation/projects/{self.project.pk}/events"
        with httpx.stream("GET", url, headers=headers, timeout=10) as response:
            for line in response.iter_lines():
                if line.startswith("id:"):
                    self.handle(int(line.removeprefix("id:").strip()))
                    if self.done():
                        return


class WebSocketFollower(Follower):
    client_id = ""

    def follow_once(self) -> None:
        query = f"?old_client_id={self.client_id}" if self.client_id else ""
        with connect(
            f"{self.server.ws_url}/ws/progress/{query}",
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=5,
        ) as socket:
            hello = json.loads(socket.recv(timeout=10))
            if not self.client_id:
                self.client_id = hello["payload"]["client_id"]
                socket.send(json.dumps({"action": "subscribe", "task_id": str(self.project.pk)}))
            while not self.done():
                message = json.loads(socket.recv(timeout=10))
                seq = message.get("payload", {}).get("seq")
                if message.get("task_id") != str(self.project.pk) or seq is None:
                    continue
                self.handle(seq)
                socket.send(
                    json.dumps({"action": "ack", "task_id": str(self.project.pk), "seq": seq})
                )


def _kill(server: AsgiServer) -> None:
    """SIGKILL to the web server's whole process group: no goodbye, no flush."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    server.process = None


def test_clients_of_a_killed_web_server_resume_on_a_fresh_one_missing_nothing(
    qcluster: Any, asgi_server: AsgiServer, alice: User, make_project: Any, report: Any
) -> None:
    project = long_render(make_project)
    token = Token.objects.create(user=alice).key
    followers = [
        SseFollower(asgi_server, token, project),
        WebSocketFollower(asgi_server, token, project),
    ]
    for follower in followers:
        follower.start()
    wait_for(lambda: all(f.processed for f in followers), "both clients to have the status")
    project = lifecycle.start_job(project, Step.RENDER)

    def all_have(count: int) -> Callable[[], bool]:
        return lambda: all(len(f.processed) >= count for f in followers)

    wait_for(all_have(6), "both clients to follow the render", timeout=60)
    _kill(asgi_server)
    killed_at = time.monotonic()
    seen_before = {type(f).__name__: len(f.processed) for f in followers}
    asgi_server.start()
    back_after = time.monotonic() - killed_at
    wait_for(lambda: job_over(project), "the render to end", timeout=120, every=0.1)
    project.refresh_from_db()
    for follower in followers:
        follower.stop_at = project.version
    for follower in followers:
        follower.join(60)
    resumed = {type(f).__name__: round(f.resumed_at - killed_at, 2) for f in followers}
    report(
        "web server killed (kill -9) while an SSE and a WebSocket client follow a render",
        {
            "serving again after (s)": round(back_after, 2),
            "first event on the new connection after (s)": resumed,
            "events before the kill": seen_before,
            "repeats skipped by the client": {type(f).__name__: f.repeats for f in followers},
        },
    )

    assert project.status == "COMPLETED", project.error_message
    for follower in followers:
        name = type(follower).__name__
        assert follower.error is None, f"{name}: {follower.error!r}"
        assert follower.connections >= 2, f"{name} never had to reconnect"
        assert_each_once(follower.processed, follower.processed[0], project.version)
