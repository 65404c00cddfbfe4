"""The hot read paths, async end to end: the status poll and long-poll, and Server-Sent Events.

They are plain async Django views rather than DRF views: DRF runs sync only,
and a sync view under the ASGI server hops threads on every request (DESIGN.md
measured it ~9x slower). They keep the API's contract all the same: token or
session authentication, the same 404 for someone else's project, the error
body of every other endpoint. Live events come from this process's bus
(projects/bus.py); replay comes from the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed

from projects.api import browsable
from projects.api.auth import token_key, token_user
from projects.api.errors import json_error, validation_body
from projects.api.serializers import MAX_SEQ, StrictSerializer
from projects.bus import BusClosed, LoggedEvent, TooManyStreams, get_bus
from projects.cursors import CursorMap, decode_token
from projects.models import LiveClient, Transport, VideoProject
from projects.ownership import (
    NOT_YOURS,
    ProjectNotFound,
    as_uuid,
    owned_project,
    token_holders_row,
    token_holders_version,
)

logger = logging.getLogger(__name__)
UNAVAILABLE = "The progress service is unavailable for a moment; please try again."


class _Refused(Exception):
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def _caller(request: HttpRequest) -> Any:
    """The user behind a token or a session, or a 401 in the API's error shape."""
    try:
        user = token_user(request)
    except AuthenticationFailed as refused:
        raise _Refused(json_error(401, str(refused.detail), "authentication_failed")) from None
    if user is not None:
        return user
    if not request.user.is_authenticated:
        raise _Refused(
            json_error(401, "Authentication credentials were not provided.", "not_authenticated")
        )
    return request.user


def callers_project(request: HttpRequest, project_id: Any) -> tuple[Any, VideoProject]:
    """The caller and their project, or a 401 or the 404 of every entry point."""
    user = _caller(request)
    try:
        return user, owned_project(user, project_id)
    except ProjectNotFound as missing:
        raise _Refused(json_error(404, str(missing), "not_found")) from None


# One trip to a database thread for all of it: under ASGI each trip is a thread hop.
_callers_project = sync_to_async(callers_project)


def _query(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    query = serializer_class(data=data)
    if not query.is_valid():
        raise _Refused(JsonResponse(validation_body(query.errors), status=400))
    return query.validated_data


def _refusals(view: Any) -> Any:
    """GET only; a refusal or a database error answered in the API's error shape."""
    if asyncio.iscoroutinefunction(view):

        async def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "GET":
                return _not_allowed(request)
            try:
                return await view(request, *args, **kwargs)
            except _Refused as refused:
                return refused.response
            except DatabaseError:
                return _database_error(request)

    else:

        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "GET":
                return _not_allowed(request)
            try:
                return view(request, *args, **kwargs)
            except _Refused as refused:
                return refused.response
            except DatabaseError:
                return _database_error(request)

    guarded.__doc__ = view.__doc__
    return guarded


def _not_allowed(request: HttpRequest) -> HttpResponse:
    return json_error(405, f'Method "{request.method}" not allowed.', "method_not_allowed")


def _database_error(request: HttpRequest) -> HttpResponse:
    # The database is down or overloaded: a 503 the client may retry, not an HTML 500.
    logger.exception("%s %s failed on a database error", request.method, request.path)
    return _unavailable()


# --- status, and long-poll ---------------------------------------------------


class StatusQuery(StrictSerializer):
    wait = serializers.FloatField(min_value=0, max_value=settings.LONG_POLL_MAX_SECONDS, default=0)
    since = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)


