"""WhiteNoise that does not push every request through a thread under ASGI; a body-size guard."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseMiddleware

from projects.api.errors import too_large_message


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, async-capable.

    WhiteNoise's middleware is sync-only. At the top of the chain that makes
    Django run every request — the status long-poll and the event streams
    too — through a worker thread and back, which costs the hot read paths
    most of what being async wins them (DESIGN.md). Finding a static file is
    a dict lookup, so the async path does it on the event loop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> Any:
        static_file = (
            self.find_file(request.path_info)
            if self.autorefresh
            else self.files.get(request.path_info)
        )
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)


class RequestBodyLimit:
    """An ASGI wrapper: an API request whose body passes DATA_UPLOAD_MAX_MEMORY_SIZE answers 413.

    Django checks the limit only when a view reads the body, against the
    Content-Length header alone, and its ASGI handler first copies the whole
    body to a temporary file. So a body sent chunked (no Content-Length) is
    never refused, and a declared 10 GB one lands on disk before its 413.
    Here the size is known before Django sees the request. The rest of an
    oversized body is read and dropped, so the client hears the 413 instead
    of a connection reset while it is still sending. A chunked body within
    the limit goes on with its Content-Length, which DRF needs to read it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None or not scope["path"].startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared <= limit:
            await self.app(scope, receive, send)
            return
        received: list[dict[str, Any]] = []
        size = 0
        while declared is None and size <= limit:
            message = await receive()
            received.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if size <= limit and declared is None:
            # Read whole, so its length is known: DRF reads no body without one.
            length = (b"content-length", b"%d" % size)
            scope = {**scope, "headers": [*scope.get("headers", []), length]}
            await self.app(scope, _replay(received, receive), send)
            return
        await _drain(received[-1] if received else None, receive)
        await _send_too_large(scope, send)


API_PREFIXES = ("/api/", "/v1/")


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(received: list[dict[str, Any]], receive: Any) -> Any:
    """`receive` that hands back what was already read, then goes on to the connection."""
    pending = list(received)

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _drain(last: dict[str, Any] | None, receive: Any) -> None:
    message = last
    while message is None or (message["type"] == "http.request" and message.get("more_body")):
        message = await receive()


async def _send_too_large(scope: dict[str, Any], send: Any) -> None:
    message = too_large_message()
    if scope["path"].startswith("/v1/"):
        error = {"message": message, "type": "invalid_request_error", "param": None}
        body = {"error": error | {"code": "too_large"}}
    else:
        body = {"detail": message, "code": "too_large"}
    content = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": content})
