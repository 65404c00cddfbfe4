"""Two web processes and two worker clusters, as a deployment on PostgreSQL + Redis runs them.

Several projects write their scripts and render their videos on whichever
cluster takes the task. Each project is followed from its first event to the
end of its render by an SSE client on one web process and a WebSocket client
on the other; half way, each client leaves, lets the project move on without
it, and resumes on the *other* web process from its own cursor
(`Last-Event-ID`; the WebSocket session's last ack). Every client must hold the
project's whole durable log: every event once, in order, nothing else.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from django_q.brokers import get_broker
from django_q.models import Task
from rest_framework.authtoken.models import Token
from websockets.sync.client import ClientConnection, connect

from credits import ledger
from projects.models import Status, VideoProject, WebSocketSubscription
from tests.conftest import BRIEF, AsgiServer, database_url_for_children
from tests.faults.conftest import Product, api, on_postgres_pass, product_env, seconds_since
from tests.live import assert_each_once
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.worker,
    on_postgres_pass,
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="runs on PostgreSQL + Redis: set REDIS_URL as well as DATABASE_URL",
    ),
]

PROJECTS = 4
CLUSTERS = ("cluster-a", "cluster-b")
# Two short scenes at the smallest size: the test is about the events, not the video.
PROJECT_BRIEF = {**BRIEF, "aspectRatio": "1:1", "sceneCount": 2, "secondsPerScene": 2}
FOLLOW_LIMIT = 120.0  # seconds a client follows its project before giving up (a loaded CI machine)
SILENCE_LIMIT = 30.0  # seconds a connection may stay silent while its project runs
MISSED = 3  # events a client lets pass while away, to be replayed when it resumes
TERMINAL = (Status.COMPLETED, Status.FAILED)
# django-q2's worker logs each task it takes: "<process> processing <task name> '<function>'".
PROCESSING = re.compile(r"processing (\S+) 'projects\.tasks\.(generate_script|render_video)'")
Report = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Delivery:
    """One event as a client received it, and over which of its two connections."""

    seq: int
    kind: str
    payload: dict[str, Any]
    connection: int


class Follower(threading.Thread):
    """A client of one project, from seq 1 until its render ends, over two connections.

    The first goes to `first`; once the render is queued the client leaves,
    waits until the project has moved on without it, and resumes on `second`,
    another web process, from its own cursor.
    """

    transport = ""

    def __init__(self, first: AsgiServer, second: AsgiServer, token: str, project_id: str) -> None:
        super().__init__(daemon=True, name=f"{self.transport} {project_id}")
        self.first, self.second = first, second
        self.token, self.project_id = token, project_id
        self.deliveries: list[Delivery] = []
        self.missed_while_away = 0
        self.error: BaseException | None = None

    @property
    def seqs(self) -> list[int]:
        return [delivery.seq for delivery in self.deliveries]

    def run(self) -> None:
        try:
            deadline = time.monotonic() + FOLLOW_LIMIT
            self.follow(self.first, 1, deadline)
            left_at = self.deliveries[-1].seq
            self.left()
            moved_on = wait_for(
                lambda: (version := self.version()) >= left_at + MISSED and version,
                f"project {self.project_id} to move on while its {self.transport} client is away",
                timeout=SILENCE_LIMIT,
                every=0.05,
            )
            self.missed_while_away = moved_on - left_at
            self.follow(self.second, 2, deadline)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            connections.close_all()  # this thread's own database connections

    def receive(self, seq: int, kind: str, payload: dict[str, Any], connection: int) -> bool:
        """Keep the event; True when this connection is done (see the class docstring)."""
        self.deliveries.append(Delivery(seq, kind, payload, connection))
        status = payload.get("status") if kind == "status" else None
        if connection == 1:
            return status == Status.RENDERING
        return status in TERMINAL

    def version(self) -> int:
        with api(self.second, self.token) as client:
            answer = client.get(f"/projects/{self.project_id}/status")
        assert answer.status_code == 200, answer.text
        return int(answer.json()["version"])

    def follow(self, server: AsgiServer, connection: int, deadline: float) -> None:
        raise NotImplementedError

    def left(self) -> None:
        """Called once the first connection is closed."""


class SseFollower(Follower):
    transport = "SSE"

    def follow(self, server: AsgiServer, connection: int, deadline: float) -> None:
        # 0 on the first connection: the whole log from seq 1, not the current status.
        last_seq = self.seqs[-1] if self.seqs else 0
        headers = {"Authorization": f"Token {self.token}", "Last-Event-ID": str(last_seq)}
        url = f"{server.url}/api/video-creation/projects/{self.project_id}/events"
        timeout = httpx.Timeout(10, read=SILENCE_LIMIT)
        with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise AssertionError(f"SSE: gave up following after {FOLLOW_LIMIT} s")
                if line:
                    field, _, value = line.partition(":")
                    frame[field] = value.removeprefix(" ")
                    continue
                if "id" in frame:
                    payload = json.loads(frame["data"])
                    if self.receive(int(frame["id"]), frame["event"], payload, connection):
                        return
                frame = {}
        raise AssertionError(f"SSE: the stream of {self.project_id} ended before its render did")


class WebSocketFollower(Follower):
    transport = "WebSocket"
    client_id = ""

    def follow(self, server: AsgiServer, connection: int, deadline: float) -> None:
        query = f"?old_client_id={self.client_id}" if self.client_id else ""
        with connect(
            f"{server.ws_url}/ws/progress/{query}",
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=10,
        ) as socket:
            hello = self._next(socket, deadline)
            if self.client_id:
                assert hello["type"] == "reconnected", hello
                assert hello["payload"]["client_id"] == self.client_id, hello
                assert self.project_id in hello["payload"]["subscribed"], hello
            else:
                assert hello["type"] == "connected", hello
                self.client_id = hello["payload"]["client_id"]
                subscribe = {"action": "subscribe", "task_id": self.project_id, "since": 0}
                socket.send(json.dumps(subscribe))
            while True:
                message = self._next(socket, deadline)
                if message["type"] == "subscribed":
                    continue
                seq = message["payload"].get("seq")
                assert seq is not None and message["task_id"] == self.project_id, message
                done = self.receive(seq, message["type"], message["payload"], connection)
                ack = {"action": "ack", "task_id": self.project_id, "seq": seq}
                socket.send(json.dumps(ack))
                if done:
                    return

    def _next(self, socket: ClientConnection, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"WebSocket: gave up following after {FOLLOW_LIMIT} s")
        return json.loads(socket.recv(timeout=min(SILENCE_LIMIT, remaining)))

    def left(self) -> None:
        # The web process writes a socket's acks when it closes. Waiting for that
        # write makes the resume exact: no event may then come twice.
        acked = self.seqs[-1]
        cursor = WebSocketSubscription.objects.filter(
            session_id=self.client_id, project_id=self.project_id
        ).values_list("last_seq", flat=True)
        wait_for(
            lambda: cursor.first() == acked,
            f"the web process to store the last ack ({acked}) of a closed socket",
            timeout=10,
            every=0.05,
        )


# --- the deployment ----------------------------------------------------------------


def _start_deployment(product: Product, media_root: Path) -> tuple[AsgiServer, AsgiServer]:
    """Two clusters and two web servers, each its own process, on one database and one Redis."""
    get_broker().purge_queue()  # tasks an earlier run left in this Redis database
    env = product_env(database_url_for_children(), settings.REDIS_URL, media_root)
    # Every started job goes to Redis at once, for either cluster to take.
    env["MAX_ACTIVE_JOBS_PER_USER"] = str(PROJECTS)
    clusters = [product.start_worker(env, name) for name in CLUSTERS]
    web_a = product.start_web_server(env, "web-a")
    web_b = product.start_web_server(env, "web-b")
    for cluster, name in zip(clusters, CLUSTERS, strict=True):
        product.wait_until_running(cluster, name)
    return web_a, web_b


def _start(client: httpx.Client, project_id: str, job: str) -> None:
    started = client.post(f"/projects/{project_id}/{job}")
    assert started.status_code == 202, started.text


def _render_when_scripted(clients: dict[str, httpx.Client]) -> None:
    """Start each project's render, through its own web process, as soon as its script is saved."""
    waiting = dict(clients)

    def all_started() -> bool:
        for project in VideoProject.objects.filter(pk__in=list(waiting)):
            if project.status == Status.FAILED:
                raise AssertionError(f"{project.pk}: {project.error_message}")
            if project.status == Status.DRAFT and project.script_data:
                _start(waiting.pop(str(project.pk)), str(project.pk), "render")
        return not waiting

    wait_for(all_started, "every script to be written and its render started", timeout=FOLLOW_LIMIT)