@_refusals
def status(request: HttpRequest, project_id: Any) -> HttpResponse:
    """The status object; `?wait=S&since=V` holds the answer until `version > V` (or S seconds).

    A sync view: a poll is answered by a thread of the web process's pool
    (videocreation/server.py) at a fraction of the cost of a trip through
    Django's ASGI handler. A long-poll is routed to that handler instead, where
    this thread waits on the event loop and holds nothing else.
    """
    if browsable.wants_page(request):
        return browsable.status_page(request, project_id)  # a browser's visit, not a poll
    key, pk = _token_and_id(request, project_id)
    query = None  # validated once, after the caller is known (401 and 404 come first)
    if key is None or pk is None:
        # A session's caller (the page), or an id no project has: the usual way.
        _, project = callers_project(request, project_id)
    else:
        tags = _if_none_match(request)
        if tags:
            # The client holds a copy: compare versions before reading the whole row.
            version = token_holders_version(key, pk)
            if version is None:
                _refuse_missing(request, project_id)
            query = _status_query(request)
            etag = _etag(pk, version)
            if query["wait"] == 0 and (etag in tags or "*" in tags):
                return _not_modified(etag)
        project = token_holders_row(key, pk) or _refuse_missing(request, project_id)
    query = query or _status_query(request)
    if query["wait"] > 0:
        since = query.get("since", project.version)
        if project.version <= since:
            try:
                project = async_to_sync(_wait_for_change)(project, since, query["wait"])
            except Exception:
                logger.exception("The long-poll of project %s failed", project.pk)
                return _unavailable()
    return _status_response(request, project)


def _unavailable() -> HttpResponse:
    response = json_error(503, UNAVAILABLE, "unavailable")
    response["Retry-After"] = "1"
    return response


async def _wait_for_change(project: VideoProject, since: int, wait: float) -> VideoProject:
    bus = get_bus()
    feed = await bus.feed(project.pk, since, in_request=True)
    try:
        await feed.next(wait)
    except BusClosed:
        pass
    finally:
        bus.unsubscribe(feed.subscription)
    return await VideoProject.objects.aget(pk=project.pk)


def _status_query(request: HttpRequest) -> dict[str, Any]:
    # A plain poll has no parameters: skip the serializer (a tenth of the poll's time).
    return _query(StatusQuery, request.GET) if request.GET else {"wait": 0}


def _token_and_id(request: HttpRequest, project_id: Any) -> tuple[str | None, uuid.UUID | None]:
    """The request's token key (None without one; 401 if malformed), and the id as a UUID."""
    try:
        key = token_key(request.headers.get("Authorization", "").encode("latin-1"))
    except AuthenticationFailed as refused:
        raise _Refused(json_error(401, str(refused.detail), "authentication_failed")) from None
    return key, as_uuid(project_id)


def _refuse_missing(request: HttpRequest, project_id: Any) -> NoReturn:
    """Raise the 401 or 404 the slow way would: the token is wrong, or the project not theirs."""
    callers_project(request, project_id)
    raise _Refused(json_error(404, NOT_YOURS, "not_found"))


def _if_none_match(request: HttpRequest) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",")} if header else set()


def _etag(project_id: Any, version: int) -> str:
    return f'"{as_uuid(project_id)}-{version}"'


def _not_modified(etag: str) -> HttpResponse:
    response = HttpResponse(status=304)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


def _status_response(request: HttpRequest, project: VideoProject) -> HttpResponse:
    etag = _etag(project.pk, project.version)
    tags = _if_none_match(request)
    if etag in tags or "*" in tags:
        return _not_modified(etag)
    response = JsonResponse(project.to_status_dict())
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    return response


# --- Server-Sent Events -------------------------------------------------------


class EventsQuery(StrictSerializer):
    lastEventId = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, required=False)


@_refusals
async def events(request: HttpRequest, project_id: Any) -> HttpResponse:
    """The project's events as `text/event-stream`: the current status, then every change.

    With `Last-Event-ID` (or `?lastEventId=`) it replays every event after that
    seq from the log instead, then goes live.
    """
    user, project = await _callers_project(request, project_id)
    query = _query(EventsQuery, request.GET)
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id:
        after = _query(EventsQuery, {"lastEventId": last_event_id})["lastEventId"]
    else:
        after = query.get("lastEventId")
    # Ids, not instances: a stream holds what it keeps for its whole life, times its watchers.
    live = LiveClient(transport=Transport.SSE, user_id=user.pk, project_id=project.pk)
    client = await open_stream(live)
    if client is None:
        return too_many_streams()
    return EventStreamResponse(
        _event_stream(client, str(project.pk), project.version, after), client
    )


async def open_stream(client: LiveClient) -> LiveClient | None:
    """The client, registered as one of its user's open streams; None past their cap."""
    try:
        await get_bus().client_opened(client)
    except TooManyStreams:
        return None
    return client


