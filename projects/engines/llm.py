"""The `llm` script engine: a language model writes the scenes, the local engine draws them.

Any server speaking OpenAI's chat completions API will do (OpenAI itself, or a
local Ollama, llama.cpp or vLLM server). The script is asked for as structured
output (a strict JSON schema), streamed so the bar moves while the words
arrive, and validated into scenes; an answer that cannot be used is asked for
once more, telling the model what was wrong. Rendering stays the local
engine's.

The stream is read in a thread of its own: a model may think (or load) for
minutes before its first token, and the job's thread must keep calling
`progress.check()` all the while, or a cancel would go unnoticed and the
job's lease would run out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionChunk

from projects.engines.base import (
    EngineError,
    ProjectSpec,
    Scene,
    StageProgress,
    TransientEngineError,
    pause,
)
from projects.engines.local import LocalEngine, check_spec
from projects.engines.openai_errors import (
    is_transient,
    provider_message,
    retry_after,
    without_addresses,
)

logger = logging.getLogger(__name__)

# How often the job's thread looks up from an idle stream to call progress.check().
POLL_SECONDS = 0.25
# The script editor's limit on a scene's narration and visual (SceneSerializer).
MAX_TEXT_LENGTH = 1000
# About 150 spoken words a minute.
WORDS_PER_SECOND = 2.5
# Characters the answer takes besides the narration: keys, quotes, a visual.
CHARACTERS_PER_WORD = 6
SCENE_OVERHEAD_CHARACTERS = 60
VISUAL_WORDS = 30
# The bar reaches this share when as many characters as expected have arrived;
# a longer answer creeps on towards LONGER_SHARE without ever reaching it.
EXPECTED_SHARE = 0.9
LONGER_SHARE = 0.99
# A 429's Retry-After is waited out (up to this) before the pipeline's own backoff.
MAX_RETRY_AFTER_SECONDS = 60.0
# Servers that need no key (a local Ollama) still get one: the client insists.
PLACEHOLDER_API_KEY = "no-key-needed"
ORIENTATIONS = {"16:9": "landscape", "9:16": "portrait (vertical)", "1:1": "square"}
SYSTEM_PROMPT = (
    "You write scripts for short narrated videos. A script is a list of scenes; each "
    "scene has the narration a voice reads aloud and a description of what is shown "
    "while it is read. Write in the language of the brief. Answer with the JSON object "
    "asked for and nothing else."
)
_CODE_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class UnusableAnswer(Exception):
    """The model answered, but not with a script we can use; the message says why."""


@dataclass(frozen=True)
class Answer:
    """What one streamed completion brought back."""

    text: str
    refusal: str
    finish_reason: str | None
    completion_tokens: int | None
    seconds: float
    # How far the bar got while it streamed: a second request carries on from there.
    fraction: float


class LlmScriptEngine(LocalEngine):
    name = "llm"

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        check_spec(spec)
        model = _model()
        client = _client()
        progress.log(f"Asked the model ({model}) for {spec.scene_count} scenes")
        try:
            scenes = self._script(client, spec, progress)
        finally:
            client.close()
        progress.update(1.0, f"{model} wrote {len(scenes)} scenes")
        return scenes

    def _script(
        self, client: openai.OpenAI, spec: ProjectSpec, progress: StageProgress
    ) -> list[Scene]:
        """Ask for the script; an unusable answer is asked for once more, saying what was wrong."""
        messages = _messages(spec)
        answer = self._ask(client, spec, messages, progress, start=0.0)
        try:
            return _use(answer, spec, progress)
        except UnusableAnswer as reason:
            progress.log(f"The answer could not be used ({reason}); asking again")
            messages += _correction(answer, str(reason), spec)
        answer = self._ask(client, spec, messages, progress, start=answer.fraction)
        try:
            return _use(answer, spec, progress)
        except UnusableAnswer as reason:
            raise EngineError(f"The LLM's answer could not be used twice: {reason}.") from None

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        # The local engine tidies its own sentences (capital, full stop); the
        # model's words are kept, and previewed, exactly as it wrote them.
        self.draw_preview(spec, scene, preview_path, progress)
        return scene

    def _ask(
        self,
        client: openai.OpenAI,
        spec: ProjectSpec,
        messages: list[dict[str, str]],
        progress: StageProgress,
        start: float,
    ) -> Answer:
        model = _model()
        progress.update(start, f"Waiting for {model} to answer")
        reader = _StreamReader(client, _request(spec, messages))
        reader.start()
        try:
            answer = _follow(reader, _expected_characters(spec), progress, start)
        except openai.APIStatusError as error:
            _wait_retry_after(error, progress, start)
            raise _status_error(error) from error
        except openai.APIError as error:
            raise _transport_error(error) from error
        finally:
            reader.stop()
        return answer


# --- the request ----------------------------------------------------------------


def _model() -> str:
    model = settings.SCRIPT_LLM_MODEL.strip()
    if not model:
        raise EngineError("SCRIPT_LLM_MODEL is not set: name the model that writes the scripts.")
    return model


def _client() -> openai.OpenAI:
    base_url = settings.SCRIPT_LLM_BASE_URL.strip()
    if not base_url:
        raise EngineError(
            "SCRIPT_LLM_BASE_URL is not set: give the address of a server speaking "
            "OpenAI's chat completions API, e.g. https://api.openai.com/v1."
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EngineError(f"SCRIPT_LLM_BASE_URL must be an http(s) address, not {base_url!r}.")
    return openai.OpenAI(
        base_url=base_url,
        api_key=settings.SCRIPT_LLM_API_KEY or PLACEHOLDER_API_KEY,
        # The pipeline retries a failed attempt with backoff; the client must not too.
        max_retries=0,
        timeout=settings.SCRIPT_LLM_TIMEOUT_SECONDS,
    )


def _messages(spec: ProjectSpec) -> list[dict[str, str]]:
    orientation = ORIENTATIONS.get(spec.aspect_ratio, spec.aspect_ratio)
    words = _narration_words(spec)
    prompt = (
        f"Write the script of a video in exactly {spec.scene_count} scenes.\n"
        f"Each scene lasts {spec.seconds_per_scene} seconds: its narration is about "
        f"{words} words, one or two sentences a voice can read in that time.\n"
        f"Its visual describes in one or two sentences (at most {VISUAL_WORDS} words) what "
        f"is on screen: subject, setting, light, camera movement.\n\n"
        f"Title: {spec.title.strip() or '(none)'}\n"
        f"Style: {spec.style.strip() or '(any)'}\n"
        f"Format: {spec.aspect_ratio} ({orientation})\n\n"
        f"Brief:\n{spec.brief.strip()}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def _request(spec: ProjectSpec, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "model": _model(),
        "messages": messages,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "video_script", "strict": True, "schema": _schema(spec)},
        },
        "stream": True,
        # The last chunk then carries the token count the log reports.
        "stream_options": {"include_usage": True},
    }


def _schema(spec: ProjectSpec) -> dict[str, Any]:
    scene = {
        "type": "object",
        "properties": {
            "narration": {"type": "string", "description": "What the voice reads aloud."},
            "visual": {"type": "string", "description": "What is shown on screen."},
        },
        "required": ["narration", "visual"],
        "additionalProperties": False,
    }
    scenes = {
        "type": "array",
        "items": scene,
        "minItems": spec.scene_count,
        "maxItems": spec.scene_count,
    }
    return {
        "type": "object",
        "properties": {"scenes": scenes},
        "required": ["scenes"],
        "additionalProperties": False,
    }


def _correction(answer: Answer, reason: str, spec: ProjectSpec) -> list[dict[str, str]]:
    said = answer.text or answer.refusal
    earlier = [{"role": "assistant", "content": said}] if said else []
    return [
        *earlier,
        {
            "role": "user",
            "content": (
                f"That answer could not be used: {reason}. Answer again with only the JSON "
                f"object: exactly {spec.scene_count} scenes, each with a non-empty narration "
                "and visual."
            ),
        },
    ]


# --- reading the stream --------------------------------------------------------


class _StreamReader(threading.Thread):
    """Opens the streamed completion and hands its chunks over a queue.

    Everything it meets (a chunk, the end, an exception) goes on the queue, so
    the job's thread sees it in order and decides what it means.
    """

    END = object()

    def __init__(self, client: openai.OpenAI, request: dict[str, Any]) -> None:
        super().__init__(name="llm-stream", daemon=True)
        self.client = client
        self.request = request
        self.items: queue.Queue[Any] = queue.Queue()
        self.stopping = threading.Event()
        self.stream: openai.Stream[Any] | None = None

    def run(self) -> None:
        try:
            self.stream = self.client.chat.completions.create(**self.request)
            if self.stopping.is_set():  # stopped while waiting for the headers
                return
            for chunk in self.stream:
                if self.stopping.is_set():
                    break
                self.items.put(chunk)
            self.items.put(self.END)
        except Exception as error:  # handed to the job's thread, which raises it
            self.items.put(error)
        finally:
            if self.stream is not None:
                self.stream.close()

    def stop(self) -> None:
        """Stop reading and hang up, so the server sees we left and stops writing."""
        self.stopping.set()
        stream = self.stream
        if stream is not None and self.is_alive():
            _hang_up(stream)


def _hang_up(stream: openai.Stream[Any]) -> None:
    """Shut the stream's socket down: closing it would not wake a read blocked on it.

    The reader thread then sees the connection end and closes the stream itself.
    """
    network = stream.response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _follow(reader: _StreamReader, expected: int, progress: StageProgress, start: float) -> Answer:
    """Gather the streamed answer, moving the bar from `start` as characters arrive."""
    message = f"Writing the script with {_model()}"
    gathered = _Gathered(fraction=start)
    while True:
        try:
            item = reader.items.get(timeout=POLL_SECONDS)
        except queue.Empty:
            progress.check()
            continue
        if item is reader.END:
            return gathered.answer()
        if isinstance(item, Exception):
            raise item
        gathered.add(item)
        fraction = start + (1 - start) * stream_share(gathered.received, expected)
        if fraction > gathered.fraction:
            gathered.fraction = fraction
            progress.update(fraction, message)
        progress.check()


@dataclass
class _Gathered:
    """The answer so far, from the chunks of one stream."""

    fraction: float
    text: str = ""
    refusal: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    began: float = field(default_factory=time.monotonic)

    @property
    def received(self) -> int:
        return len(self.text) + len(self.refusal)

    def add(self, chunk: ChatCompletionChunk) -> None:
        if chunk.usage is not None:
            self.completion_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            self.text += choice.delta.content or ""
            self.refusal += choice.delta.refusal or ""
            self.finish_reason = choice.finish_reason or self.finish_reason

    def answer(self) -> Answer:
        seconds = time.monotonic() - self.began
        return Answer(
            self.text,
            self.refusal,
            self.finish_reason,
            self.completion_tokens,
            seconds,
            self.fraction,
        )


def stream_share(received: int, expected: int) -> float:
    """The share of the answer in, from characters received against those expected.

    Linear up to the expected length; past it, on towards LONGER_SHARE without
    reaching it, since only the end of the stream says the answer is complete.
    """
    ratio = received / max(expected, 1)
    if ratio <= 1:
        return EXPECTED_SHARE * ratio
    # Capped below 1.0 so that float rounding can never fill the bar either.
    return EXPECTED_SHARE + (LONGER_SHARE - EXPECTED_SHARE) * (1 - 1 / ratio)


def _narration_words(spec: ProjectSpec) -> int:
    return max(5, round(spec.seconds_per_scene * WORDS_PER_SECOND))


def _expected_characters(spec: ProjectSpec) -> int:
    words = _narration_words(spec) + VISUAL_WORDS
    return 20 + spec.scene_count * (SCENE_OVERHEAD_CHARACTERS + words * CHARACTERS_PER_WORD)


# --- the answer -----------------------------------------------------------------


def parse_scenes(answer: Answer, spec: ProjectSpec) -> list[Scene]:
    """The scenes of the answer, or UnusableAnswer saying what is wrong with it."""
    if answer.refusal.strip():
        raise UnusableAnswer(f"the model refused: {answer.refusal.strip()}")
    if answer.finish_reason == "length":
        raise UnusableAnswer("the answer was cut off before it was complete")
    text = answer.text.strip()
    if not text:
        raise UnusableAnswer("the answer was empty")
    fenced = _CODE_FENCE.match(text)
    try:
        script = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as error:
        raise UnusableAnswer(f"it is not JSON: {error.msg} (character {error.pos})") from None
    scenes = script.get("scenes") if isinstance(script, dict) else None
    if not isinstance(scenes, list):
        raise UnusableAnswer('it has no list of "scenes"')
    if len(scenes) != spec.scene_count:
        raise UnusableAnswer(f"it has {len(scenes)} scenes, not the {spec.scene_count} asked for")
    return [_scene(index, scene, spec) for index, scene in enumerate(scenes)]


def _scene(index: int, scene: Any, spec: ProjectSpec) -> Scene:
    if not isinstance(scene, dict):
        raise UnusableAnswer(f"scene {index + 1} is not an object")
    texts = {}
    for key in ("narration", "visual"):
        value = scene.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UnusableAnswer(f"scene {index + 1} has no {key}")
        if len(value.strip()) > MAX_TEXT_LENGTH:
            raise UnusableAnswer(
                f"the {key} of scene {index + 1} is longer than {MAX_TEXT_LENGTH} characters"
            )
        texts[key] = value.strip()
    # The person chose how long each scene lasts; the model only writes the words.
    return Scene(index=index, seconds=float(spec.seconds_per_scene), **texts)


def _use(answer: Answer, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
    """Log what arrived, then parse it."""
    tokens = f"{answer.completion_tokens} tokens, " if answer.completion_tokens else ""
    received = f"{tokens}{len(answer.text) + len(answer.refusal)} characters"
    try:
        scenes = parse_scenes(answer, spec)
    except UnusableAnswer:
        progress.log(f"{_model()} answered in {answer.seconds:.1f} s: {received}")
        raise
    progress.log(f"{_model()} answered in {answer.seconds:.1f} s: {len(scenes)} scenes, {received}")
    return scenes


# --- errors ---------------------------------------------------------------------


def _status_error(error: openai.APIStatusError) -> EngineError:
    status = error.status_code
    logger.warning("The LLM answered %s: %s", status, error.response.text[:2000])
    message = f"The LLM answered {status}: {provider_message(error)}"
    # An empty quota is a 429 too, but no retry will fill it.
    out_of_quota = isinstance(error.body, dict) and error.body.get("code") == "insufficient_quota"
    if is_transient(status) and not out_of_quota:
        return TransientEngineError(message)
    hints = {
        401: "check SCRIPT_LLM_API_KEY",
        403: "check SCRIPT_LLM_API_KEY",
        404: "check SCRIPT_LLM_BASE_URL and SCRIPT_LLM_MODEL",
    }
    hint = hints.get(status)
    return EngineError(f"{message} ({hint})" if hint else message)


def _transport_error(error: openai.APIError) -> EngineError:
    # The address and the network's own words are for the operator, not the job's log.
    logger.warning(
        "The LLM at %s failed: %r", settings.SCRIPT_LLM_BASE_URL, error.__cause__ or error
    )
    if isinstance(error, openai.APITimeoutError):
        seconds = settings.SCRIPT_LLM_TIMEOUT_SECONDS
        return TransientEngineError(
            f"The LLM sent nothing for {seconds:g} s (SCRIPT_LLM_TIMEOUT_SECONDS)."
        )
    if isinstance(error, openai.APIConnectionError):
        return TransientEngineError("Could not reach the LLM (check SCRIPT_LLM_BASE_URL).")
    # An error event inside the stream: the server gave up half way.
    return TransientEngineError(f"The LLM's answer broke off: {without_addresses(error.message)}")


def _wait_retry_after(error: openai.APIStatusError, progress: StageProgress, start: float) -> None:
    """Wait out a rate limit's Retry-After (still cancellable) before the attempt fails."""
    seconds = retry_after(error.response.headers) if error.status_code == 429 else None
    if seconds is None:
        return
    seconds = min(seconds, MAX_RETRY_AFTER_SECONDS)
    progress.update(start, f"Rate limited by the LLM; waiting {seconds:g} s")
    pause(progress, seconds)
