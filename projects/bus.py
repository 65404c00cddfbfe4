"""Wake-ups after commit, one listener per web process, fan-out to subscribers.

How live events reach clients (DESIGN.md principles 6-8):

* `progress.write` calls `announce(project_id, events)` inside its
  transaction. On PostgreSQL that is `pg_notify`, which the server delivers
  only when the transaction commits; with Redis it is a PUBLISH from
  `on_commit`; on SQLite it is nothing: every web process's bus notices the
  commit itself (`PRAGMA data_version`, below).
* Each web process (each event loop) holds one `Bus`. It knows which projects
  its clients watch and, per project, the last `seq` it has fanned out. A
  wake-up marks a project dirty; the bus reads that project's events after
  its cursor, one query however many clients watch, and hands them to every
  `Subscription` of that project in memory.
* A wake-up is a hint, never the data: a merged wake-up is covered because
  the bus reads everything after its cursor, and a lost one by a slow safety
  poll of the watched projects' versions.
* A wake-up may carry the transaction's events (when they fit in one
  message). The bus hands them on without a read only when they continue its
  cursor, `seq = cursor + 1` onward: they are the rows that transaction
  committed, and the cursor only ever moved over events read or carried
  contiguously, so the guarantee above holds. Anything else (a gap after a
  lost or reordered wake-up, a process that just started watching, events too
  big to carry) is read from the log as before.
* On SQLite the bus asks its own read-only connection for `PRAGMA
  data_version` every `COMMIT_CHECK_SECONDS`: it changes whenever another
  connection commits (WAL checkpoints included) and reads no table. Only then
  does it poll the watched projects' versions, and every
  `EVENT_SAFETY_POLL_SECONDS` anyway, the safety net it has on PostgreSQL
  and Redis too.
* Transports read through a `Feed`: first the client's replay from the
  database after its own cursor, then live events, each `seq` once and in
  order. A feed that sees a gap (its subscriber's buffer overflowed while the
  client was slow) reads the missing events from the database.
* A client may follow all of one user's projects at once (`GET events`,
  WebSocket `"*"`): one `ProjectsSubscription`, registered with every project
  of its owner like any subscription, so each project is still read once
  however many clients watch it, and a `ProjectsFeed` with a cursor per
  project. A project the bus does not watch yet (made after the client came)
  is found by its first wake-up: the bus looks up its owner once (one query
  for all such projects at a time, then remembered) and, if a client follows
  that owner whole, watches it from seq 1. On SQLite, and in the safety poll,
  the poll of the watched projects' versions also lists those owners' projects.

Cursors are per project `seq`, never a global event id: auto-increment ids of
concurrent transactions can commit out of order.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import operator
import os
import socket
import sqlite3
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection, transaction
from django.db.models import Q, QuerySet

from projects import metrics
from projects.cursors import SessionCursors
from projects.models import LiveClient, ProgressEvent, VideoProject, WebSocketSession

logger = logging.getLogger(__name__)

CHANNEL = "videocreation_events"
# A slow client's subscriber keeps at most this many undelivered events; past
# that it drops them and its feed re-reads the log from its cursor instead.
MAX_PENDING = 1000
REPLAY_CHUNK = 500
PROCESS = f"{socket.gethostname()}:{os.getpid()}"[:100]
# A NOTIFY payload must stay under 8,000 bytes; a wake-up carries its events below this.
MAX_CARRIED_BYTES = 7500
# On SQLite, how often the bus asks whether anything was committed (no table is read).
COMMIT_CHECK_SECONDS = 0.01
# Event loops fire timers up to a millisecond early (uvloop counts in milliseconds).
TIMER_SLACK = 0.002
# Projects per replay query of a `ProjectsFeed` (two parameters each).
REPLAY_PROJECTS = 500
# The owners the bus remembers of projects it heard of but does not watch.
OWNERS_REMEMBERED = 10_000

T = TypeVar("T")


class BusClosed(Exception):
    """The web process is shutting down; the client should reconnect (to another one)."""


class TooManyStreams(Exception):
    """The user already holds MAX_STREAMS_PER_USER open streams; nothing was registered."""


# --- the writer's side ----------------------------------------------------


def announce(project_id: Any, events: Iterable[ProgressEvent] = ()) -> None:
    """Wake every web process's listener once the current transaction commits.

    `events` are the rows this transaction appends; they travel with the
    wake-up when they fit.
    """
    if settings.EVENT_BUS == "postgres":
        # NOTIFY is transactional: listeners hear it at commit, or never.
        message = wake_up(project_id, [event.to_dict() for event in events])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, message])
    elif settings.EVENT_BUS == "redis":
        message = wake_up(project_id, [event.to_dict() for event in events])
        transaction.on_commit(lambda: _publish(message))


def wake_up(project_id: Any, events: Iterable[dict] = ()) -> str:
    """The message: the project's id, then a space and its new events as JSON when they fit."""
    key = str(project_id)
    events = list(events)
    if events:
        carried = f"{key} {json.dumps(events, separators=(',', ':'))}"
        if len(carried.encode()) <= MAX_CARRIED_BYTES:
            return carried
    return key