def too_many_streams_message() -> str:
    return (
        f"You have {settings.MAX_STREAMS_PER_USER} streams open, as many as one account may; "
        "close one to open another."
    )


def too_many_streams() -> HttpResponse:
    # No Retry-After: a place frees when the user closes a stream, not after a time.
    return json_error(429, too_many_streams_message(), "too_many_streams")


class LiveStreamResponse(StreamingHttpResponse):
    """An event stream that holds a registered client (see `open_stream`)."""

    def __init__(self, stream: AsyncIterator[str | bytes], client: LiveClient) -> None:
        super().__init__(stream, content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        self._bus = get_bus()
        self._client = client

    def close(self) -> None:
        # The stream's own `finally` forgets the client; this covers a stream that never ran.
        self._bus.stop_vouching(self._client)
        super().close()


class EventStreamResponse(LiveStreamResponse):
    """A `text/event-stream` of bytes, each part sent as it comes."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        # Django's own wraps every part in two more async generators, to encode
        # str and to map a sync iterator: neither applies, and each costs an
        # object per event per watcher.
        return self._iterator


HEARTBEAT = b": heartbeat\n\n"


async def _event_stream(
    client: LiveClient, project_id: str, version: int, after: int | None
) -> AsyncIterator[bytes]:
    bus = get_bus()
    feed = None
    try:
        yield f"retry: {settings.SSE_RETRY_MS}\n\n".encode()
        feed = await bus.feed(project_id, after or 0, in_request=True)
        if after is None or after > version:
            # A new client (or one whose cursor we never issued) starts from the
            # current state; subscribed first, so nothing after it is missed.
            project = await VideoProject.objects.aget(pk=project_id)
            feed.cursor = project.version
            yield _format("status", project.version, project.to_status_dict()).encode()
            del project
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.SSE_MAX_SECONDS
        heartbeat = settings.SSE_HEARTBEAT_SECONDS
        while (remaining := deadline - loop.time()) > 0:
            batch = await feed.next(min(heartbeat, remaining))
            if len(batch) == 1:
                yield _encoded(batch[0])
            elif batch:
                yield b"".join(_encoded(event) for event in batch)
            elif remaining > heartbeat:
                yield HEARTBEAT
    except BusClosed:
        return
    except Exception:
        # End the stream: the browser's EventSource reconnects with Last-Event-ID
        # and misses nothing, where a stream left hanging would show nothing more.
        logger.exception("The event stream of project %s failed; ending it", project_id)
    finally:
        if feed is not None:
            bus.unsubscribe(feed.subscription)
        await _forget(bus, client)


def _encoded(event: LoggedEvent) -> bytes:
    """The event as SSE bytes, encoded once however many streams send it (the bus shares it)."""
    return event.encoded("sse", _sse_bytes)


def _sse_bytes(event: dict[str, Any]) -> bytes:
    return _format(event["kind"], event["seq"], event["payload"]).encode()


async def _forget(bus: Any, client: LiveClient) -> None:
    try:
        await bus.client_closed(client)
    except Exception:
        # The row of a client that is gone ages out and is pruned (LiveClient).
        logger.exception("Could not remove the SSE client %s", client.pk)


def _format(kind: str, seq: int, payload: dict[str, Any]) -> str:
    data = json.dumps(payload | {"seq": seq}, separators=(",", ":"))
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"


# --- all of a user's projects, on one stream ------------------------------------------


class CursorToken(serializers.CharField):
    """A `CursorMap` token, as `{project id: seq}`."""

    def to_internal_value(self, data: Any) -> dict[str, int]:
        text = super().to_internal_value(data)
        try:
            return decode_token(text)
        except ValueError as bad:
            raise serializers.ValidationError(str(bad)) from None


class AllEventsQuery(StrictSerializer):
    since = CursorToken(required=False)
    lastEventId = CursorToken(required=False)


@_refusals
async def all_events(request: HttpRequest) -> HttpResponse:
    """Every project of the caller as one `text/event-stream`, those made later too.

    Each event is a project's event, with `projectId` and `seq` in its data; its
    `id` is the client's cursor in every project (`projects/cursors.py`), so
    `Last-Event-ID` (or `?since=`) resumes each project after its own seq.
    """
    user = await sync_to_async(_caller)(request)
    query = _query(AllEventsQuery, request.GET)
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id:
        since = _query(AllEventsQuery, {"lastEventId": last_event_id})["lastEventId"]
    else:
        since = query.get("lastEventId", query.get("since"))
    live = LiveClient(transport=Transport.SSE, user_id=user.pk)
    client = await open_stream(live)
    if client is None:
        return too_many_streams()
    return EventStreamResponse(_all_events_stream(client, user.pk, since), client)


async def _all_events_stream(
    client: LiveClient, owner_id: Any, since: dict[str, int] | None
) -> AsyncIterator[bytes]:
    bus = get_bus()
    feed = None
    try:
        yield f"retry: {settings.SSE_RETRY_MS}\n\n".encode()
        feed = await bus.projects_feed(owner_id, since, in_request=True)
        sent = CursorMap(feed.cursors)
        if since is None:
            # A new client starts from the current state of each project still in
            # hand, as `GET unfinished` lists them; the others from now on.
            async for project in feed.unfinished():
                key, seq = str(project.pk), project.version
                sent.move(key, seq)
                lines = _all_lines("status", seq, key, project.to_status_dict())
                yield b"id: " + sent.token().encode() + b"\n" + lines
        while feed.replaying:
            if events := await feed.replay():
                yield _all_encoded(events, sent)
        ready = json.dumps({"projects": len(feed.following)})
        yield f"id: {sent.token()}\nevent: ready\ndata: {ready}\n\n".encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.SSE_MAX_SECONDS
        heartbeat = settings.SSE_HEARTBEAT_SECONDS
        while (remaining := deadline - loop.time()) > 0:
            batch = await feed.next(min(heartbeat, remaining))
            if batch:
                yield _all_encoded(batch, sent)
            elif remaining > heartbeat:
                yield HEARTBEAT
    except BusClosed:
        return
    except Exception:
        logger.exception("The event stream of all projects of user %s failed; ending it", owner_id)
    finally:
        if feed is not None:
            bus.unsubscribe(feed.subscription)
        await _forget(bus, client)


def _all_encoded(events: list[LoggedEvent], sent: CursorMap) -> bytes:
    """The events as SSE bytes, each with the cursor map after it as its `id`."""
    parts = []
    for event in events:
        sent.move(event.project_id, event["seq"])
        parts += [b"id: ", sent.token().encode(), b"\n", event.encoded("sse-all", _sse_all_bytes)]
    return b"".join(parts)


def _sse_all_bytes(event: LoggedEvent) -> bytes:
    """An event's `event:` and `data:` lines: the same for every stream that sends it."""
    return _all_lines(event["kind"], event["seq"], event.project_id, event["payload"])


def _all_lines(kind: str, seq: int, project_id: str, payload: dict) -> bytes:
    data = json.dumps(payload | {"seq": seq, "projectId": project_id}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


# --- serving streams without a thread each -----------------------------------------


class EventStreamHandler(ASGIHandler):
    """Django's ASGI handler, minus the thread it gives each request: for event streams.

    Django runs a request's sync parts (middleware, signals, ORM calls) on a
    thread made for that request (its `ThreadSensitiveContext`), which lives as
    long as the response: for an event stream, as long as the client watches,
    with its stack and its own database wrapper (bench/README.md measured
    ~90-140 KiB a watcher). Here those parts run on asgiref's one process-wide
    thread for sync code instead, as the WebSocket consumer's do; they are
    short (sign-in, the project, the open-stream record, replay), and a
    waiting stream needs no thread at all. The request goes through the same
    middleware, view and error answers as under Django's own handler.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.handle(scope, receive, send)


def threadless_event_streams(application: Any) -> Any:
    """An ASGI app sending `GET …/events` (a project's, or all) to `EventStreamHandler`."""
    streams = EventStreamHandler()
    placeholder = "PROJECT"
    where = reverse("project-events", kwargs={"project_id": placeholder})
    before, after = (re.escape(part) for part in where.split(placeholder))
    every = re.escape(reverse("all-events"))
    events_path = re.compile(f"^(?:{before}[^/]+{after}|{every})/?$")

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and events_path.match(scope["path"]):
            await streams(scope, receive, send)
        else:
            await application(scope, receive, send)

    return route
