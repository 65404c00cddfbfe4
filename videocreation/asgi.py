"""The ASGI application: Django for HTTP (SSE included), Channels for /ws/progress/.

SSE streams (`…/events`) go to Django's handler without a thread per request
(projects/streams.py, `threadless_event_streams`). The lifespan hook tunes the
garbage collector at startup and closes this process's event bus on shutdown,
which ends every SSE stream and WebSocket subscription so their clients reconnect.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videocreation.settings")

# Django must be set up before the consumers (and their models) are imported.
http_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from projects.bus import close_bus  # noqa: E402
from projects.consumers import (  # noqa: E402
    BrowserOriginValidator,
    ProgressConsumer,
    TokenHeaderAuthMiddleware,
)
from projects.streams import threadless_event_streams  # noqa: E402
from videocreation.middleware import RequestBodyLimit  # noqa: E402
from videocreation.server import Dispatcher  # noqa: E402
from videocreation.settings import require_production_secret  # noqa: E402

require_production_secret()


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # What is loaded by now (Django, the apps, the URLs) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks
            # ~300k objects, a ~0.2 s stall for every stream. And collect the young
            # generation less often: an event makes a few short-lived objects per
            # watcher, most of them gone by the next collection if it comes later
            # (a sixth of the CPU an event costs 1,000 watchers: bench/README.md, SSE).
            gc.freeze()
            gc.set_threshold(10_000, *gc.get_threshold()[1:])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_bus()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(
            Dispatcher(
                get_wsgi_application(),
                # Event streams without a thread each (projects/streams.py).
                threadless_event_streams(http_application),
                settings.WEB_THREADS,
            )
        ),
        "websocket": BrowserOriginValidator(
            AuthMiddlewareStack(
                TokenHeaderAuthMiddleware(
                    URLRouter([path("ws/progress/", ProgressConsumer.as_asgi())])
                )
            )
        ),
        "lifespan": lifespan,
    }
)
