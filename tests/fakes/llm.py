"""A server speaking OpenAI's chat completions API, as a hosted or local LLM does.

`POST /v1/chat/completions` answers streamed (`data: {chat.completion.chunk}`
events, then `data: [DONE]`) or whole (one `chat.completion`); `GET /v1/models`
lists its one model. Errors come in OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`), a wrong Bearer key gets 401.

By default it answers a valid script (`script_for`) for the scene count the
request asks for. A test plans other answers or faults, taken one per
completion request in order: `Answer` (any text, a wrong scene count, a
refusal, slow chunks), `Failure` (an HTTP error), `Hang` (no answer at all
until the fake stops). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "fake-script-model"
DEFAULT_API_KEY = "sk-fake-llm-key"
# Without a count in the request's schema or prompt (a client asking for free text).
FALLBACK_SCENE_COUNT = 3


@dataclass(frozen=True)
class Answer:
    """A completion: a valid script unless `content` says otherwise."""

    content: str | None = None  # None: the script for the scenes asked for
    scenes: int | None = None  # a valid script, but with this many scenes
    refusal: str | None = None  # the model declines; no content at all
    chunk_size: int = 16  # characters per streamed chunk
    delay: float = 0.0  # seconds between streamed chunks
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Failure:
    """An HTTP error in OpenAI's error shape."""

    status: int
    message: str
    type: str
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing until the fake stops."""


Step = Answer | Failure | Hang


def malformed() -> Answer:
    """An answer cut off half way: not JSON."""
    return Answer(content='{"scenes": [{"narration": "The night train leaves Vienna')


def server_error() -> Failure:
    return Failure(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
    )


def rate_limited(retry_after: str = "1") -> Failure:
    return Failure(
        429,
        "Rate limit reached for requests. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
        headers={"Retry-After": retry_after},
    )


def slow(delay: float = 0.05, chunk_size: int = 6) -> Answer:
    return Answer(delay=delay, chunk_size=chunk_size)


def script_for(brief: str, count: int) -> dict[str, Any]:
    """The fake model's script: the brief's words spread over the scenes, as written.

    Narrations open in lower case and end without a full stop, so a test can
    tell whether anything tidied them on the way.
    """
    words = brief.split() or ["nothing"]
    per_scene = -(-len(words) // count)
    scenes = []
    for index in range(count):
        group = words[index * per_scene : (index + 1) * per_scene] or words[-per_scene:]
        text = " ".join(group).rstrip(".!?")
        scenes.append(
            {
                "narration": f"part {index + 1} of {count} — {text}",
                "visual": (
                    f"Slow  pan over {group[0].strip('.,')} in scene {index + 1}: soft light, "
                    "the camera drifting forward while the words fade in line by line"
                ),
            }
        )
    return {"scenes": scenes}


@dataclass
class Request:
    """One request as the fake saw it, and how far its answer got."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any
    chunks_planned: int = 0
    chunks_sent: int = 0
    client_left: bool = False  # the client closed the connection mid-stream
    finished: bool = False


