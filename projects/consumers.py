"""The WebSocket consumer at /ws/progress/ (Channels): the project's event log, live and resumable.

The protocol (messages are `{"type", "task_id", "payload"}`, `task_id` is a project id):

* on connect the server sends `connected` with `payload.client_id`; a client
  that connects with `?old_client_id=<id>` (of the same user) gets
  `reconnected` with `payload.subscribed` instead, then every event it missed;
* `{"action": "subscribe", "task_id", "since"?}` → `subscribed` with
  `payload.topics`, then every event after `since` (without it: the current
  status, or where this client's session left off), then live events;
  `{"action": "unsubscribe", "task_id"}` → `unsubscribed`;
* `{"type": "ping"}` → `pong` with `payload.timestamp`;
* events: `progress`, `status`, `log`, `error`, each payload with its `seq`.
  An `error` without `seq` answers a message the server could not act on.

Where each subscription stands (`last_seq`) lives in the `WebSocketSubscription`
table, written when the client leaves and every `WS_CURSOR_FLUSH_SECONDS` while
it stays (one UPDATE per subscription that moved, however many events it got).
A process that dies without a goodbye may therefore re-send the last second of
events to a client that resumes; a clean shutdown or disconnect re-sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed

from projects.api.auth import token_key, user_for_token
from projects.bus import BusClosed, Feed, get_bus
from projects.models import (
    EventKind,
    LiveClient,
    Transport,
    VideoProject,
    WebSocketSession,
    WebSocketSubscription,
)

# Close codes: 4401 = not signed in (after HTTP's 401); 1012 = service restart.
NOT_SIGNED_IN = 4401
SERVICE_RESTART = 1012
MAX_SUBSCRIPTIONS = 100


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


class BrowserOriginValidator(OriginValidator):
    """A browser's socket must come from one of our hosts; a program (no Origin) may connect.

    Browsers always send Origin, and a cross-site page could otherwise ride
    the person's session cookie. Programs send no Origin and sign in by token.
    """

    def __init__(self, application: Any) -> None:
        super().__init__(application, settings.ALLOWED_HOSTS)

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)


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
        body = {"line": payload.get("line", ""), "timestamp": event["createdAt"]}
    return {"type": kind, "task_id": project_id, "payload": {**body, "seq": seq}}


def status_message(project: VideoProject) -> dict[str, Any]:
    """The project's current state as one `status` message carrying its latest seq."""
    status = project.to_status_dict()
    event = {"kind": EventKind.STATUS, "seq": project.version, "payload": status}
    return event_message(str(project.pk), event | {"createdAt": status["updatedAt"]})


class ProgressConsumer(AsyncJsonWebsocketConsumer):
    """One socket: a session that outlives it, and one feed per followed project."""

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.feeds: dict[str, asyncio.Task[None]] = {}
        self.cursors: dict[str, int] = {}
        self.saved: dict[str, int] = {}
        self.client: LiveClient | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.closing = False
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        await self.accept()
        old_client_id = parse_qs(self.scope.get("query_string", b"").decode()).get(
            "old_client_id", [""]
        )[0]
        self.session = await WebSocketSession.objects.resume(self.user, old_client_id)
        self.client = LiveClient(
            transport=Transport.WEBSOCKET, user=self.user, session=self.session
        )
        await get_bus().client_opened(self.client)
        self.flusher = asyncio.create_task(self._flush_every_while())
        client_id = str(self.session.client_id)
        if self.session.resumed:
            subscriptions = [s async for s in self.session.subscriptions.all()]
            topics = [str(s.project_id) for s in subscriptions]
            await self._send("reconnected", None, {"client_id": client_id, "subscribed": topics})
            for subscription in subscriptions:
                self.saved[str(subscription.project_id)] = subscription.last_seq
                await self._follow(str(subscription.project_id), subscription.last_seq)
            return
        payload: dict[str, Any] = {"client_id": client_id}
        if old_client_id:
            payload["resumed"] = False  # an unknown, or someone else's, old client id
        await self._send("connected", None, payload)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
        if action not in ("subscribe", "unsubscribe"):
            await self._refuse(
                content.get("task_id"),
                "unknown_action",
                "Send an action (subscribe or unsubscribe) or a ping.",
            )
            return
        project = await self._owned_project(content.get("task_id"))
        if project is None:
            return
        if action == "subscribe":
            await self._subscribe(project, content.get("since"))
        else:
            await self._unsubscribe(str(project.pk))

    async def disconnect(self, code: int) -> None:
        for task in [*self.feeds.values(), *([self.flusher] if self.flusher else [])]:
            task.cancel()
        await asyncio.gather(*self.feeds.values(), return_exceptions=True)
        if self.client is not None:
            await self._flush()
            await get_bus().client_closed(self.client)

    # --- subscriptions ---

    async def _owned_project(self, task_id: Any) -> VideoProject | None:
        project = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            project_id = uuid.UUID(task_id)
            project = await VideoProject.objects.owned_by(self.user).filter(pk=project_id).afirst()
        if project is None:
            await self._refuse(task_id, "not_found", "No project with this id belongs to you.")
        return project

    async def _subscribe(self, project: VideoProject, since: Any) -> None:
        key = str(project.pk)
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or since < 0
        ):
            await self._refuse(key, "invalid", "`since` is a seq: a whole number, 0 or more.")
            return
        if key not in self.feeds and len(self.feeds) >= MAX_SUBSCRIPTIONS:
            await self._refuse(
                key, "too_many", f"A socket follows at most {MAX_SUBSCRIPTIONS} projects."
            )
            return
        self._stop_feed(key)
        subscription, created = await WebSocketSubscription.objects.aget_or_create(
            session=self.session, project=project
        )
        await self._send("subscribed", key, {"topics": [*self.feeds, key]})
        if since is None and not created:
            since = self.cursors.get(key, subscription.last_seq)
        if since is not None and since > project.version:
            since = None  # a seq this project never had: start from its current state
        self.saved[key] = subscription.last_seq
        await self._follow(key, since)

    async def _unsubscribe(self, key: str) -> None:
        self._stop_feed(key)
        self.cursors.pop(key, None)
        self.saved.pop(key, None)
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
        self.cursors[key] = feed.cursor
        self.feeds[key] = asyncio.create_task(self._pump(key, feed), name=f"ws-feed-{key}")

    async def _pump(self, key: str, feed: Feed) -> None:
        try:
            while True:
                for event in await feed.next(timeout=60):
                    await self.send_json(event_message(key, event))
                    self.cursors[key] = event["seq"]
        except BusClosed:
            # This web process is going away: the client reconnects to another.
            if not self.closing:
                self.closing = True
                await self.close(code=SERVICE_RESTART)
        finally:
            get_bus().unsubscribe(feed.subscription)

    # --- the session's cursors ---

    async def _flush_every_while(self) -> None:
        while True:
            await asyncio.sleep(settings.WS_CURSOR_FLUSH_SECONDS)
            await self._flush()

    async def _flush(self) -> None:
        moved = {key: seq for key, seq in self.cursors.items() if seq > self.saved.get(key, -1)}
        for key, seq in moved.items():
            await WebSocketSubscription.objects.advance(self.session, key, seq)
            self.saved[key] = seq

    # --- sending ---

    async def _send(self, kind: str, task_id: Any, payload: dict[str, Any]) -> None:
        await self.send_json({"type": kind, "task_id": task_id, "payload": payload})

    async def _refuse(self, task_id: Any, code: str, message: str) -> None:
        await self._send("error", task_id, {"code": code, "message": message})