def _all_over(project_ids: list[str]) -> bool:
    statuses = VideoProject.objects.filter(pk__in=project_ids).values_list("status", flat=True)
    return all(status in TERMINAL for status in statuses)


def _jobs_by_cluster(product: Product) -> dict[str, list[tuple[str, str]]]:
    """(project id, task) of each task each cluster took, from its log and django-q2's records."""
    taken = {name: PROCESSING.findall(product.log(name)) for name in CLUSTERS}
    names = {task_name for tasks in taken.values() for task_name, _ in tasks}
    # A task's record is saved just after it returns: maybe after the project's last event.
    wait_for(
        lambda: Task.objects.filter(name__in=names).count() == len(names),
        "django-q2 to record every task it ran",
        timeout=15,
    )
    project_of = {task.name: str(task.args[0]) for task in Task.objects.filter(name__in=names)}
    return {
        name: [(project_of[task_name], function) for task_name, function in tasks]
        for name, tasks in taken.items()
    }


def _history(client: httpx.Client, project_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/projects/{project_id}/history", params={"after": 0, "limit": 1000})
    assert answer.status_code == 200, answer.text
    assert not answer.json()["hasMore"]
    return answer.json()["events"]


def test_every_client_of_two_web_processes_gets_every_event_once_while_two_clusters_work(
    product: Product, media_root: Path, report: Report
) -> None:
    began = time.monotonic()
    web_a, web_b = _start_deployment(product, media_root)
    deployed = seconds_since(began)
    alice = User.objects.create_user("alice", password="alice-password-1")
    token = Token.objects.create(user=alice).key
    clients = {"a": api(web_a, token), "b": api(web_b, token)}
    ledger.grant(alice.pk, 1000, "Enough for every job of the test")

    # Created and started through both web processes, alternately.
    by_project: dict[str, httpx.Client] = {}
    for index in range(PROJECTS):
        client = clients["ab"[index % 2]]
        created = client.post("/projects", json={**PROJECT_BRIEF, "title": f"Night train {index}"})
        assert created.status_code == 201, created.text
        by_project[created.json()["id"]] = client
    project_ids = list(by_project)
    followers: list[Follower] = []
    for project_id in project_ids:
        followers.append(SseFollower(web_a, web_b, token, project_id))
        followers.append(WebSocketFollower(web_b, web_a, token, project_id))
    for follower in followers:
        follower.start()
    wait_for(lambda: all(f.deliveries for f in followers), "every client to have seq 1")

    jobs_began = time.monotonic()
    for project_id, client in by_project.items():
        _start(client, project_id, "script")
    _render_when_scripted(by_project)
    wait_for(lambda: _all_over(project_ids), "every render to end", timeout=FOLLOW_LIMIT, every=0.1)
    jobs_took = seconds_since(jobs_began)
    for follower in followers:
        follower.join(FOLLOW_LIMIT)
    jobs = _jobs_by_cluster(product)
    report(
        f"{PROJECTS} projects on 2 web processes and 2 worker clusters (PostgreSQL + Redis)",
        {
            "deployment up after (s)": deployed,
            "scripts and renders took (s)": jobs_took,
            "whole test (s)": seconds_since(began),
            "tasks run per cluster": {name: len(tasks) for name, tasks in jobs.items()},
            "events per project": [len(f.deliveries) for f in followers[::2]],
            "events missed while away, then replayed": {
                kind.transport: [f.missed_while_away for f in followers if isinstance(f, kind)]
                for kind in (SseFollower, WebSocketFollower)
            },
        },
    )

    for follower in followers:
        assert not follower.is_alive(), f"{follower.name} still follows: {follower.seqs}"
        assert follower.error is None, f"{follower.name}: {follower.error!r}"
    # Both clusters worked, and each job ran once: one script and one render a project.
    assert all(jobs.values()), f"a cluster ran nothing: {jobs}"
    ran = sorted(job for tasks in jobs.values() for job in tasks)
    expected = sorted(
        (pid, task) for pid in project_ids for task in ("generate_script", "render_video")
    )
    assert ran == expected, ran
    for name in (*CLUSTERS, "web-a", "web-b"):
        assert "Traceback" not in product.log(name), product.log(name)[-3000:]
    for project_id in project_ids:
        project = VideoProject.objects.get(pk=project_id)
        assert project.status == Status.COMPLETED, project.error_message
        log = _history(clients["b"], project_id)
        assert [event["seq"] for event in log] == list(range(1, project.version + 1))
        assert log[-1]["kind"] == "status"
        assert log[-1]["payload"]["status"] == Status.COMPLETED
        for follower in (f for f in followers if f.project_id == project_id):
            name = follower.name
            assert_each_once(follower.seqs, 1, project.version)
            assert follower.missed_while_away >= MISSED, name
            assert {d.connection for d in follower.deliveries} == {1, 2}, name
            received = [(d.seq, d.kind) for d in follower.deliveries]
            assert received == [(event["seq"], event["kind"]) for event in log], name
            if isinstance(follower, SseFollower):
                # SSE sends the stored payload itself.
                assert [d.payload for d in follower.deliveries] == [e["payload"] for e in log]
            statuses = [d.payload["status"] for d in follower.deliveries if d.kind == "status"]
            assert statuses == [e["payload"]["status"] for e in log if e["kind"] == "status"]
