"""A stand-in for an OpenAI-style videos API, served over real HTTP on 127.0.0.1.

It speaks the wire format of OpenAI's `/v1/videos` (what the `openai` package
sends and parses): `POST /videos` takes multipart form fields `prompt`,
`model`, `seconds`, `size`; `GET /videos/{id}` answers a Video object and an
`openai-poll-after-ms` header; `GET /videos/{id}/content` streams a real MP4
of the size and length asked for. Errors use OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`.

A video is queued for `queue_seconds`, then renders for `render_seconds`,
its `progress` rising with time. Tests script the bad days with `fault`
(a status, a `Retry-After`, a slow answer on the Nth request of a route),
`fail_next_video` and `forget`, and read `requests` to see what was asked.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import imageio_ffmpeg

CREATE = "POST /videos"
RETRIEVE = "GET /videos/{id}"
CONTENT = "GET /videos/{id}/content"

API_KEY = "sk-test-videos"
CONTENT_CHUNK = 64 * 1024
FPS = 24


@dataclass(frozen=True)
class Request:
    """One request as the provider saw it (header names lower-cased)."""

    method: str
    path: str
    route: str
    video_id: str | None
    headers: dict[str, str]
    form: dict[str, str]
    at: float  # time.monotonic()


@dataclass
class Fault:
    """How to answer some requests of one route instead of the normal way."""

    route: str
    first: int  # the 1-based number of the route's first request it applies to
    times: int
    status: int | None = None  # answer this error; nothing is done
    retry_after: float | None = None
    delay: float = 0.0  # do the work, then hold the answer this long
    message: str = "The server had an error while processing your request."

    def applies_to(self, number: int) -> bool:
        return self.first <= number < self.first + self.times


@dataclass
class Video:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    started: float  # time.monotonic()
    created_at: int
    failure: dict[str, str] | None = None
    fail_at: int = 0

    def state(self, now: float, queue_seconds: float, render_seconds: float) -> tuple[str, int]:
        rendering = now - self.started - queue_seconds
        if rendering < 0:
            return "queued", 0
        done = rendering >= render_seconds
        progress = 100 if done else min(99, int(100 * rendering / render_seconds))
        if self.failure is not None and (done or progress >= self.fail_at):
            return "failed", self.fail_at
        return ("completed" if done else "in_progress"), progress


@dataclass
class FakeVideoProvider:
    api_key: str = API_KEY
    queue_seconds: float = 0.2
    render_seconds: float = 1.0
    poll_after_ms: int | None = 100  # None: no openai-poll-after-ms header
    # Like Sora, refuse other lengths or sizes when set (e.g. {"4", "8", "12"}).
    allowed_seconds: set[str] | None = None
    requests: list[Request] = field(default_factory=list)
    videos: dict[str, Video] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._counts: dict[str, int] = {}
        self._by_key: dict[str, str] = {}
        self._failures: list[tuple[dict[str, str], int]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what tests call --------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the provider first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeVideoProvider:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def fault(
        self,
        route: str,
        *,
        on: int | None = None,
        times: int = 1,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        message: str | None = None,
    ) -> None:
        """Answer the route's `on`-th request (default: its next one), `times` in a row, so."""
        with self._lock:
            first = on if on is not None else self._counts.get(route, 0) + 1
            fault = Fault(route, first, times, status, retry_after, delay)
            if message is not None:
                fault.message = message
            self._faults.append(fault)

    def fail_next_video(self, message: str, *, code: str = "internal_error", at: int = 30) -> None:
        """The next video created fails once its progress reaches `at`."""
        with self._lock:
            self._failures.append(({"code": code, "message": message}, at))

    def forget(self, video_id: str) -> None:
        """As if the provider had expired or deleted the video: 404 from now on."""
        with self._lock:
            self.videos.pop(video_id, None)

    def calls(self, route: str | None = None, video_id: str | None = None) -> list[Request]:
        with self._lock:
            return [
                request
                for request in self.requests
                if (route is None or request.route == route)
                and (video_id is None or request.video_id == video_id)
            ]

    # --- what the handler calls ---------------------------------------------------

    def record(self, request: Request) -> Fault | None:
        """Log the request and return the fault planned for it, if any."""
        with self._lock:
            self.requests.append(request)
            number = self._counts[request.route] = self._counts.get(request.route, 0) + 1
            return next(
                (f for f in self._faults if f.route == request.route and f.applies_to(number)),
                None,
            )

    def create(self, form: dict[str, str], idempotency_key: str | None) -> Video:
        with self._lock:
            if idempotency_key and idempotency_key in self._by_key:
                return self.videos[self._by_key[idempotency_key]]
            video = Video(
                id=f"video_{secrets.token_hex(16)}",
                model=form.get("model") or "sora-2",
                prompt=form["prompt"],
                seconds=form.get("seconds") or "4",
                size=form.get("size") or "720x1280",
                started=time.monotonic(),
                created_at=int(time.time()),
            )
            if self._failures:
                video.failure, video.fail_at = self._failures.pop(0)
            self.videos[video.id] = video
            if idempotency_key:
                self._by_key[idempotency_key] = video.id
            return video

    def to_json(self, video: Video) -> dict[str, Any]:
        status, progress = video.state(time.monotonic(), self.queue_seconds, self.render_seconds)
        finished = video.created_at + round(self.queue_seconds + self.render_seconds)
        return {
            "id": video.id,
            "object": "video",
            "model": video.model,
            "status": status,
            "progress": progress,
            "created_at": video.created_at,
            "completed_at": finished if status == "completed" else None,
            "expires_at": finished + 3600 if status == "completed" else None,
            "prompt": video.prompt,
            "seconds": video.seconds,
            "size": video.size,
            "remixed_from_video_id": None,
            "error": video.failure if status == "failed" else None,
        }

    def hold(self, seconds: float) -> None:
        # Returns early when the provider stops, so a "hanging" answer never outlives a test.
        self._stopping.wait(seconds)