class FakeLlm:
    def __init__(self, api_key: str | None = DEFAULT_API_KEY, model: str = DEFAULT_MODEL) -> None:
        self.api_key = api_key
        self.model = model
        self.stopping = threading.Event()
        self._plans: deque[Step] = deque()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # A short poll keeps `stop` quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def plan(self, *steps: Step) -> None:
        with self._lock:
            self._plans.extend(steps)

    def next_step(self) -> Step:
        with self._lock:
            return self._plans.popleft() if self._plans else Answer()

    def record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def completions(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # lets hanging and slow answers end
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def running_fake(api_key: str | None = DEFAULT_API_KEY) -> Iterator[FakeLlm]:
    fake = FakeLlm(api_key=api_key).start()
    try:
        yield fake
    finally:
        fake.stop()


# --- the wire -------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLlm

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (a cancelled job) is part of the script, not a fault.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams and keep-alive, as the real API

    @property
    def fake(self) -> FakeLlm:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read `fake.requests`, not a log

    def do_GET(self) -> None:
        request = self._record(body=None)
        if not self._authorized():
            return
        if request.path != "/v1/models":
            self._error(404, f"Invalid URL (GET {request.path})", "invalid_request_error")
            return
        model = {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "fake"}
        self._json(200, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        request = self._record(body)
        if not self._authorized():
            return
        if request.path != "/v1/chat/completions":
            self._error(404, f"Invalid URL (POST {request.path})", "invalid_request_error")
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
            return
        if body.get("model") != self.fake.model:
            message = (
                f"The model `{body.get('model')}` does not exist or you do not have access to it."
            )
            self._error(404, message, "invalid_request_error", "model_not_found")
            return
        self._answer(request, body, self.fake.next_step())

    # --- answers ----------------------------------------------------------------

    def _answer(self, request: Request, body: dict[str, Any], step: Step) -> None:
        if isinstance(step, Failure):
            self._error(step.status, step.message, step.type, step.code, step.headers)
        elif isinstance(step, Hang):
            self.fake.stopping.wait()
            self.close_connection = True
        elif body.get("stream"):
            self._stream(request, body, step)
        else:
            self._whole(request, body, step)
        request.finished = True

    def _whole(self, request: Request, body: dict[str, Any], answer: Answer) -> None:
        content = _content(body, answer)
        message = {"role": "assistant", "content": content, "refusal": answer.refusal}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": answer.finish_reason,
        }
        self._json(
            200, _completion(body, "chat.completion", [choice]) | {"usage": _usage(body, content)}
        )

    def _stream(self, request: Request, body: dict[str, Any], answer: Answer) -> None:
        content = _content(body, answer)
        pieces = _pieces(answer.refusal or content or "", answer.chunk_size)
        key = "refusal" if answer.refusal else "content"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [_chunk(body, {"role": "assistant", "content": "", "refusal": None}, None)]
        events += [_chunk(body, {key: piece}, None) for piece in pieces]
        events.append(_chunk(body, {}, answer.finish_reason))
        if include_usage:
            events.append(
                _completion(body, "chat.completion.chunk", []) | {"usage": _usage(body, content)}
            )
        request.chunks_planned = len(events)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for index, event in enumerate(events):
            if index and answer.delay and not self._pause(request, answer.delay):
                return
            if not self._send_event(request, f"data: {json.dumps(event, ensure_ascii=False)}\n\n"):
                return
            request.chunks_sent += 1
        if self._send_event(request, "data: [DONE]\n\n"):
            self._write(b"0\r\n\r\n")

    def _pause(self, request: Request, seconds: float) -> bool:
        """Wait between chunks as a model thinks; False if the client hung up or the fake stops.

        A client sends nothing while it reads a stream, so a readable socket
        means it hung up, as a server notices while it generates.
        """
        resume_at = time.monotonic() + seconds
        while (left := resume_at - time.monotonic()) > 0:
            if self.fake.stopping.is_set():
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
            if readable and not self._peek():
                request.client_left = True
                self.close_connection = True
                return False
        return True

    def _peek(self) -> bytes:
        try:
            return self.connection.recv(1, socket.MSG_PEEK)
        except ConnectionError:
            return b""

    def _send_event(self, request: Request, event: str) -> bool:
        data = event.encode()
        if self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n"):
            return True
        request.client_left = True
        self.close_connection = True
        return False

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    # --- plumbing ---------------------------------------------------------------

    def _record(self, body: Any) -> Request:
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, self.path, headers, body)
        self.fake.record(request)
        return request

    def _authorized(self) -> bool:
        if self.fake.api_key is None:
            return True
        given = self.headers.get("Authorization", "")
        if given == f"Bearer {self.fake.api_key}":
            return True
        key = given.removeprefix("Bearer ")
        shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else key
        self._error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
        return False

    def _error(
        self,
        status: int,
        message: str,
        kind: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": kind, "param": None, "code": code}
        self._json(status, {"error": error}, headers)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._write(data)


def _content(body: dict[str, Any], answer: Answer) -> str | None:
    if answer.refusal:
        return None
    if answer.content is not None:
        return answer.content
    count = answer.scenes if answer.scenes is not None else scene_count_asked(body)
    return json.dumps(script_for(brief_asked(body), count), ensure_ascii=False)


def scene_count_asked(body: dict[str, Any]) -> int:
    """The count in the request's JSON schema, else the one its prompt names."""
    format_ = body.get("response_format") or {}
    schema = (format_.get("json_schema") or {}).get("schema") or {}
    scenes = (schema.get("properties") or {}).get("scenes") or {}
    if isinstance(scenes.get("maxItems"), int):
        return scenes["maxItems"]
    match = re.search(r"exactly (\d+) scenes", _user_messages(body))
    return int(match.group(1)) if match else FALLBACK_SCENE_COUNT


def brief_asked(body: dict[str, Any]) -> str:
    """The brief: what follows "Brief:" in the first user message, or all of it."""
    users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    prompt = str(users[0].get("content") or "") if users else ""
    return prompt.split("Brief:", 1)[-1].strip()


def _user_messages(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    return "\n".join(str(m.get("content") or "") for m in users)


def _pieces(text: str, size: int) -> list[str]:
    size = max(size, 1)
    return [text[start : start + size] for start in range(0, len(text), size)]


def _completion(body: dict[str, Any], kind: str, choices: list[Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
        "choices": choices,
    }


def _chunk(
    body: dict[str, Any], delta: dict[str, Any], finish_reason: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    chunk = _completion(body, "chat.completion.chunk", [choice])
    if (body.get("stream_options") or {}).get("include_usage"):
        chunk["usage"] = None  # as OpenAI does: only the last chunk carries usage
    return chunk


def _usage(body: dict[str, Any], content: str | None) -> dict[str, int]:
    # About four characters a token, as OpenAI's rule of thumb has it.
    prompt = sum(len(str(m.get("content") or "")) for m in body["messages"] if isinstance(m, dict))
    completion = len(content or "")
    prompt_tokens, completion_tokens = max(1, prompt // 4), max(1, completion // 4)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
