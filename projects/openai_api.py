"""The OpenAI-compatible face: `GET /v1/models` and `POST /v1/chat/completions`.

Tools that speak OpenAI's chat completions API ask for a video as they ask
for text: `model` names one of our video models (one per aspect ratio) and
the last user message is the brief. The request makes an ordinary project,
set to render as soon as its script is written, so it shows on the creator
page and every other transport follows it too.

With `stream: true` every rise of the project's progress is one
`chat.completion.chunk` whose `delta.reasoning_content` reads
`**Video Generation Progress**: 45% (rendering)` and whose `delta.progress`
holds the same number from 0 to 1; then the video's URL as a markdown link,
a chunk with `finish_reason: "stop"`, and `data: [DONE]`. The stream reads
the project's event log through this process's bus, as SSE does, so it
sends each change as it is written, not every few seconds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed

from credits import ledger
from projects import estimates, lifecycle
from projects.api.auth import token_user
from projects.api.errors import too_large_message
from projects.api.serializers import BriefSerializer
from projects.api.throttles import start_wait
from projects.bus import BusClosed, get_bus
from projects.models import AspectRatio, LiveClient, Status, Transport, VideoProject
from projects.streams import LiveStreamResponse, open_stream, too_many_streams_message

logger = logging.getLogger(__name__)

MODELS = {
    "videocreation-16x9": AspectRatio.WIDE,
    "videocreation-9x16": AspectRatio.TALL,
    "videocreation-1x1": AspectRatio.SQUARE,
}
MODELS_CREATED = 1_767_225_600  # 2026-01-01, when these models were first offered
# Parameters OpenAI's API takes that mean nothing for a video: accepted, ignored.
IGNORED_PARAMETERS = frozenset(
    {
        "audio", "frequency_penalty", "logit_bias", "logprobs", "max_completion_tokens",
        "max_tokens", "metadata", "modalities", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip
# Our own, sent by OpenAI clients as `extra_body`; named as in the projects API.
BRIEF_PARAMETERS = {
    "title": "title",
    "scene_count": "sceneCount",
    "seconds_per_scene": "secondsPerScene",
    "style": "style",
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.retry_after = retry_after

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body, status=self.status)
        if self.retry_after is not None:
            # Nothing was started: a client that waits this long and asks again is right.
            response["retry-after"] = str(self.retry_after)
            response["x-should-retry"] = "true"
        else:
            # OpenAI's clients retry 409s and 5xx by default; asking again would start
            # another video.
            response["x-should-retry"] = "false"
        return response


def _errors_answered(view: Any) -> Any:
    async def answered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as error:
            return error.response()

    answered.__doc__ = view.__doc__
    return csrf_exempt(answered)  # a token, never a cookie, authenticates these


def _only(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise OpenAIError(405, f"Use {method} on {request.path}.", code="method_not_allowed")


@sync_to_async
def _caller(request: HttpRequest) -> Any:
    try:
        user = token_user(request)
    except AuthenticationFailed as refused:
        raise OpenAIError(401, str(refused.detail), code="invalid_api_key") from None
    if user is not None:
        return user
    raise OpenAIError(
        401,
        "You didn't provide an API key. Send your API token as 'Authorization: Bearer <token>'.",
    )


# --- models ------------------------------------------------------------------


def _model(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": MODELS_CREATED,
        "owned_by": "videocreation",
    }


@_errors_answered
async def models(request: HttpRequest) -> HttpResponse:
    """The video models on offer, one per aspect ratio."""
    _only(request, "GET")
    await _caller(request)
    return JsonResponse({"object": "list", "data": [_model(model_id) for model_id in MODELS]})


@_errors_answered
async def model(request: HttpRequest, model_id: str) -> HttpResponse:
    _only(request, "GET")
    await _caller(request)
    if model_id not in MODELS:
        raise _unknown_model(model_id)
    return JsonResponse(_model(model_id))


def _unknown_model(model_id: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{model_id}' does not exist. Models: {', '.join(MODELS)}.",
        code="model_not_found",
        param="model",
    )


# --- chat completions ----------------------------------------------------------


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(
        choices=["system", "developer", "user", "assistant", "tool", "function"]
    )
    content = serializers.JSONField(required=False, allow_null=True)


class ChatCompletionSerializer(serializers.Serializer):
    model = serializers.CharField()
    messages = ChatMessageSerializer(many=True, allow_empty=False)
    stream = serializers.BooleanField(default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    n = serializers.IntegerField(min_value=1, max_value=1, required=False, allow_null=True)
    title = serializers.CharField(required=False)
    scene_count = serializers.IntegerField(required=False)
    seconds_per_scene = serializers.IntegerField(required=False)
    style = serializers.CharField(required=False, allow_blank=True)


@dataclass(frozen=True)
class Order:
    """What a chat completion request asks for, checked."""

    model: str
    brief_fields: dict[str, Any]
    stream: bool
    include_usage: bool


def read_order(body: Any) -> Order:
    """The request's body as an order, or the 400 OpenAI would answer; nothing is written."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "The request body must be a JSON object.")
    unknown = sorted(set(body) - IGNORED_PARAMETERS - set(ChatCompletionSerializer().fields))
    if unknown:
        raise OpenAIError(
            400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    request = ChatCompletionSerializer(data=body)
    if not request.is_valid():
        raise _invalid(request.errors)
    checked = request.validated_data
    if checked["model"] not in MODELS:
        raise _unknown_model(checked["model"])
    brief = _brief_of(checked["messages"])
    fields = {
        "title": _title_of(brief),
        "brief": brief,
        "aspectRatio": MODELS[checked["model"]],
        **{ours: checked[name] for name, ours in BRIEF_PARAMETERS.items() if name in checked},
    }
    brief_check = BriefSerializer(data=fields)
    if not brief_check.is_valid():
        theirs = {ours: name for name, ours in BRIEF_PARAMETERS.items()} | {"brief": "messages"}
        raise _invalid(
            {theirs.get(name, name): errors for name, errors in brief_check.errors.items()}
        )
    options = checked.get("stream_options") or {}
    return Order(
        model=checked["model"],
        brief_fields=brief_check.validated_data,
        stream=checked["stream"],
        include_usage=bool(options.get("include_usage")),
    )


def _invalid(errors: dict[str, Any]) -> OpenAIError:
    param, detail = next(iter(errors.items()))
    while isinstance(detail, dict | list) and detail:
        detail = next(iter(detail.values())) if isinstance(detail, dict) else detail[0]
    return OpenAIError(400, f"{param}: {detail}", param=param)


def _brief_of(messages: list[dict[str, Any]]) -> str:
    said = [message for message in messages if message["role"] == "user"]
    if not said:
        raise OpenAIError(400, "Write the brief as a user message.", param="messages")
    content = said[-1].get("content")
    if isinstance(content, list):
        if any(not isinstance(part, dict) or part.get("type") != "text" for part in content):
            raise OpenAIError(
                400,
                "The brief must be text; image and audio parts are not taken.",
                param="messages",
            )
        content = "\n".join(str(part.get("text", "")) for part in content)
    if not isinstance(content, str) or not content.strip():
        raise OpenAIError(
            400, "The last user message must hold the brief as text.", param="messages"
        )
    return content.strip()


def _title_of(brief: str, limit: int = 80) -> str:
    """The brief's first sentence, cut at a word if it is long."""
    first = brief.splitlines()[0].split(". ")[0].strip().rstrip(".") or brief
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _json_body(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise OpenAIError(413, too_large_message(), code="too_large") from None
    try:
        return json.loads(raw or b"null")
    except (ValueError, RecursionError):
        # RecursionError: arrays nested a million deep are not JSON we can read either.
        raise OpenAIError(400, "The request body is not valid JSON.") from None


def _idempotency_key(request: HttpRequest) -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 200:
        raise OpenAIError(400, "Use an Idempotency-Key of at most 200 characters.")
    return key or None


@sync_to_async
def _start(user: Any, order: Order, key: str | None) -> VideoProject:
    try:
        return lifecycle.start_video(user, order.brief_fields, key)
    except lifecycle.IdempotencyKeyReused as reused:
        raise OpenAIError(422, str(reused), code="idempotency_key_reused") from None
    except ledger.InsufficientCredits as refused:
        raise insufficient_quota(
            f"You exceeded your current quota: the video costs {refused.price} credits and "
            f"your balance is {refused.balance}."
        ) from None


def insufficient_quota(message: str) -> OpenAIError:
    """OpenAI's answer when the account cannot pay: 429 `insufficient_quota`."""
    return OpenAIError(429, message, type="insufficient_quota", code="insufficient_quota")


@_errors_answered
async def chat_completions(request: HttpRequest) -> HttpResponse:
    """Make a video from the brief in the last user message; stream its progress if asked."""
    _only(request, "POST")
    user = await _caller(request)
    await _throttle_start(user)
    body = _json_body(request)
    order = read_order(body)
    key = _idempotency_key(request)
    if not order.stream:
        project = await _start(user, order, key)
        return await Reply(order, project, _site(request)).whole()
    # The stream's place is taken before the video starts: past the cap, nothing starts.
    client = await open_stream(LiveClient(transport=Transport.OPENAI, user=user))
    if client is None:
        raise OpenAIError(429, too_many_streams_message(), type="requests", code="too_many_streams")
    try:
        project = await _start(user, order, key)
        client.project = project
        await LiveClient.objects.filter(pk=client.pk).aupdate(project=project)
    except BaseException:
        await get_bus().client_closed(client)
        raise
    return LiveStreamResponse(Reply(order, project, _site(request)).chunks(client), client)


def _site(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


async def _throttle_start(user: Any) -> None:
    """The projects API's `start` rate, answered as OpenAI answers a rate limit."""
    wait = await sync_to_async(start_wait)(user)
    if wait is None:
        return
    seconds = max(1, math.ceil(wait))
    raise OpenAIError(
        429,
        f"Rate limit reached for starting videos ({settings.THROTTLE_START_RATE}). "
        f"Please try again in {seconds}s.",
        type="requests",
        code="rate_limit_exceeded",
        retry_after=seconds,
    )


# --- following the project -------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How the watched project ended: its video's URL, or the error to answer with."""

    video_url: str | None = None
    error: OpenAIError | None = None


class Reply:
    """One request's answer: the project's progress as chunks, then its video."""

    def __init__(self, order: Order, project: VideoProject, site: str) -> None:
        self.order = order
        self.project = project
        self.site = site
        self.id = f"chatcmpl-{project.pk.hex}"
        self.created = int(time.time())
        self.fraction = -1.0
        self.share = estimates.DEFAULT_SCRIPT_SHARE
        self.outcome = Outcome()

    async def whole(self) -> HttpResponse:
        async for _ in self._progress():
            pass
        outcome = self.outcome
        if outcome.error is not None:
            raise outcome.error
        assert outcome.video_url is not None
        message = {"role": "assistant", "content": self._link(outcome.video_url), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return JsonResponse(self._envelope("chat.completion", choice) | {"usage": _NO_TOKENS})

    async def chunks(self, client: LiveClient) -> AsyncIterator[str]:
        """The stream of a client registered by `open_stream`, which this forgets at its end."""
        bus = get_bus()
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            async for fraction, stage in self._progress():
                if fraction is None:
                    yield ": keep-alive\n\n"
                    continue
                percent = math.floor(fraction * 100)
                line = f"**Video Generation Progress**: {percent}% ({stage})\n"
                yield self._chunk({"reasoning_content": line, "progress": fraction})
            outcome = self.outcome
            if outcome.error is not None:
                yield _data(outcome.error.body)
                return
            assert outcome.video_url is not None
            yield self._chunk({"content": self._link(outcome.video_url)})
            yield self._chunk({}, finish_reason="stop")
            if self.order.include_usage:
                yield _data(self._envelope("chat.completion.chunk", None) | {"usage": _NO_TOKENS})
            yield "data: [DONE]\n\n"
        finally:
            await bus.client_closed(client)

    async def _progress(self) -> AsyncIterator[tuple[float | None, str]]:
        """Each rise of the overall progress with its stage; (None, "") while nothing happens."""
        project = self.project
        state = project.to_status_dict()
        bus = get_bus()
        feed = None
        try:
            # The script's share of the one bar, by how long both jobs take here.
            self.share = await sync_to_async(estimates.script_share)(project)
            feed = await bus.feed(project.pk, project.version, in_request=True)
            while True:
                if (rise := self._rise(state)) is not None:
                    yield rise
                ended = await self._ended(state)
                if ended is not None:
                    self.outcome = ended
                    return
                batch = await feed.next(settings.SSE_HEARTBEAT_SECONDS)
                if not batch:
                    yield None, ""
                for event in batch:
                    if event["kind"] in ("status", "progress"):
                        state = state | event["payload"]
                        if (rise := self._rise(state)) is not None:
                            yield rise
        except BusClosed:
            self.outcome = Outcome(
                error=OpenAIError(
                    503,
                    "The server is restarting. The video goes on: follow project "
                    f"{project.pk} in the API.",
                    type="server_error",
                    code="server_restarting",
                )
            )
        except Exception:
            # A database or bus failure: end with an error the client sees, not a cut stream.
            logger.exception("Following project %s for an OpenAI client failed", project.pk)
            self.outcome = Outcome(
                error=OpenAIError(
                    503,
                    "Following the video's progress failed on our side. The video goes on: "
                    f"follow project {project.pk} in the API.",
                    type="server_error",
                    code="unavailable",
                )
            )
        finally:
            if feed is not None:
                bus.unsubscribe(feed.subscription)

    def _rise(self, state: dict[str, Any]) -> tuple[float, str] | None:
        fraction, stage = overall_progress(state, self.share)
        if fraction is None or fraction <= self.fraction:
            return None
        self.fraction = fraction
        return fraction, stage

    async def _ended(self, state: dict[str, Any]) -> Outcome | None:
        status = state["status"]
        if status == Status.COMPLETED:
            # The COMPLETED status event carries the video's URL.
            return Outcome(video_url=state["videoUrl"])
        if status == Status.FAILED:
            error = state.get("error") or {}
            code = error.get("code") or "job_failed"
            return Outcome(
                error=OpenAIError(
                    400 if code == "invalid_input" else 500,
                    f"The video could not be made: {error.get('message') or 'the job failed'}",
                    type="invalid_request_error" if code == "invalid_input" else "server_error",
                    code=code,
                )
            )
        if status == Status.DRAFT:
            # The render is queued in the commit that saves the script; a draft that
            # stays a draft was cancelled by a person.
            project = await VideoProject.objects.aget(pk=self.project.pk)
            if project.status == Status.DRAFT and project.error_code == "insufficient_credits":
                return Outcome(error=insufficient_quota(project.error_message))
            if project.status == Status.DRAFT:
                return Outcome(
                    error=OpenAIError(
                        409,
                        "The job was cancelled before the video was ready.",
                        code="cancelled",
                    )
                )
        return None

    def _link(self, video_url: str) -> str:
        # The title cannot change while a job runs (edit_brief needs DRAFT or FAILED).
        return f"[{self.project.title}]({self.site}{video_url})"

    def _envelope(self, kind: str, choice: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.order.model,
            "system_fingerprint": None,
            "choices": [] if choice is None else [choice],
            "project_id": str(self.project.pk),
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _data(self._envelope("chat.completion.chunk", choice))


_NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _data(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def overall_progress(
    state: dict[str, Any], script_share: float = estimates.DEFAULT_SCRIPT_SHARE
) -> tuple[float | None, str]:
    """One bar across both jobs, 0 to 1: the script's share, then the render's.

    Every change of the job's own percent moves it, so each one is a chunk.
    """
    status, percent = state["status"], state["progress"] / 100
    if status == Status.GENERATING_SCRIPT:
        return round(script_share * percent, 4), "writing the script"
    if status == Status.DRAFT:
        return (script_share, "script written") if state.get("scriptData") else (None, "")
    if status == Status.RENDERING:
        return round(script_share + (1 - script_share) * percent, 4), "rendering"
    if status == Status.COMPLETED:
        return 1.0, "done"
    return None, ""