_redis_client: Any = None


def _publish(message: str) -> None:
    global _redis_client
    import redis

    try:
        if _redis_client is None:
            _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        _redis_client.publish(CHANNEL, message)
    except redis.RedisError:
        # The event is committed; listeners find it on their next safety poll.
        project_id = message.partition(" ")[0]
        logger.warning("Could not publish the wake-up for project %s", project_id, exc_info=True)


# --- reading the log -------------------------------------------------------


class LoggedEvent(dict):
    """One event of a project's log as clients see it (`ProgressEvent.to_dict`).

    The bus hands the same object to every subscriber of the project, so a
    transport encodes it once however many clients it goes to (`encoded`).
    """

    __slots__ = ("_encodings", "project_id")

    def __init__(self, fields: dict, project_id: str = "") -> None:
        super().__init__(fields)
        self._encodings: dict[str, Any] = {}
        self.project_id = project_id  # str(uuid): which log it is of

    def encoded(self, how: str, encode: Callable[[dict], T]) -> T:
        """`encode(self)`, computed once per `how` (a transport's name)."""
        try:
            return self._encodings[how]
        except KeyError:
            value = self._encodings[how] = encode(self)
            return value


async def read_events(project_id: Any, after: int, limit: int = REPLAY_CHUNK) -> list[LoggedEvent]:
    """The project's events after seq `after`, oldest first, as clients see them."""
    key = str(project_id)
    events = ProgressEvent.objects.filter(project_id=project_id, seq__gt=after).order_by("seq")
    return [LoggedEvent(event.to_dict(), key) async for event in events[:limit]]


def events_after(cursors: Mapping[Any, int]) -> QuerySet[ProgressEvent]:
    """The events after each project's cursor, project by project in seq order."""
    after = reduce(operator.or_, (Q(project_id=key, seq__gt=seq) for key, seq in cursors.items()))
    return ProgressEvent.objects.filter(after).order_by("project_id", "seq")


async def read_events_of(
    cursors: Mapping[str, int], limit: int = REPLAY_CHUNK
) -> list[LoggedEvent]:
    """`events_after(cursors)` as clients see them; `limit` in all."""
    events = events_after(cursors)[:limit]
    return [LoggedEvent(event.to_dict(), str(event.project_id)) async for event in events]


async def _latest_seq(project_id: str) -> int:
    versions = VideoProject.objects.filter(pk=project_id).values_list("version", flat=True)
    return await versions.afirst() or 0


async def _versions_of_owner(owner_id: Any) -> dict[str, int]:
    rows = VideoProject.objects.filter(owner_id=owner_id).values_list("pk", "version")
    return {str(pk): version async for pk, version in rows}


