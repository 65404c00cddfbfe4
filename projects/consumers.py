"""The WebSocket consumer at /ws/progress/ (Channels): the project's event log, live and resumable.

The protocol (messages are `{"type", "task_id", "payload"}`, `task_id` is a project id):

* on connect the server sends `connected` with `payload.client_id`; a client
  that connects with `?old_client_id=<id>` (of the same user) gets
  `reconnected` with `payload.subscribed` instead, then every event it missed;
* `{"action": "subscribe", "task_id", "since"?}` → `subscribed` with
  `payload.topics`, then every event after `since` (without it: the current
  status, or where this client's session left off), then live events;
  `{"action": "unsubscribe", "task_id"}` → `unsubscribed`;
* `{"action": "ack", "task_id", "seq"}` after the client has processed the
  events up to `seq`: no answer unless it is refused;
* `{"action": "subscribe", "task_id": "*", "since"?}`: every project of the
  caller, those made later too, on one subscription: `subscribed`, then
  without `since` the current status of each unfinished project (as `GET
  unfinished`), with `since` (a cursor token of `GET events`, or
  `{project id: seq}`) every event after each project's seq; then `ready`,
  then every project's events as they come, each message's `task_id` its
  project. Its place is the client's `since`, not the session's: it resumes
  by subscribing again with the seqs the client has (acks of its projects are
  accepted and kept nowhere); `{"action": "unsubscribe", "task_id": "*"}` ends it;
* `{"type": "ping"}` → `pong` with `payload.timestamp`;
* events: `progress`, `status`, `log`, `error`, each payload with its `seq`.
  An `error` without `seq` answers a message the server could not act on.

Where each subscription stands (`WebSocketSubscription.last_seq`) is the last
seq its client acked (DESIGN.md principle 12): never what the server sent, since
what was in flight when a connection died never arrived. It starts as the
client's `since`, or as nothing; it moves only forward and only on acks, and is
where a reconnect, or a `subscribe` without `since`, resumes. A client that has
said nothing is sent, on reconnect, the project's current status and then live
events, as on its first subscribe. The first ack of a subscription is written
at once (so a crash right after subscribing cannot fall back to that); later
ones are cheap: the process's
`SessionCursors` (`projects/cursors.py`) writes all its sockets' moved cursors
in one statement every `WS_CURSOR_FLUSH_SECONDS`, and when a socket closes.

A feed that fails (its log cannot be read) is logged and closes the socket with
1011; a web process that shuts down closes its sockets with 1012. Either way
the client reconnects with `old_client_id` and resumes from its last ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import AuthenticationFailed

from projects.api.auth import token_key, user_for_token
from projects.api.serializers import MAX_SEQ
from projects.bus import Bus, BusClosed, Feed, LoggedEvent, ProjectsFeed, TooManyStreams, get_bus
from projects.cursors import cursors_from
from projects.models import (
    EventKind,
    LiveClient,
    Transport,
    VideoProject,
    WebSocketSession,
    WebSocketSubscription,
)
from projects.ownership import ProjectNotFound, aowned_project

logger = logging.getLogger(__name__)

# Close codes: 4401 = not signed in (after HTTP's 401); 4429 = the user's streams
# are at MAX_STREAMS_PER_USER (after 429); 1011 = internal error (a feed failed);
# 1012 = service restart.
NOT_SIGNED_IN = 4401
TOO_MANY_STREAMS = 4429
FEED_FAILED = 1011
SERVICE_RESTART = 1012
MAX_SUBSCRIPTIONS = 100
ALL = "*"  # the task_id of a subscription to every project of the caller
DEFAULT_PORTS = {"http": 80, "https": 443}


class TokenHeaderAuthMiddleware(BaseMiddleware):
    """`Authorization: Token <key>` on the upgrade request signs the socket in (never a URL token).

    Placed inside Channels' session middleware: a valid token wins over the
    cookie; a bad token leaves the socket anonymous, and the consumer refuses it.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        authorization = dict(scope.get("headers", [])).get(b"authorization", b"")
        try:
            key = token_key(authorization)
            if key is not None:
                scope = {**scope, "user": await sync_to_async(user_for_token)(key)}
        except AuthenticationFailed:
            scope = {**scope, "user": AnonymousUser()}
        return await super().__call__(scope, receive, send)