def _handler_for(provider: FakeVideoProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(_VideosHandler):
        pass

    Handler.provider = provider
    return Handler


class _VideosHandler(BaseHTTPRequestHandler):
    provider: FakeVideoProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read `provider.requests`, not stderr

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        route, video_id = _route(method, self.path)
        body = self._read_body()
        form = _parse_form(self.headers.get("Content-Type", ""), body) if method == "POST" else {}
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(method, self.path, route, video_id, headers, form, time.monotonic())
        fault = self.provider.record(request)
        if route == "":
            return self._error(404, "invalid_request_error", f"Unknown path {self.path}.")
        if headers.get("authorization") != f"Bearer {self.provider.api_key}":
            return self._error(
                401, "invalid_request_error", "Incorrect API key provided.", "invalid_api_key"
            )
        if fault is not None and fault.status is not None:
            return self._fault(fault)
        delay = fault.delay if fault is not None else 0.0
        if route == CREATE:
            return self._create(form, headers.get("idempotency-key"), delay)
        video = self.provider.videos.get(video_id or "")
        if video is None:
            return self._error(404, "invalid_request_error", f"Video '{video_id}' not found.")
        if route == RETRIEVE:
            return self._retrieve(video, delay)
        return self._content(video, delay)

    # --- the three routes -------------------------------------------------------------

    def _create(self, form: dict[str, str], idempotency_key: str | None, delay: float) -> None:
        problem = _form_problem(form, self.provider.allowed_seconds)
        if problem is not None:
            param, message = problem
            return self._error(400, "invalid_request_error", message, "invalid_value", param)
        video = self.provider.create(form, idempotency_key)
        self.provider.hold(delay)
        self._json(200, self.provider.to_json(video))

    def _retrieve(self, video: Video, delay: float) -> None:
        self.provider.hold(delay)
        extra = {}
        if self.provider.poll_after_ms is not None:
            extra["openai-poll-after-ms"] = str(self.provider.poll_after_ms)
        self._json(200, self.provider.to_json(video), extra)

    def _content(self, video: Video, delay: float) -> None:
        status = self.provider.to_json(video)["status"]
        if status != "completed":
            message = f"Video '{video.id}' is not ready for download; its status is {status}."
            return self._error(400, "invalid_request_error", message, "video_not_ready")
        payload = mp4_for(video.size, video.seconds)
        self.provider.hold(delay)
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        for start in range(0, len(payload), CONTENT_CHUNK):
            self.wfile.write(payload[start : start + CONTENT_CHUNK])

    # --- answers ----------------------------------------------------------------------

    def _fault(self, fault: Fault) -> None:
        self.provider.hold(fault.delay)
        extra = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = f"{fault.retry_after:g}"
        kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
        assert fault.status is not None
        self._error(fault.status, kind, fault.message, kind, extra=extra)

    def _error(
        self,
        status: int,
        kind: str,
        message: str,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": kind, "param": param, "code": code}
        self._json(status, {"error": error}, extra)

    def _json(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", f"req_{secrets.token_hex(8)}")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


# --- parsing ------------------------------------------------------------------------------


def _route(method: str, path: str) -> tuple[str, str | None]:
    path = path.split("?", 1)[0]
    if method == "POST" and path == "/v1/videos":
        return CREATE, None
    match = re.fullmatch(r"/v1/videos/([^/]+)(/content)?", path)
    if method == "GET" and match:
        return (CONTENT if match.group(2) else RETRIEVE), match.group(1)
    return "", None


def _parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (what the openai client sends), or JSON."""
    if content_type.startswith("application/json"):
        return {key: str(value) for key, value in json.loads(body or b"{}").items()}
    if not content_type.startswith("multipart/form-data"):
        return {}
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    form = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            form[str(name)] = part.get_payload(decode=True).decode()
    return form


def _form_problem(form: dict[str, str], allowed_seconds: set[str] | None) -> tuple[str, str] | None:
    if not form.get("prompt", "").strip():
        return "prompt", "Missing required parameter: 'prompt'."
    seconds = form.get("seconds", "4")
    if not re.fullmatch(r"\d+(\.\d+)?", seconds) or float(seconds) <= 0:
        return "seconds", f"Invalid value for 'seconds': {seconds!r}."
    if allowed_seconds is not None and seconds not in allowed_seconds:
        supported = ", ".join(f"'{value}'" for value in sorted(allowed_seconds, key=float))
        return "seconds", f"Invalid value: '{seconds}'. Supported values are: {supported}."
    size = form.get("size", "720x1280")
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not match or int(match.group(1)) % 2 or int(match.group(2)) % 2:
        return "size", f"Invalid value for 'size': {size!r}."
    return None


# --- the videos it serves ------------------------------------------------------------------

_clips: dict[tuple[str, str], bytes] = {}
_clips_lock = threading.Lock()


def mp4_for(size: str, seconds: str) -> bytes:
    """A real H.264 MP4 of that size and length, made once per process."""
    with _clips_lock:
        if (size, seconds) not in _clips:
            _clips[(size, seconds)] = _encode(size, float(seconds))
        return _clips[(size, seconds)]


def _encode(size: str, seconds: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fake-videos-") as workdir:
        target = Path(workdir) / "clip.mp4"
        subprocess.run(
            [
                *(imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error"),
                *("-f", "lavfi", "-i", f"testsrc=size={size}:rate={FPS}:duration={seconds:g}"),
                *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-movflags", "+faststart", "-y", str(target)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return target.read_bytes()
