"""One web process: request/response on a pool of threads, streams on the event loop.

Django's ASGI handler runs every request's sync parts (middleware, signals,
ORM) on a thread made for that request, hopping to it and back several times:
that, not the view, capped the status poll at ~200 requests/s (bench/README.md).
Requests that answer at once — the API, the page, the admin — go instead to
Django's WSGI handler on a fixed pool of threads (a2wsgi), where middleware
and ORM calls are plain function calls and database connections are kept.
Requests that wait — Server-Sent Events, the long-poll, the OpenAI endpoint,
downloads — stay on Django's ASGI handler, where a waiting client holds no
pool thread.
"""

from __future__ import annotations

import re
from typing import Any

from a2wsgi import WSGIMiddleware
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connections
from django.dispatch import receiver

# Requests that may take long: event streams, the OpenAI endpoint (it waits for
# the video), and downloads (a slow client would hold a pool thread for minutes).
STREAM_PATHS = re.compile(
    rb"^/api/video-creation/(?:projects/[^/]+/)?events/?$"
    rb"|^/api/video-creation/projects/[^/]+/(?:video|scenes/[^/]+/preview)/?$"
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
        self.pool = WSGIMiddleware(wsgi_application, workers=threads)
        self.asgi = asgi_application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if waits(scope):
            await self.asgi(scope, receive, send)
        else:
            await self.pool(scope, receive, send)


@receiver(request_finished)
def close_request_threads_connections(sender: Any, **kwargs: Any) -> None:
    """Close the connections of a request Django's ASGI handler served.

    That handler runs each request's sync parts on a thread made for the
    request, which ends with it: a connection kept there (CONN_MAX_AGE) would
    never be used again. Its response closes on that thread, so this runs there.
    """
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
