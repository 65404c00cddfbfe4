"""Serving a file with HTTP Range support, so a <video> element can seek.

A result kept on this machine's disk (the default media storage) is served
here. One kept elsewhere (`MEDIA_STORAGE=s3`) is answered with a 302 to a
short-lived signed address at the storage, which serves Range requests
itself: the bytes never pass through a web process (projects/storage.py).

Under ASGI the file is read by an async iterator, a chunk at a time on a
thread: Django consumes a *sync* iterator there by reading all of it into a
list first (a 1 GiB video cost 1 GiB of the web process's memory before its
first byte left). Under WSGI (and the test client) a plain iterator streams.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from django.core.handlers.asgi import ASGIRequest
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)

from projects import storage

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024
# Each async chunk is a hop to a thread and back: bigger chunks, fewer hops.
ASYNC_CHUNK = 1024 * 1024


def stored_file_response(
    request: HttpRequest, name: str, content_type: str, filename: str
) -> HttpResponseBase:
    """The stored result `name`, wherever it is kept; FileNotFoundError if it is not there."""
    path = storage.local_path(name)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(name)
        return ranged_file_response(request, path, content_type, filename)
    if not storage.media().exists(name):
        raise FileNotFoundError(name)
    response = HttpResponseRedirect(storage.signed_url(name, content_type, filename))
    # The signed address expires: no cache may keep the redirect past this answer.
    response["Cache-Control"] = "private, no-store"
    return response


def ranged_file_response(
    request: HttpRequest, path: Path, content_type: str, filename: str
) -> HttpResponse | FileResponse | StreamingHttpResponse:
    size = path.stat().st_size
    header = request.headers.get("Range", "").strip()
    span = _parse(header, size) if header else None
    if header and span is None:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    if span is None and not _served_async(request):
        response = FileResponse(path.open("rb"), content_type=content_type, filename=filename)
    elif span is None:
        response = StreamingHttpResponse(_aread(path, 0, size), content_type=content_type)
        response["Content-Length"] = str(size)
        response["Content-Disposition"] = f'inline; filename="{filename}"'
    else:
        start, end = span
        read = _aread if _served_async(request) else _read
        response = StreamingHttpResponse(
            read(path, start, end - start + 1), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
        response["Content-Disposition"] = f'inline; filename="{filename}"'
    response["Accept-Ranges"] = "bytes"
    return response


def _parse(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=a-b` range as inclusive offsets; None when it cannot be satisfied."""
    match = RANGE.match(header)
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = _offset(last)
        return (max(size - length, 0), size - 1) if length > 0 else None
    start = _offset(first)
    end = min(_offset(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _offset(digits: str) -> int:
    # Any offset past 10**18 bytes means the same as 10**18 for our files; and
    # int() refuses 4,300 digits or more with a ValueError, which would be a 500.
    return int(digits) if len(digits) <= 18 else 10**18


def _served_async(request: HttpRequest) -> bool:
    # A DRF Request wraps Django's own.
    return isinstance(getattr(request, "_request", request), ASGIRequest)


async def _aread(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        file.seek(start)
        while length > 0:
            chunk = await asyncio.to_thread(file.read, min(ASYNC_CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as file:
        file.seek(start)
        while length > 0:
            chunk = file.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