Origin = tuple[str, str, int]


class BrowserOriginValidator:
    """A browser's socket must come from our own origin; a program (no Origin) may connect.

    Browsers always send Origin, and a cross-site page could otherwise ride the
    person's session cookie, so it must equal, scheme, host and port, the origin
    the browser opened the socket to (its Host header, `http` for `ws` and
    `https` for `wss`) or one of `CSRF_TRUSTED_ORIGINS`, as Django's CSRF check
    asks of a form. Another port of our host is another origin (another app).
    The Host itself must be in `ALLOWED_HOSTS`. Programs send no Origin and sign
    in by token.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if allowed_origin(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def allowed_origin(scope: dict[str, Any]) -> bool:
    """Whether the upgrade request `scope` may open a socket, judged by its Origin and Host."""
    headers = scope.get("headers", [])
    origins = [value for name, value in headers if name == b"origin"]
    if not origins:
        return True
    hosts = [value for name, value in headers if name == b"host"]
    if len(origins) != 1 or len(hosts) != 1:
        return False
    host = hosts[0].decode("latin1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    origin = _origin(origins[0].decode("latin1"))
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    trusted = {_origin(entry) for entry in settings.CSRF_TRUSTED_ORIGINS}
    return origin is not None and (origin == _origin(f"{scheme}://{host}") or origin in trusted)


def _allowed_hosts() -> list[str]:
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]  # what Django's own host check allows
    return settings.ALLOWED_HOSTS


def _origin(text: str) -> Origin | None:
    """`scheme://host[:port]` as (scheme, host, port), default ports filled in; None if not one."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def event_message(project_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """One entry of the project's log as the WebSocket protocol tells it."""
    kind, payload, seq = event["kind"], event["payload"], event["seq"]
    if kind == EventKind.PROGRESS:
        body = {
            "task_id": project_id,
            "progress": payload.get("progress"),
            "current_step": payload.get("currentStep"),
            "total_steps": payload.get("totalSteps"),
            "completed_steps": payload.get("completedSteps"),
            "message": payload.get("progressMessage"),
            "status": payload.get("status"),
            "timestamp": payload.get("updatedAt") or event["createdAt"],
        }
    elif kind == EventKind.STATUS:
        body = {
            "status": payload.get("status"),
            "error": payload.get("error"),
            "result": {
                "scriptData": payload.get("scriptData"),
                "videoUrl": payload.get("videoUrl"),
            },
            "progress": payload.get("progress"),
            "timestamp": payload.get("updatedAt") or event["createdAt"],
        }
    elif kind == EventKind.ERROR:
        body = {**payload.get("error", {}), "timestamp": event["createdAt"]}
    else:
        line = payload.get("line", "")
        lines = payload.get("lines", [line])
        body = {"lines": lines, "line": line, "timestamp": event["createdAt"]}
    return {"type": kind, "task_id": project_id, "payload": {**body, "seq": seq}}


def status_message(project: VideoProject) -> dict[str, Any]:
    """The project's current state as one `status` message carrying its latest seq."""
    status = project.to_status_dict()
    event = {"kind": EventKind.STATUS, "seq": project.version, "payload": status}
    return event_message(str(project.pk), event | {"createdAt": status["updatedAt"]})


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _project_key(task_id: Any) -> str | None:
    """A project id as the consumer keys it (`str(uuid)`), or None if it is not one."""
    try:
        return str(uuid.UUID(task_id))
    except (ValueError, TypeError, AttributeError):
        return None


