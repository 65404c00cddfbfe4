"""Where a status poll's CPU goes, inside one web process: the floor under the view.

    .venv/bin/python bench/request_floor.py

Calls Django's WSGI handler in this process, as a thread of the web pool does
(videocreation/server.py), with one kept SQLite connection, and prints the
CPU time per request of:

- an empty view (`HttpResponse(b"")`) with no middleware: Django's handler alone;
- the same view behind the project's whole middleware stack (sessions, CSRF,
  auth, messages, security headers, WhiteNoise, django-axes, health);
- the status poll answered 304 (`If-None-Match`), and answered 200.

The server around it (uvicorn, the pool's trip to a thread) adds ~0.1 ms a
request on this machine (a WSGI "hello" through the same pool); together they
bound what any change to the poll's own code could win.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

urlpatterns: list = []  # this module is the URLconf of the empty view


def main() -> None:
    from harness import throwaway_env

    os.environ.update(throwaway_env("bench-floor-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videocreation.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.http import HttpResponse
    from django.test.utils import override_settings
    from django.urls import path
    from rest_framework.authtoken.models import Token

    from projects import lifecycle

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench-floor")
    key = Token.objects.create(user=user).key
    project = lifecycle.create_project(user, {"title": "Bench", "brief": "A brief."})
    urlpatterns.append(path("empty", lambda request: HttpResponse(b"")))

    def environ(url: str, **headers: str) -> dict:
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": url,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "HTTP_HOST": "127.0.0.1",
            **headers,
        }

    status_url = f"/api/video-creation/projects/{project.pk}/status"
    token = {"HTTP_AUTHORIZATION": f"Token {key}"}
    etag = {"HTTP_IF_NONE_MATCH": f'"{project.pk}-{project.version}"'}
    cases = [
        ("empty view, no middleware", __name__, [], "/empty", {}),
        ("empty view, the whole middleware stack", __name__, None, "/empty", {}),
        ("status poll, 304", settings.ROOT_URLCONF, None, status_url, token | etag),
        ("status poll, 200", settings.ROOT_URLCONF, None, status_url, token),
    ]
    rounds = 3000
    print(f"{rounds} requests each, CPU time per request (median of 5 batches)")
    print("| request | CPU per request | requests/s one core could answer |")
    print("|---|---:|---:|")
    for name, urlconf, middleware, url, headers in cases:
        overrides = {"ROOT_URLCONF": urlconf}
        if middleware is not None:
            overrides["MIDDLEWARE"] = middleware
        with override_settings(**overrides):
            handler = WSGIHandler()
            answered: list[str] = []

            def start_response(status: str, headers: list, answered: list = answered) -> None:
                answered.append(status)

            for _ in range(200):
                b"".join(handler(environ(url, **headers), start_response))
            assert answered[-1].split()[0] in ("200", "304"), (name, answered[-1])
            batches = []
            for _ in range(5):
                began = time.process_time()
                for _ in range(rounds // 5):
                    b"".join(handler(environ(url, **headers), start_response))
                batches.append((time.process_time() - began) / (rounds // 5))
            cpu = statistics.median(batches)
            print(f"| {name} | {cpu * 1e6:.0f} µs | {1 / cpu:,.0f} |")


if __name__ == "__main__":
    main()
