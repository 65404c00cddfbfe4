"""One web process: request/response on a pool of threads, streams on the event loop.

Django's ASGI handler runs every request's sync parts (middleware, signals,
ORM) on a thread made for that request, hopping to it and back several times:
that, not the view, capped the status poll at ~200 requests/s (bench/README.md).
Requests that answer at once — the API, the page, the admin — go instead to
Django's WSGI handler on a fixed pool of threads, where middleware and ORM
calls are plain function calls and database connections are kept.
Requests that wait — Server-Sent Events, the long-poll, the OpenAI endpoint,
downloads — stay on Django's ASGI handler, where a waiting client holds no
pool thread.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connections
from django.dispatch import receiver

# Requests that may take long: event streams, the OpenAI endpoint (it waits for
# the video), and downloads, the admin's too (a slow client would hold a pool
# thread for minutes).
STREAM_PATHS = re.compile(
    rb"^/api/video-creation/(?:projects/[^/]+/)?events/?$"
    rb"|^/api/video-creation/projects/[^/]+/(?:video|scenes/[^/]+/preview)/?$"
    rb"|^/admin/projects/videoproject/[^/]+/video/?$"
    rb"|^/v1/"
)
STATUS_PATH = re.compile(rb"^/api/video-creation/projects/[^/]+/status/?$")
WAIT = re.compile(rb"(?:^|&)wait=(?!0*(?:\.0*)?(?:&|$))")


def waits(scope: dict[str, Any]) -> bool:
    """Whether this HTTP request may wait for events rather than answer at once."""
    path = scope.get("raw_path") or scope["path"].encode()
    if STREAM_PATHS.match(path):
        return True
    return bool(STATUS_PATH.match(path) and WAIT.search(scope.get("query_string", b"")))


class Dispatcher:
    """Sends each HTTP request to the WSGI thread pool or to the ASGI handler (see above)."""

    def __init__(self, wsgi_application: Any, asgi_application: Any, threads: int) -> None:
        self.pool = ThreadPoolWSGI(wsgi_application, threads)
        self.asgi = asgi_application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if waits(scope):
            await self.asgi(scope, receive, send)
        else:
            await self.pool(scope, receive, send)


class ThreadPoolWSGI:
    """An ASGI app that runs a WSGI app on a pool of threads, one trip to a thread a request.

    a2wsgi does the same with a trip back to the event loop for each piece of
    the response, and measured ~0.5 ms of CPU a request for it against
    ~0.1 ms here (bench/README.md), more than the status poll's own work. The
    body is read on the event loop before the thread is taken (RequestBodyLimit,
    outside, bounds it); the answer comes back whole, except a streaming response,
    which the thread hands to the event loop a chunk at a time.
    """

    def __init__(self, application: Any, threads: int) -> None:
        self.application = application
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="web")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before it finished asking
        loop = asyncio.get_running_loop()
        environ = wsgi_environ(scope, body)
        answer = await loop.run_in_executor(self.executor, self._call, environ, loop, send)
        status, headers, content, rest = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if rest is None:
            await send({"type": "http.response.body", "body": content})
            return
        await send({"type": "http.response.body", "body": content, "more_body": True})
        await loop.run_in_executor(self.executor, rest)
        await send({"type": "http.response.body", "body": b""})

    def _call(
        self, environ: dict[str, Any], loop: asyncio.AbstractEventLoop, send: Any
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, Callable[[], None] | None]:
        """On a pool thread: the application's answer, whole or (streaming) begun."""
        started: list[Any] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started[:] = [
                int(status.split(" ", 1)[0]),
                [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in headers
                ],
            ]
            return written.append

        response = self.application(environ, start_response)
        if not getattr(response, "streaming", False):
            try:
                content = b"".join([*written, *response])
            finally:
                _close(response)
            return started[0], started[1], content, None

        def rest() -> None:
            try:
                for chunk in response:
                    if chunk:
                        message = {"type": "http.response.body", "body": chunk, "more_body": True}
                        asyncio.run_coroutine_threadsafe(send(message), loop).result()
            finally:
                _close(response)

        return started[0], started[1], b"".join(written), rest


def _close(response: Iterable[bytes]) -> None:
    # Django's response.close() sends request_finished: connections are tidied here.
    close = getattr(response, "close", None)
    if close is not None:
        close()


async def _read_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def wsgi_environ(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of an ASGI HTTP request whose body has been read."""
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    host, port = scope.get("server") or ("localhost", 80)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = host, str(port or 0)
    if client := scope.get("client"):
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            name = f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[name] = f"{environ[name]},{value}" if name in environ else value
    return environ


@receiver(request_finished)
def close_request_threads_connections(sender: Any, **kwargs: Any) -> None:
    """Close the connections of a request Django's ASGI handler served.

    That handler runs each request's sync parts on a thread made for the
    request, which ends with it: a connection kept there (CONN_MAX_AGE) would
    never be used again. Its response closes on that thread, so this runs there.
    """
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