async def _version(project_id: str) -> int:
    versions = VideoProject.objects.filter(pk=project_id).values_list("version", flat=True)
    return await versions.afirst() or 0


class ProgressConsumer(AsyncJsonWebsocketConsumer):
    """One socket: a session that outlives it, and one feed per followed project."""

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.bus: Bus = get_bus()
        self.feeds: dict[str, asyncio.Task[None]] = {}
        # Per followed project: the client's last ack, and the highest seq known
        # to exist (what was sent, or the version read), which bounds an ack.
        self.acked: dict[str, int] = {}
        self.known: dict[str, int] = {}
        self.client: LiveClient | None = None
        self.closing = False
        self.all_feed: ProjectsFeed | None = None
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        await self.accept()
        old_client_id = parse_qs(self.scope.get("query_string", b"").decode()).get(
            "old_client_id", [""]
        )[0]
        self.session = await WebSocketSession.objects.resume(self.user, old_client_id)
        self.client_id = str(self.session.client_id)
        client = LiveClient(transport=Transport.WEBSOCKET, user=self.user, session=self.session)
        try:
            await self.bus.client_opened(client)
        except TooManyStreams:
            await self._refuse_past_the_cap()
            return
        self.client = client
        if self.session.resumed:
            await self._resume()
            return
        payload: dict[str, Any] = {"client_id": self.client_id}
        if old_client_id:
            payload["resumed"] = False  # an unknown, or someone else's, old client id
        await self._send("connected", None, payload)

    async def _refuse_past_the_cap(self) -> None:
        # Accepted first, then closed: a browser shows a refused handshake as 1006,
        # without the code that says why.
        if not self.session.resumed:
            await WebSocketSession.objects.filter(pk=self.session.pk).adelete()
        reason = f"You have {settings.MAX_STREAMS_PER_USER} streams open; close one first."
        await self.close(code=TOO_MANY_STREAMS, reason=reason)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.client is None:
            return  # refused past the cap, and closing: what it sends is moot
        try:
            message = json.loads(text_data or "")
        except ValueError:
            await self._refuse(None, "invalid", "Messages are JSON objects.")
            return
        if not isinstance(message, dict):
            await self._refuse(None, "invalid", "Messages are JSON objects.")
            return
        await self.receive_json(message)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        if content.get("type") == "ping" or content.get("action") == "ping":
            await self._send("pong", content.get("task_id"), {"timestamp": _now()})
            return
        action = content.get("action")
        if action == "ack":
            await self._ack(content.get("task_id"), content.get("seq"))
            return
        if action not in ("subscribe", "unsubscribe"):
            await self._refuse(
                content.get("task_id"),
                "unknown_action",
                "Send an action (subscribe, unsubscribe or ack) or a ping.",
            )
            return
        if content.get("task_id") == ALL:
            if action == "subscribe":
                await self._subscribe_all(content.get("since"))
            else:
                await self._unsubscribe_all()
            return
        project = await self._owned_project(content.get("task_id"))
        if project is None:
            return
        if action == "subscribe":
            await self._subscribe(project, content.get("since"))
        else:
            await self._unsubscribe(str(project.pk))

    async def disconnect(self, code: int) -> None:
        for task in self.feeds.values():
            task.cancel()
        await asyncio.gather(*self.feeds.values(), return_exceptions=True)
        if self.client is not None:
            # The process-wide flush, now: this socket's acks (and any other's) are written.
            await self.bus.session_cursors.flush()
            await self.bus.client_closed(self.client)

    # --- subscriptions ---

    async def _owned_project(self, task_id: Any) -> VideoProject | None:
        try:
            return await aowned_project(self.user, task_id)
        except ProjectNotFound as missing:
            await self._refuse(task_id, "not_found", str(missing))
            return None

    async def _resume(self) -> None:
        """A reconnect: every subscription of the session resumes after its last ack."""
        unwritten = self.bus.session_cursors.unwritten(self.client_id)  # before the rows
        subscriptions = [s async for s in self.session.subscriptions.all()]
        topics = [str(s.project_id) for s in subscriptions]
        await self._send("reconnected", None, {"client_id": self.client_id, "subscribed": topics})
        for subscription in subscriptions:
            key = str(subscription.project_id)
            await self._follow(key, self._said(key, subscription.last_seq, unwritten.get(key)))

    async def _subscribe(self, project: VideoProject, since: Any) -> None:
        key = str(project.pk)
        if since is not None and not (_is_seq(since) and since <= MAX_SEQ):
            await self._refuse(key, "invalid", "`since` is a seq: a whole number, 0 or more.")
            return
        if key not in self.feeds and len(self.feeds) >= MAX_SUBSCRIPTIONS:
            await self._refuse(
                key, "too_many", f"A socket follows at most {MAX_SUBSCRIPTIONS} projects."
            )
            return
        self._stop_feed(key)
        if since is not None and since > project.version:
            since = None  # a seq this project never had: start from its current state
        unwritten = self.bus.session_cursors.unwritten(self.client_id).get(key)
        subscription, created = await WebSocketSubscription.objects.aget_or_create(
            session=self.session, project=project, defaults={"last_seq": since}
        )
        await self._send("subscribed", key, {"topics": [*self.feeds, key]})
        said = self._said(key, subscription.last_seq, unwritten, self.acked.get(key))
        if since is None and not created:
            since = said  # where the client's own acks left off (None: nothing said yet)
        await self._follow(key, since)

    def _said(self, key: str, *seqs: int | None) -> int | None:
        """The furthest the client has said it got: stored, unwritten, or on this socket."""
        said = max((seq for seq in seqs if seq is not None), default=None)
        if said is not None:
            self.acked[key] = said
        return said

    async def _unsubscribe(self, key: str) -> None:
        self._stop_feed(key)
        self.acked.pop(key, None)
        self.known.pop(key, None)
        self.bus.session_cursors.forget(self.client_id, key)
        await WebSocketSubscription.objects.filter(session=self.session, project_id=key).adelete()
        await self._send("unsubscribed", key, {"topics": list(self.feeds)})

    def _stop_feed(self, key: str) -> None:
        task = self.feeds.pop(key, None)
        if task is not None:
            task.cancel()

    async def _follow(self, key: str, since: int | None) -> None:
        """Subscribe on the bus first, then send what was missed, then live events."""
        feed = await get_bus().feed(key, since or 0)
        if since is None:
            # Subscribed before this read, so nothing after it is missed.
            project = await VideoProject.objects.aget(pk=key)
            feed.cursor = project.version
            await self.send_json(status_message(project))
        self.known[key] = max(self.known.get(key, 0), feed.cursor)
        self.feeds[key] = asyncio.create_task(self._pump(key, feed), name=f"ws-feed-{key}")

    async def _pump(self, key: str, feed: Feed) -> None:
        try:
            while True:
                try:
                    events = await feed.next(timeout=60)
                except BusClosed:
                    # This web process is going away: the client reconnects to another.
                    await self._close_once(SERVICE_RESTART)
                    return
                except Exception:
                    # Without the feed the socket would stay open and silent forever.
                    logger.exception("The WebSocket feed of project %s failed; closing", key)
                    await self._close_once(FEED_FAILED)
                    return
                for event in events:
                    await self.send(text_data=self._encoded(key, event))
                    self.known[key] = event["seq"]
        finally:
            get_bus().unsubscribe(feed.subscription)

    # --- every project at once ---

    async def _subscribe_all(self, since: Any) -> None:
        try:
            cursors = None if since is None else cursors_from(since)
        except ValueError as bad:
            await self._refuse(ALL, "invalid", str(bad))
            return
        if ALL not in self.feeds and len(self.feeds) >= MAX_SUBSCRIPTIONS:
            await self._refuse(
                ALL, "too_many", f"A socket follows at most {MAX_SUBSCRIPTIONS} projects."
            )
            return
        self._stop_feed(ALL)
        await self._send("subscribed", ALL, {"topics": [*self.feeds, ALL]})
        feed = self.all_feed = await self.bus.projects_feed(self.user.pk, cursors)
        if cursors is None:
            # Subscribed first, so nothing after these reads is missed.
            async for project in feed.unfinished():
                await self.send_json(status_message(project))
        self.feeds[ALL] = asyncio.create_task(self._pump_all(feed), name="ws-feed-all")

    async def _unsubscribe_all(self) -> None:
        self._stop_feed(ALL)
        self.all_feed = None
        await self._send("unsubscribed", ALL, {"topics": list(self.feeds)})

    async def _pump_all(self, feed: ProjectsFeed) -> None:
        ready = False
        try:
            while True:
                if not ready and not feed.replaying:
                    ready = True
                    await self._send("ready", ALL, {"projects": len(feed.following)})
                try:
                    events = await (feed.replay() if feed.replaying else feed.next(timeout=60))
                except BusClosed:
                    await self._close_once(SERVICE_RESTART)
                    return
                except Exception:
                    logger.exception("The WebSocket feed of all projects failed; closing")
                    await self._close_once(FEED_FAILED)
                    return
                for event in events:
                    await self.send(text_data=self._encoded(event.project_id, event))
        finally:
            get_bus().unsubscribe(feed.subscription)

    def _follows_all(self, key: str) -> bool:
        return ALL in self.feeds and self.all_feed is not None and key in self.all_feed.following

    async def _ack_all(self, key: str, seq: int) -> None:
        """An ack of a project followed through "*": checked, then kept nowhere (see above)."""
        assert self.all_feed is not None
        if seq > self.all_feed.cursors.get(key, 0) and seq > await _version(key):
            await self._refuse(key, "invalid", f"Project {key} has no event {seq} yet.")

    @staticmethod
    def _encoded(key: str, event: LoggedEvent) -> str:
        """The event's message as `send_json` encodes it, once however many sockets send it
        (the bus shares it)."""
        return event.encoded("websocket", lambda event: json.dumps(event_message(key, event)))

    async def _close_once(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code=code)

    # --- the session's cursors ---

    async def _ack(self, task_id: Any, seq: Any) -> None:
        """The client has processed the project's events up to `seq`: move its cursor there.

        Silent when it works; no database work unless `seq` is past every seq
        this socket knows of (then one read of the project's version).
        """
        key = _project_key(task_id)
        if key is None or (key not in self.feeds and not self._follows_all(key)):
            await self._refuse(task_id, "not_found", "This socket does not follow that project.")
            return
        if not _is_seq(seq):
            await self._refuse(key, "invalid", "`seq` is a whole number, 0 or more.")
            return
        if key not in self.feeds:
            await self._ack_all(key, seq)
            return
        if seq > self.known.get(key, 0):
            self.known[key] = max(self.known.get(key, 0), await _version(key))
            if seq > self.known[key]:
                await self._refuse(key, "invalid", f"Project {key} has no event {seq} yet.")
                return
        first = key not in self.acked
        if not first and seq <= self.acked[key]:
            return  # a late or repeated ack: a cursor never moves back
        self.acked[key] = seq
        self.bus.session_cursors.ack(self.client_id, key, seq)
        if first:
            # Once a subscription, not once an event: until the client's first word
            # is stored, a crash would leave the server nothing to resume from.
            await self.bus.session_cursors.flush()

    # --- sending ---

    async def _send(self, kind: str, task_id: Any, payload: dict[str, Any]) -> None:
        await self.send_json({"type": kind, "task_id": task_id, "payload": payload})

    async def _refuse(self, task_id: Any, code: str, message: str) -> None:
        await self._send("error", task_id, {"code": code, "message": message})
