"""The remote render engine: each scene is rendered by a provider of the OpenAI-style videos API.

For one scene: `POST /videos` (prompt, model, seconds, size), then
`GET /videos/{id}` until the video is `completed` or `failed`, then
`GET /videos/{id}/content` streamed into the clip. The script stages and the
joining of clips stay the local engine's: compose joins with `-c copy`, which
works because one provider renders every clip of a video alike.

Three things make it safe to stop and start again at any point:

- The provider's video id is checkpointed beside the clip right after the
  provider accepts it, so a retry, a new worker or a re-render resumes that
  video instead of paying for a second one. The checkpoint is written before
  the POST too, holding the `Idempotency-Key`, so a POST whose answer was
  lost is sent again with the same key.
- Requests are not retried by the `openai` client (`max_retries=0`) but
  here, with backoff and `Retry-After`, waiting in short slices that call
  `progress.check()`: a cancel stops the engine within half a second, and no
  request is sent after it.
- The clip is written whole or not at all, and checked to be a playable
  video of the size asked for before it becomes a checkpoint itself.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import openai
from django.conf import settings

from projects.engines.base import (
    EngineError,
    ProjectSpec,
    Scene,
    StageProgress,
    TransientEngineError,
    pause,
)
from projects.engines.ffmpeg import probe_clip
from projects.engines.local import LocalEngine, _atomic_output, check_scene, check_spec
from projects.engines.openai_errors import is_transient, provider_message, retry_after

try:  # openai 3.x speaks through httpx2, 1.x and 2.x through httpx.
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

if TYPE_CHECKING:
    from openai.types.video import Video

T = TypeVar("T")
logger = logging.getLogger(__name__)

# The provider's own progress fills this share of the scene's bar; the download the rest.
PROVIDER_SHARE = 0.9
# A provider asking us to poll more often than this is not taken literally.
MIN_POLL_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 60.0
DOWNLOAD_CHUNK = 256 * 1024
FAILED_STATUSES = frozenset({"failed", "cancelled", "expired"})


class ProviderRefused(EngineError):
    """The provider answered a 4xx other than a rate limit: trying again would not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    api_key: str
    model: str
    poll_seconds: float
    timeout_seconds: float
    max_retries: int
    backoff_seconds: float

    @classmethod
    def from_settings(cls) -> ProviderConfig:
        base_url = settings.REMOTE_VIDEO_BASE_URL.strip()
        if not base_url:
            raise EngineError(
                "REMOTE_VIDEO_BASE_URL is not set: point it at a provider of the "
                "OpenAI-style videos API, e.g. https://api.openai.com/v1."
            )
        if not re.match(r"https?://", base_url):
            raise EngineError(
                f"REMOTE_VIDEO_BASE_URL must start with http:// or https://, not {base_url!r}."
            )
        if not settings.REMOTE_VIDEO_API_KEY.strip():
            raise EngineError("REMOTE_VIDEO_API_KEY is not set: the video provider needs a key.")
        if not settings.REMOTE_VIDEO_MODEL.strip():
            raise EngineError("REMOTE_VIDEO_MODEL is not set: name the provider's video model.")
        return cls(
            base_url=base_url,
            api_key=settings.REMOTE_VIDEO_API_KEY.strip(),
            model=settings.REMOTE_VIDEO_MODEL.strip(),
            poll_seconds=settings.REMOTE_VIDEO_POLL_SECONDS,
            timeout_seconds=settings.REMOTE_VIDEO_TIMEOUT_SECONDS,
            max_retries=settings.REMOTE_VIDEO_MAX_RETRIES,
            backoff_seconds=settings.REMOTE_VIDEO_RETRY_BACKOFF_SECONDS,
        )


class RemoteVideoEngine(LocalEngine):
    name = "remote"

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        check_spec(spec)
        check_scene(scene)
        config = ProviderConfig.from_settings()
        client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            max_retries=0,
            timeout=config.timeout_seconds,
        )
        if not hasattr(client, "videos"):
            client.close()
            raise EngineError("The installed openai package is too old for the videos API.")
        try:
            _SceneRender(config, client, spec, scene, clip_path, progress).run()
        finally:
            client.close()


def prompt_for(spec: ProjectSpec, scene: Scene) -> str:
    """What the provider is asked to film: the scene's picture, its words, the project's style."""
    parts = [scene.visual.strip()]
    if scene.narration.strip():
        parts.append(f'Narration over this scene (do not show it as text): "{scene.narration}"')
    if spec.style.strip():
        parts.append(f"Style: {spec.style.strip()}.")
    return "\n\n".join(part for part in parts if part)