def _is_uuid(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


def close_connection() -> None:
    """Close the calling thread's database connection (`connection` is per thread)."""
    connection.close()


# --- the listener's side ---------------------------------------------------


class Subscription:
    """One client's place on the bus for one project: a buffer the bus fills.

    A wait runs once per event per client, so it is kept cheap: a plain future,
    and a timer that is re-armed only when it fires early (each event moves the
    deadline later), not cancelled and made again for every event.
    """

    __slots__ = (
        "_closed",
        "_deadline",
        "_events",
        "_overflowed",
        "_timer",
        "_timer_at",
        "_waiter",
        "loop",
        "project_id",
    )

    def __init__(self, project_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.project_id = project_id
        self.loop = loop
        self._events: list[dict] = []
        self._overflowed = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def push(self, events: list[dict]) -> None:
        if self._overflowed:
            return
        if len(self._events) + len(events) > MAX_PENDING:
            self._events.clear()
            self._overflowed = True
        else:
            self._events.extend(events)
        self._release()

    def close(self) -> None:
        self._closed = True
        self._release()

    def take(self) -> tuple[list[dict], bool]:
        """What arrived since the last take, and whether some of it was dropped."""
        if self._closed:
            raise BusClosed
        events, overflowed = self._events, self._overflowed
        if events or overflowed:
            self._events, self._overflowed = [], False
        return events, overflowed

    async def wait(self, timeout: float) -> None:
        """Until something arrives or `timeout` s pass."""
        waiter = self.waiter(self.loop.time() + timeout)
        if waiter is not None:
            await waiter

    def waiter(self, deadline: float) -> asyncio.Future[None] | None:
        """A future done when something arrives or at `deadline` (loop time); None if
        something is here already. (No coroutine of its own: one fewer per event per client.)"""
        if self._events or self._overflowed or self._closed:
            return None
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            self._arm(self.loop, deadline)
        waiter = self._waiter = self.loop.create_future()
        return waiter

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self.stop_timer()
        self._timer_at = at
        self._timer = loop.call_at(at, self._timer_fired, loop)

    def _timer_fired(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        if loop.time() >= self._deadline - TIMER_SLACK:
            self._release()
        else:
            self._arm(loop, self._deadline)

    def _release(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Feed:
    """A client's view of one project's log from its cursor: replay, then live, each seq once."""

    def __init__(self, subscription: Subscription, cursor: int, *, in_request: bool) -> None:
        self.subscription = subscription
        self.project_id = subscription.project_id
        self.cursor = cursor
        self._replaying = True
        # An HTTP request's ORM calls run on a thread whose connection Django
        # closes only when the response ends (the request's own thread, or for
        # event streams asgiref's shared one: projects/streams.py). A stream that
        # held it while waiting would hold one database connection per watcher:
        # PostgreSQL refuses the 101st.
        self._in_request = in_request
        self._holds_connection = in_request

    async def next(self, timeout: float) -> list[dict]:
        """The next events after the cursor, waiting up to `timeout` s for some; [] if none came.

        Raises `BusClosed` when the process shuts down.
        """
        loop = self.subscription.loop
        deadline = loop.time() + timeout
        while True:
            if self._replaying:
                events = await read_events(self.project_id, self.cursor)
                self._holds_connection = self._in_request
                # Live events pushed meanwhile stay buffered: the bus may have read
                # some that committed after our read began.
                self._replaying = len(events) == REPLAY_CHUNK
                if events:
                    return self._advance(events)
            live, overflowed = self.subscription.take()
            events = [event for event in live if event["seq"] > self.cursor]
            if overflowed or (events and events[0]["seq"] != self.cursor + 1):
                self._replaying = True
                continue
            if events:
                return self._advance(events)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if self._holds_connection:
                await sync_to_async(close_connection)()  # the request's thread's
                self._holds_connection = False
            waiter = self.subscription.waiter(deadline)
            if waiter is not None:
                await waiter

    def _advance(self, events: list[dict]) -> list[dict]:
        self.cursor = events[-1]["seq"]
        return events


class ProjectsSubscription(Subscription):
    """One client's place on the bus for every project of one owner, those made later too.

    The bus registers it with each of those projects (`projects`) as it would a
    `Subscription` of each, so it gets every project's events in one buffer,
    each event knowing its project (`LoggedEvent.project_id`).
    """

    __slots__ = ("owner_id", "projects")

    def __init__(self, owner_id: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__("*", loop)
        self.owner_id = owner_id
        self.projects: set[str] = set()


class ProjectsFeed:
    """A client's view of all of one owner's logs from its cursors: replay, then live.

    Each project's events come in seq order, each seq once; projects
    interleave as their events come. `cursors` is where the client stands in
    each project (no entry: before its first event). A project whose live
    events do not continue its cursor (a gap, or a buffer that overflowed) is
    read from the log again, with every other project behind, in one query.
    """

    def __init__(
        self, subscription: ProjectsSubscription, cursors: dict[str, int], *, in_request: bool
    ) -> None:
        self.subscription = subscription
        self.cursors = cursors
        self._behind: set[str] = set(subscription.projects)  # to read from the log first
        self._in_request = in_request
        self._holds_connection = in_request

    @property
    def following(self) -> set[str]:
        return self.subscription.projects

    @property
    def replaying(self) -> bool:
        """Whether some project's events are still to be read from the log."""
        return bool(self._behind)

    async def unfinished(self) -> AsyncIterator[VideoProject]:
        """The owner's unfinished projects (as `GET unfinished`), newest first: where a
        client without cursors starts. Each project's cursor moves to its version, since
        its status tells what the events before it did."""
        projects = VideoProject.objects.filter(owner_id=self.subscription.owner_id)
        async for project in projects.unfinished().order_by("-created_at"):
            key = str(project.pk)
            self.cursors[key] = max(self.cursors.get(key, 0), project.version)
            yield project

    async def replay(self) -> list[LoggedEvent]:
        """The next events read from the log for the projects behind; [] once none is."""
        while self._behind:
            behind = sorted(self._behind)[:REPLAY_PROJECTS]
            events = await read_events_of({key: self.cursors.get(key, 0) for key in behind})
            self._holds_connection = self._in_request
            caught_up = set(behind)
            if len(events) == REPLAY_CHUNK:
                # A full chunk: the last project in it may have more, and those after
                # it were not reached (which came first is the database's order).
                caught_up = {event.project_id for event in events} - {events[-1].project_id}
            self._behind -= caught_up
            for event in events:
                self.cursors[event.project_id] = event["seq"]
            if events:
                return events
        return []

    async def next(self, timeout: float) -> list[LoggedEvent]:
        """The next events after the cursors, waiting up to `timeout` s for some; [] if none came.

        Raises `BusClosed` when the process shuts down.
        """
        loop = self.subscription.loop
        deadline = loop.time() + timeout
        while True:
            if self._behind:
                events = await self.replay()
                if events:
                    return events
            live, overflowed = self.subscription.take()
            if overflowed:
                self._behind |= self.subscription.projects
                continue
            events = self._continuing(live)
            if events:
                return events
            if self._behind:
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if self._holds_connection:
                await sync_to_async(close_connection)()  # see `Feed.__init__`
                self._holds_connection = False
            waiter = self.subscription.waiter(deadline)
            if waiter is not None:
                await waiter

    def _continuing(self, live: list[LoggedEvent]) -> list[LoggedEvent]:
        """The live events continuing their project's cursor; the others' projects fall behind."""
        events = []
        for event in live:
            key, seq = event.project_id, event["seq"]
            if key in self._behind:
                continue  # its replay reads this event too
            cursor = self.cursors.get(key, 0)
            if seq <= cursor:
                continue
            if seq != cursor + 1:
                self._behind.add(key)
                continue
            self.cursors[key] = seq
            events.append(event)
        return events


class Bus:
    """One per web process: listens for wake-ups and fans events out to subscriptions."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, int] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._clients: set[Any] = set()
        # Clients following all of a user's projects, by user id; the owners of
        # projects heard of, and of those whose owner is still to be looked up.
        self._owners: dict[Any, set[ProjectsSubscription]] = {}
        self._owner_of: dict[str, Any] = {}
        self._unplaced: set[str] = set()
        # The WebSocket sessions' acked cursors, written for all sockets at once.
        self.session_cursors = SessionCursors()
        self.reads = 0  # log reads done for fan-out: the bench checks they don't grow with clients

    @property
    def subscriber_count(self) -> int:
        """Subscriptions: one per client and project, one per client following all projects."""
        single = sum(
            not isinstance(subscription, ProjectsSubscription)
            for subscriptions in self._watchers.values()
            for subscription in subscriptions
        )
        return single + sum(len(subscriptions) for subscriptions in self._owners.values())

    async def subscribe(self, project_id: Any) -> Subscription:
        """Watch a project. Every event after this returns reaches the subscription."""
        self._start()
        key = str(project_id)
        subscription = Subscription(key, asyncio.get_running_loop())
        first = key not in self._watchers
        self._watchers.setdefault(key, set()).add(subscription)
        if first:
            self._discover([key])  # a client may follow its owner's projects whole
            ready = self._ready[key] = asyncio.Event()
            try:
                self._cursors[key] = await _latest_seq(key)
            except BaseException:
                self.unsubscribe(subscription)
                raise
            finally:
                ready.set()
        else:
            await self._ready[key].wait()
            if key not in self._cursors:
                self.unsubscribe(subscription)
                raise BusClosed
        return subscription

    async def feed(self, project_id: Any, after: int, *, in_request: bool = False) -> Feed:
        """A feed from seq `after`; `in_request` for one read by an HTTP request's own code."""
        return Feed(await self.subscribe(project_id), after, in_request=in_request)

    async def projects_feed(
        self, owner_id: Any, cursors: Mapping[str, int] | None, *, in_request: bool = False
    ) -> ProjectsFeed:
        """A feed of every project of `owner_id`, those made later too.

        From `cursors` (a project it lacks is read from its first event; one
        not the owner's is ignored), or without them from each project's
        current version.
        """
        subscription, versions = await self.subscribe_owner(owner_id)
        start = versions if cursors is None else {key: cursors.get(key, 0) for key in versions}
        return ProjectsFeed(subscription, dict(start), in_request=in_request)

    async def subscribe_owner(self, owner_id: Any) -> tuple[ProjectsSubscription, dict[str, int]]:
        """Watch every project of `owner_id`, and each one made later as it is heard of.

        Returns the subscription and the owner's projects' versions, read once
        it was registered: every event after those versions reaches it.
        """
        self._start()
        subscription = ProjectsSubscription(owner_id, asyncio.get_running_loop())
        self._owners.setdefault(owner_id, set()).add(subscription)
        try:
            versions = await _versions_of_owner(owner_id)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        for key, version in versions.items():
            self._watch_for(subscription, key, version)
        return subscription, versions

    def _watch_for(self, subscription: ProjectsSubscription, key: str, version: int) -> None:
        """Add a project to a subscription of its owner; a new one read after `version`.

        No await: the project is watched, and the bus's cursor set, at once.
        """
        self._remember_owner(key, subscription.owner_id)
        subscription.projects.add(key)
        watchers = self._watchers.setdefault(key, set())
        first = not watchers
        watchers.add(subscription)
        if first:
            self._cursors[key] = version
            ready = self._ready[key] = asyncio.Event()
            ready.set()

    def _discover(self, keys: Iterable[str]) -> None:
        """Projects the bus hears of: are any of an owner some client follows whole?"""
        if not self._owners:
            return
        for key in keys:
            if key not in self._owner_of:
                self._unplaced.add(key)
                self._wake.set()  # `_fan_out` looks their owners up, all in one query
            elif self._owner_of[key] in self._owners:
                self._adopt(key, self._owner_of[key])

    def _adopt(self, key: str, owner_id: Any) -> None:
        """Watch a project for every client following its owner; a new one from seq 1."""
        for subscription in self._owners.get(owner_id, ()):
            if key not in subscription.projects:
                self._watch_for(subscription, key, 0)
        self.wake([key])

    def _remember_owner(self, key: str, owner_id: Any) -> None:
        self._owner_of.pop(key, None)
        self._owner_of[key] = owner_id
        if len(self._owner_of) > OWNERS_REMEMBERED:
            del self._owner_of[next(iter(self._owner_of))]  # the longest remembered

    async def _place(self) -> None:
        """Look up the owners of the projects heard of but not watched, in one query."""
        keys, self._unplaced = self._unplaced, set()
        ids = [key for key in keys if _is_uuid(key)]
        rows = VideoProject.objects.filter(pk__in=ids).values_list("pk", "owner_id")
        async for pk, owner_id in rows:
            self._remember_owner(str(pk), owner_id)
            if owner_id in self._owners:
                self._adopt(str(pk), owner_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.stop_timer()
        if isinstance(subscription, ProjectsSubscription):
            same_owner = self._owners.get(subscription.owner_id, set())
            same_owner.discard(subscription)
            if not same_owner:
                self._owners.pop(subscription.owner_id, None)
            for key in subscription.projects:
                self._unwatch(key, subscription)
        else:
            self._unwatch(subscription.project_id, subscription)

    def _unwatch(self, key: str, subscription: Subscription) -> None:
        watchers = self._watchers.get(key)
        if watchers is None:
            return
        watchers.discard(subscription)
        if not watchers:
            del self._watchers[key]
            self._cursors.pop(key, None)
            self._ready.pop(key, None)
            self._dirty.discard(key)

    def wake(self, project_ids: Iterable[str]) -> None:
        """A hint that these projects have new events."""
        watched = {key for key in project_ids if key in self._watchers}
        if watched:
            self._dirty |= watched
            self._wake.set()

    def wake_all(self) -> None:
        self.wake(list(self._watchers))

    def heard(self, message: str) -> None:
        """A wake-up (see `wake_up`): hand on the events it carries, or mark its project dirty."""
        key, _, carried = message.partition(" ")
        if key not in self._watchers:
            self._discover([key])
            return
        cursor = self._cursors.get(key)
        if carried and cursor is not None:
            try:
                events = [LoggedEvent(event, key) for event in json.loads(carried)]
            except (ValueError, TypeError):
                logger.warning("A wake-up for project %s carried no events it could read", key)
            else:
                events = [event for event in events if event["seq"] > cursor]
                if not events:
                    return  # a late wake-up for events already handed on
                if events[0]["seq"] == cursor + 1:
                    self._hand_on(key, events)
                    return
        self.wake([key])

    # --- live clients, for `GET active` ---

    async def client_opened(self, client: LiveClient) -> None:
        """Record an open stream, or raise `TooManyStreams` if its user is at the cap."""
        self._start()
        client.process = PROCESS
        client.seen_at = datetime.now(UTC)
        await _insert_within_cap(client)
        self._clients.add(client.pk)

    async def client_closed(self, client: LiveClient) -> None:
        self._clients.discard(client.pk)
        await LiveClient.objects.filter(pk=client.pk).adelete()

    def stop_vouching(self, client: LiveClient) -> None:
        """Stop refreshing a client's row; for a response's `close`, sync, from any thread.

        A response closed before its first chunk (the client left at once)
        never runs its generator, so never the `finally` that calls
        `client_closed`. Unvouched, the row stops counting after
        LIVE_CLIENT_STALE_SECONDS and is pruned with those of dead processes.
        """
        self._clients.discard(client.pk)

    # --- the tasks ---

    def _start(self) -> None:
        if self._task is None:
            # A fresh context: not the ThreadSensitiveContext of the request that
            # happened to start the bus, which ends with that request.
            self._task = asyncio.create_task(self._run(), name="bus", context=contextvars.Context())

    async def _run(self) -> None:
        """Listen, poll and fan out, with one thread and database connection of the bus's own."""
        async with ThreadSensitiveContext():
            tasks = [self._fan_out(), self._refresh_clients()]
            tasks += [self.session_cursors.flush_every(settings.WS_CURSOR_FLUSH_SECONDS)]
            if settings.EVENT_BUS == "postgres":
                tasks += [self._listen_postgres(), self._poll(settings.EVENT_SAFETY_POLL_SECONDS)]
            elif settings.EVENT_BUS == "redis":
                tasks += [self._listen_redis(), self._poll(settings.EVENT_SAFETY_POLL_SECONDS)]
            else:
                tasks += [self._watch_commits()]
            try:
                await asyncio.gather(*tasks)
            finally:
                await sync_to_async(close_connection)()

    async def close(self) -> None:
        """Stop listening and end every subscription (their clients reconnect elsewhere)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.session_cursors.flush()
        for watchers in [*self._watchers.values(), *self._owners.values()]:
            for subscription in watchers:
                subscription.close()
        if self._clients:
            await LiveClient.objects.filter(pk__in=list(self._clients)).adelete()
            self._clients.clear()

    async def _fan_out(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._unplaced:
                try:
                    await self._place()
                except Exception:
                    logger.exception("Could not look up the owners of new projects")
                    await sync_to_async(close_old_connections)()
            dirty, self._dirty = self._dirty, set()
            for key in dirty:
                try:
                    ready = self._ready.get(key)
                    if ready is not None:
                        await ready.wait()  # its first subscriber is still reading the cursor
                    await self._deliver(key)
                except Exception:
                    logger.exception("Could not read the events of project %s; retrying", key)
                    await sync_to_async(close_old_connections)()
                    self._dirty.add(key)
                    self._wake.set()
                    await asyncio.sleep(1)

    async def _deliver(self, key: str) -> None:
        while key in self._cursors:
            self.reads += 1
            events = await read_events(key, self._cursors[key], MAX_PENDING)
            cursor = self._cursors.get(key)
            if cursor is None:
                return
            # Events carried by wake-ups may have been handed on during the read.
            fresh = [event for event in events if event["seq"] > cursor]
            if fresh:
                self._hand_on(key, fresh)
            if len(events) < MAX_PENDING:
                return

    def _hand_on(self, key: str, events: list[LoggedEvent]) -> None:
        """Give every subscription of the project `events`, which continue the bus's cursor."""
        self._cursors[key] = events[-1]["seq"]
        metrics.observe_wake_lag(events)
        for subscription in list(self._watchers.get(key, ())):
            subscription.push(events)

    async def _poll(self, every: float) -> None:
        """Compare the watched projects' versions with our cursors every `every` s."""
        while True:
            await asyncio.sleep(every)
            await self._poll_once()

    async def _poll_once(self) -> None:
        """One query for every watched project: wake those whose version passed our cursor.

        It also lists every project of the owners some client follows whole: a
        project made since is watched from then on.
        """
        if not self._watchers and not self._owners:
            return
        watched = Q(pk__in=list(self._watchers))
        if self._owners:
            watched |= Q(owner_id__in=list(self._owners))
        try:
            rows = VideoProject.objects.filter(watched).values_list("pk", "owner_id", "version")
            versions = [row async for row in rows]
        except Exception:
            logger.exception("Could not poll for events")
            await sync_to_async(close_old_connections)()
            return
        behind = []
        for pk, owner_id, version in versions:
            key = str(pk)
            if key in self._watchers:
                if version > self._cursors.get(key, version):
                    behind.append(key)
            elif owner_id in self._owners:
                self._remember_owner(key, owner_id)
                self._adopt(key, owner_id)
        self.wake(behind)

    async def _watch_commits(self) -> None:
        """On SQLite: poll the versions as soon as anything was committed, and now and then anyway.

        Without a watcher (the database cannot be opened read-only) it polls
        every `EVENT_POLL_SECONDS`, as the bus did before it had one.
        """
        try:
            watcher = CommitWatcher(settings.DATABASES["default"]["NAME"])
        except sqlite3.Error:
            logger.warning(
                "Cannot watch the SQLite database for commits; polling every %s s",
                settings.EVENT_POLL_SECONDS,
                exc_info=True,
            )
            await self._poll(settings.EVENT_POLL_SECONDS)
            return
        loop = asyncio.get_running_loop()
        polled = loop.time()
        try:
            while True:
                await asyncio.sleep(COMMIT_CHECK_SECONDS)
                changed = watcher.changed()
                if changed or loop.time() - polled >= settings.EVENT_SAFETY_POLL_SECONDS:
                    polled = loop.time()
                    await self._poll_once()
        finally:
            watcher.close()

    async def _listen_postgres(self) -> None:
        import psycopg

        db = settings.DATABASES["default"]
        params = {
            "dbname": db["NAME"],
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
        }
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    **{name: value for name, value in params.items() if value}, autocommit=True
                ) as listener:
                    await listener.execute(f"LISTEN {CHANNEL}")
                    self.wake_all()  # whatever committed while we were not listening
                    async for notice in listener.notifies():
                        self.heard(notice.payload)
            except psycopg.Error:
                logger.warning("The PostgreSQL listener lost its connection; reconnecting")
                await asyncio.sleep(1)

    async def _listen_redis(self) -> None:
        import redis.asyncio as redis

        while True:
            client = redis.Redis.from_url(settings.REDIS_URL)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self.wake_all()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.heard(message["data"].decode())
            except (redis.RedisError, OSError):
                logger.warning("The Redis listener lost its connection; reconnecting")
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def _refresh_clients(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_CLIENT_REFRESH_SECONDS)
            ids = list(self._clients)
            now = datetime.now(UTC)
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    await LiveClient.objects.filter(pk__in=chunk).aupdate(seen_at=now)
            except Exception:
                logger.exception("Could not refresh this process's live clients")


class CommitWatcher:
    """Whether anything was committed to a SQLite database since the last look.

    `PRAGMA data_version` on a connection of our own changes whenever another
    connection commits, and reads no table: a few microseconds, on the event
    loop, so it can run every few milliseconds. (The WAL file's mtime would
    do nearly as well, but two commits within one tick of the kernel's coarse
    clock, after a checkpoint restarted the WAL at the same size, would look
    like one.)
    """

    def __init__(self, database: Any) -> None:
        uri = f"{Path(database).resolve().as_uri()}?mode=ro"
        # timeout=0: never wait for a lock on the event loop (see `changed`).
        self._connection = sqlite3.connect(
            uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
        )
        self._version: int | None = None

    def changed(self) -> bool:
        try:
            (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            # Busy for a moment (a checkpoint, a recovery): the next look still sees
            # the change, since it compares with the last version it read.
            return False
        changed = version != self._version
        self._version = version
        return changed

    def close(self) -> None:
        self._connection.close()


@sync_to_async
def _insert_within_cap(client: LiveClient) -> None:
    cap = settings.MAX_STREAMS_PER_USER
    with transaction.atomic():
        if cap:
            # Count and insert under the user's row lock: two opens of one user, in
            # any processes, queue here, so both cannot count cap - 1 and both get
            # in. (SQLite has no row locks; there BEGIN IMMEDIATE, see settings,
            # takes the database's write lock, which queues them the same way.)
            users = get_user_model().objects.select_for_update().filter(pk=client.user_id)
            list(users.values_list("pk", flat=True))
            if LiveClient.objects.connected().filter(user_id=client.user_id).count() >= cap:
                raise TooManyStreams
        client.save(force_insert=True)


def prune_departed() -> int:
    """Forget live clients of web processes that died and WebSocket sessions nobody resumed."""
    idle_since = datetime.now(UTC) - timedelta(days=settings.WS_SESSION_RETENTION_DAYS)
    clients, _ = LiveClient.objects.gone().delete()
    sessions, _ = WebSocketSession.objects.idle_since(idle_since).delete()
    return clients + sessions


_buses: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bus] = weakref.WeakKeyDictionary()


def get_bus() -> Bus:
    """This process's bus (one per event loop; a web server runs one loop)."""
    loop = asyncio.get_running_loop()
    bus = _buses.get(loop)
    if bus is None:
        bus = _buses[loop] = Bus()
    return bus


async def close_bus() -> None:
    loop = asyncio.get_running_loop()
    bus = _buses.pop(loop, None)
    if bus is not None:
        await bus.close()