class Checkpoint:
    """The provider's id for a scene's video, kept in a small JSON file beside the clip."""

    def __init__(self, clip_path: Path) -> None:
        self.clip_path = clip_path
        self.path = clip_path.with_suffix(".remote.json")

    def load(self) -> dict[str, Any]:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def save(self, **fields: Any) -> None:
        with _atomic_output(self.path) as partial:
            partial.write_text(json.dumps(fields))

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)

    def new_idempotency_key(self) -> str:
        # The clip's name says which scene and script it is; the suffix makes a
        # fresh submission (after a failed or expired video) a new request.
        return f"{self.clip_path.stem}-{secrets.token_hex(6)}"


class _SceneRender:
    """One scene's trip to the provider: submit or resume, poll, download."""

    def __init__(
        self,
        config: ProviderConfig,
        client: openai.OpenAI,
        spec: ProjectSpec,
        scene: Scene,
        clip_path: Path,
        progress: StageProgress,
    ) -> None:
        self.config = config
        self.client = client
        self.spec = spec
        self.scene = scene
        self.clip_path = clip_path
        self.progress = progress
        self.checkpoint = Checkpoint(clip_path)
        self.label = f"Scene {scene.index + 1}"
        self.size = "{}x{}".format(*spec.size)
        self.seconds = f"{scene.seconds:g}"

    def run(self) -> None:
        started = time.monotonic()
        saved = self.checkpoint.load()
        if saved.get("video_id"):
            video_id = str(saved["video_id"])
            self.progress.log(
                f"{self.label}: resuming {video_id}, submitted to the provider before"
            )
            video, poll_after = self._retrieve(video_id)
        else:
            video, poll_after = self._submit(saved.get("idempotency_key"))
        video = self._wait_until_done(video, poll_after)
        size = self._download(video.id)
        self.checkpoint.drop()
        elapsed = time.monotonic() - started
        self.progress.log(f"{self.label} downloaded: {size / 1024:.0f} KB after {elapsed:.1f} s")

    # --- the three requests ----------------------------------------------------------

    def _submit(self, idempotency_key: str | None) -> tuple[Video, float]:
        # Saved before the POST: if its answer is lost, the next try sends the same key.
        key = idempotency_key or self.checkpoint.new_idempotency_key()
        self.checkpoint.save(idempotency_key=key)
        self.progress.update(0.0, f"{self.label}: sending to the provider")
        try:
            response = self._call(
                "submit the scene",
                lambda: self.client.videos.with_raw_response.create(
                    prompt=prompt_for(self.spec, self.scene),
                    model=self.config.model,
                    seconds=self.seconds,  # type: ignore[arg-type]
                    size=self.size,  # type: ignore[arg-type]
                    extra_headers={"Idempotency-Key": key},
                ),
            )
        except ProviderRefused:
            self.checkpoint.drop()
            raise
        video = response.parse()
        self.checkpoint.save(idempotency_key=key, video_id=video.id, submitted_at=_now())
        self.progress.log(
            f"{self.label}: the provider accepted {video.id} "
            f"({self.config.model}, {self.seconds} s, {self.size})"
        )
        return video, self._poll_after(response.headers)

    def _retrieve(self, video_id: str) -> tuple[Video, float]:
        try:
            response = self._call(
                f"check on {video_id}",
                lambda: self.client.videos.with_raw_response.retrieve(video_id),
            )
        except ProviderRefused as error:
            if error.status != 404:
                raise
            self.checkpoint.drop()
            raise TransientEngineError(
                f"{self.label}: the provider no longer knows {video_id}; "
                "the scene will be submitted afresh"
            ) from error
        return response.parse(), self._poll_after(response.headers)

    def _download(self, video_id: str) -> int:
        self.progress.update(PROVIDER_SHARE, f"{self.label}: downloading the clip")
        with _atomic_output(self.clip_path) as partial:
            try:
                size = self._call(
                    f"download {video_id}", lambda: self._fetch_content(video_id, partial)
                )
            except ProviderRefused as error:
                if error.status == 404:
                    self.checkpoint.drop()
                    raise TransientEngineError(
                        f"{self.label}: the provider no longer has the video of {video_id}; "
                        "the scene will be submitted afresh"
                    ) from error
                raise
            self._check_clip(partial)
        self.progress.update(1.0)
        return size

    def _fetch_content(self, video_id: str, partial: Path) -> int:
        """Stream the video into `partial` (from scratch: a retry rewrites it)."""
        received = 0
        with (
            self.client.videos.with_streaming_response.download_content(video_id) as response,
            partial.open("wb") as out,
        ):
            total = int(response.headers.get("content-length") or 0)
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                self.progress.check()
                out.write(chunk)
                received += len(chunk)
                if total:
                    share = min(received / total, 1.0)
                    self.progress.update(PROVIDER_SHARE + (1 - PROVIDER_SHARE) * share)
        return received

    # --- polling ------------------------------------------------------------------------

    def _wait_until_done(self, video: Video, poll_after: float) -> Video:
        while True:
            if video.status == "completed":
                return video
            if video.status in FAILED_STATUSES:
                self.checkpoint.drop()
                raise EngineError(f"{self.label}: the provider could not render it: {_why(video)}")
            self._report(video)
            pause(self.progress, poll_after)
            video, poll_after = self._retrieve(video.id)

    def _report(self, video: Video) -> None:
        percent = min(max(int(video.progress or 0), 0), 100)
        if video.status == "queued":
            message = f"{self.label}: queued at the provider"
        else:
            message = f"{self.label}: rendering at the provider, {percent}%"
        self.progress.update(PROVIDER_SHARE * percent / 100, message)

    def _poll_after(self, headers: Any) -> float:
        raw = headers.get("openai-poll-after-ms")
        try:
            seconds = float(raw) / 1000 if raw is not None else self.config.poll_seconds
        except ValueError:
            seconds = self.config.poll_seconds
        return max(seconds, MIN_POLL_SECONDS)

    # --- retries ------------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """Send `request`, retrying transient failures with backoff; each wait is cancellable."""
        retries = self.config.max_retries
        for retry in range(retries + 1):
            self.progress.check()
            try:
                return request()
            except openai.APIStatusError as error:
                if not is_transient(error.status_code):
                    raise self._refused(what, error) from error
                reason = f"the provider answered {error.status_code}: {provider_message(error)}"
                delay = retry_after(error.response.headers)
            except openai.APITimeoutError:
                reason = f"the provider did not answer within {self.config.timeout_seconds:g} s"
                delay = None
            except (openai.APIConnectionError, _http.TransportError) as error:
                # The network's own words name addresses: they go to the worker's log only.
                logger.warning("%s: could not %s: %r", self.label, what, error.__cause__ or error)
                reason = "the connection to the provider failed (check REMOTE_VIDEO_BASE_URL)"
                delay = None
            if retry == retries:
                raise TransientEngineError(
                    f"{self.label}: could not {what} after {retries + 1} tries: {reason}"
                )
            delay = delay if delay is not None else self._backoff(retry)
            self.progress.log(
                f"{self.label}: could not {what}: {reason}; "
                f"retry {retry + 1} of {retries} in {delay:.1f} s"
            )
            pause(self.progress, delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _backoff(self, retry: int) -> float:
        return min(self.config.backoff_seconds * 2**retry, MAX_BACKOFF_SECONDS)

    def _refused(self, what: str, error: openai.APIStatusError) -> ProviderRefused:
        answer = f"{error.status_code} {provider_message(error)}"
        message = f"{self.label}: the provider refused to {what}: {answer}"
        if error.status_code in (401, 403):
            message += " (check REMOTE_VIDEO_API_KEY)"
        return ProviderRefused(message, error.status_code)

    # --- the clip ------------------------------------------------------------------------

    def _check_clip(self, partial: Path) -> None:
        """A clip must decode and have the asked-for size, or compose could not join it."""
        clip = probe_clip(partial, decode_first_frame=True)
        if clip is None or not clip.decodes or clip.seconds is None:
            # Most likely a download cut short: the checkpoint stays, a retry fetches it again.
            raise TransientEngineError(f"{self.label}: the provider's file is not a playable video")
        size = f"{clip.width}x{clip.height}"
        if size != self.size:
            self.checkpoint.drop()
            raise EngineError(
                f"{self.label}: the provider sent a {size} video, not the {self.size} asked for"
            )
        length = clip.seconds
        if abs(length - self.scene.seconds) > 0.5:
            self.progress.log(
                f"{self.label}: the provider's clip lasts {length:.1f} s, "
                f"not the {self.seconds} s asked for"
            )


# --- reading the provider's answers ----------------------------------------------------------


def _why(video: Video) -> str:
    error = getattr(video, "error", None)
    message = getattr(error, "message", None) or f"its status is {video.status}"
    code = getattr(error, "code", None)
    return f"{message} ({code})" if code else message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
