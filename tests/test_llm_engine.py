"""The `llm` script engine against a live fake of OpenAI's chat completions API.

First the engine alone, with a progress object that records what it is told;
then whole script jobs through a real worker process.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from projects.engines.base import (
    EngineError,
    JobStopped,
    ProjectSpec,
    Scene,
    TransientEngineError,
)
from projects.engines.llm import LlmScriptEngine, stream_share
from projects.engines.openai_errors import provider_message
from projects.engines.writing import tidy_scene
from tests.conftest import BRIEF, api_client_for
from tests.fakes.llm import (
    DEFAULT_MODEL,
    Answer,
    Failure,
    FakeLlm,
    Hang,
    malformed,
    rate_limited,
    running_fake,
    script_for,
    server_error,
    slow,
)
from tests.waiting import wait_for

try:  # openai 3.x speaks through httpx2, 1.x and 2.x through httpx.
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

SPEC = ProjectSpec(
    project_id="p-1",
    title=BRIEF["title"],
    brief=BRIEF["brief"],
    aspect_ratio="16:9",
    scene_count=3,
    seconds_per_scene=4,
    style="warm, calm",
)
WRITING = f"Writing the script with {DEFAULT_MODEL}"


class RecordingProgress:
    """A StageProgress that keeps every report; `stop_after` checks, it stops the job."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.updates: list[tuple[float, str | None]] = []
        self.lines: list[str] = []
        self.checks = 0
        self.stop_after = stop_after

    def update(self, fraction: float, message: str | None = None) -> None:
        self.updates.append((fraction, message))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def check(self) -> None:
        self.checks += 1
        if self.stop_after is not None and self.checks > self.stop_after:
            raise JobStopped("cancelled by the test")

    def fractions(self, message: str) -> list[float]:
        return [fraction for fraction, said in self.updates if said == message]


@pytest.fixture
def llm_fake() -> Iterator[FakeLlm]:
    with running_fake() as fake:
        yield fake


@pytest.fixture
def llm(llm_fake: FakeLlm, settings: Any) -> FakeLlm:
    """The engine's settings pointed at the fake."""
    settings.SCRIPT_LLM_BASE_URL = llm_fake.base_url
    settings.SCRIPT_LLM_MODEL = llm_fake.model
    settings.SCRIPT_LLM_API_KEY = llm_fake.api_key
    settings.SCRIPT_LLM_TIMEOUT_SECONDS = 5.0
    return llm_fake


def outline(progress: RecordingProgress | None = None, spec: ProjectSpec = SPEC) -> list[Scene]:
    return LlmScriptEngine().outline(spec, progress or RecordingProgress())


def narrations(scenes: list[Any]) -> list[str]:
    return [scene["narration"] if isinstance(scene, dict) else scene.narration for scene in scenes]


# --- the engine against the fake ------------------------------------------------------


def test_it_returns_the_scenes_as_the_llm_wrote_them(llm: FakeLlm) -> None:
    scenes = outline()

    expected = script_for(SPEC.brief, SPEC.scene_count)["scenes"]
    assert [scene.index for scene in scenes] == [0, 1, 2]
    assert [(s.narration, s.visual) for s in scenes] == [
        (s["narration"], s["visual"]) for s in expected
    ]
    assert all(scene.seconds == SPEC.seconds_per_scene for scene in scenes)


def test_it_asks_for_a_strict_json_schema_with_the_model_and_key(llm: FakeLlm) -> None:
    outline()

    [request] = llm.completions()
    assert request.headers["authorization"] == f"Bearer {llm.api_key}"
    assert request.body["model"] == DEFAULT_MODEL
    assert request.body["stream"] is True
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    scenes = schema["properties"]["scenes"]
    assert scenes["minItems"] == scenes["maxItems"] == SPEC.scene_count
    assert scenes["items"]["required"] == ["narration", "visual"]
    assert scenes["items"]["additionalProperties"] is False
    prompt = request.body["messages"][-1]["content"]
    for part in (SPEC.brief, SPEC.title, SPEC.style, "16:9", "exactly 3 scenes"):
        assert part in prompt


def test_it_needs_no_key_for_a_local_server(settings: Any) -> None:
    with running_fake(api_key=None) as fake:
        settings.SCRIPT_LLM_BASE_URL = fake.base_url
        settings.SCRIPT_LLM_MODEL = fake.model
        settings.SCRIPT_LLM_API_KEY = ""
        assert len(outline()) == SPEC.scene_count


def test_a_malformed_answer_is_asked_for_again_saying_what_was_wrong(llm: FakeLlm) -> None:
    llm.plan(malformed())
    progress = RecordingProgress()

    scenes = outline(progress)

    assert len(scenes) == SPEC.scene_count
    first, second = llm.completions()
    assert len(first.body["messages"]) == 2  # the system prompt and the brief
    correction = second.body["messages"][-1]["content"]
    assert "could not be used: it is not JSON" in correction
    assert second.body["messages"][-2] == {"role": "assistant", "content": malformed().content}
    assert any("could not be used" in line for line in progress.lines)


def test_a_wrong_scene_count_is_asked_for_again(llm: FakeLlm) -> None:
    llm.plan(Answer(scenes=2))

    assert len(outline()) == SPEC.scene_count
    assert (
        "it has 2 scenes, not the 3 asked for"
        in llm.completions()[1].body["messages"][-1]["content"]
    )


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        (malformed(), malformed(), "it is not JSON"),
        (Answer(scenes=1), Answer(scenes=4), "it has 4 scenes, not the 3 asked for"),
        (malformed(), Answer(refusal="I can't help with that."), "the model refused"),
        (
            malformed(),
            Answer(content='{"scenes": [{"narration": " ", "visual": "x"}, {}, {}]}'),
            "scene 1 has no narration",
        ),
    ],
)
def test_two_unusable_answers_fail_with_a_clear_sentence(
    llm: FakeLlm, first: Answer, second: Answer, reason: str
) -> None:
    llm.plan(first, second)

    with pytest.raises(EngineError) as raised:
        outline()

    assert type(raised.value) is EngineError
    assert str(raised.value).startswith(f"The LLM's answer could not be used twice: {reason}")
    assert len(llm.completions()) == 2


def test_a_wrong_key_fails_with_the_providers_message(llm: FakeLlm, settings: Any) -> None:
    settings.SCRIPT_LLM_API_KEY = "sk-wrong-key-1234"

    with pytest.raises(EngineError) as raised:
        outline()

    assert type(raised.value) is EngineError
    assert str(raised.value).startswith("The LLM answered 401: Incorrect API key provided")
    assert "SCRIPT_LLM_API_KEY" in str(raised.value)
    assert len(llm.completions()) == 1  # the client does not retry on its own


def test_an_unknown_model_fails_with_the_providers_message(llm: FakeLlm, settings: Any) -> None:
    settings.SCRIPT_LLM_MODEL = "no-such-model"

    with pytest.raises(EngineError, match="answered 404: The model `no-such-model` does not exist"):
        outline()


@pytest.mark.parametrize("failure", [server_error(), rate_limited(retry_after="0")])
def test_server_errors_and_rate_limits_are_transient(llm: FakeLlm, failure: Failure) -> None:
    llm.plan(failure)

    with pytest.raises(TransientEngineError, match=f"The LLM answered {failure.status}: "):
        outline()

    assert len(llm.completions()) == 1


def test_a_rate_limit_waits_out_retry_after_still_cancellable(llm: FakeLlm) -> None:
    llm.plan(rate_limited(retry_after="1"))
    progress = RecordingProgress()
    started = time.monotonic()

    with pytest.raises(TransientEngineError):
        outline(progress)

    assert time.monotonic() - started >= 1.0
    assert progress.checks >= 3
    assert any(message and "waiting 1 s" in message for _, message in progress.updates)


def test_an_unreachable_server_is_transient_and_its_address_stays_in_the_worker(
    settings: Any,
) -> None:
    with running_fake() as fake:
        settings.SCRIPT_LLM_BASE_URL = fake.base_url
    settings.SCRIPT_LLM_MODEL = "any"

    with pytest.raises(TransientEngineError) as raised:
        outline()

    assert str(raised.value) == "Could not reach the LLM (check SCRIPT_LLM_BASE_URL)."


def test_the_log_names_the_model_but_not_its_address(llm: FakeLlm) -> None:
    progress = RecordingProgress()

    outline(progress)

    assert progress.lines[0] == f"Asked the model ({DEFAULT_MODEL}) for 3 scenes"
    said = " ".join(progress.lines + [message or "" for _, message in progress.updates])
    assert "127.0.0.1" not in said
    assert "http" not in said


def test_a_providers_message_is_shown_without_addresses(llm: FakeLlm, settings: Any) -> None:
    settings.SCRIPT_LLM_API_KEY = "sk-wrong-key-1234"

    with pytest.raises(EngineError) as raised:
        outline()

    assert "You can find your API key at (an address)." in str(raised.value)
    assert "https://" not in str(raised.value)


def test_an_error_page_that_is_not_the_providers_json_is_not_shown() -> None:
    request = _http.Request("POST", "https://llm.internal:8443/v1/chat/completions")
    page = "<html>Traceback (most recent call last): at llm.internal 10.0.0.5</html>"
    response = _http.Response(502, request=request, text=page)

    message = provider_message(openai.APIStatusError("Bad Gateway", response=response, body=None))

    assert message == "Bad Gateway"


def test_a_silent_server_times_out_as_transient(llm: FakeLlm, settings: Any) -> None:
    settings.SCRIPT_LLM_TIMEOUT_SECONDS = 0.5
    llm.plan(Hang())
    progress = RecordingProgress()

    with pytest.raises(TransientEngineError, match=r"sent nothing for 0\.5 s"):
        outline(progress)

    # While it waited for the first byte, the job kept checking in.
    assert progress.checks >= 1


def test_missing_settings_fail_with_a_clear_sentence(settings: Any) -> None:
    settings.SCRIPT_LLM_BASE_URL = ""
    with pytest.raises(EngineError, match="SCRIPT_LLM_BASE_URL is not set"):
        outline()
    settings.SCRIPT_LLM_BASE_URL = "http://127.0.0.1:9/v1"
    settings.SCRIPT_LLM_MODEL = " "
    with pytest.raises(EngineError, match="SCRIPT_LLM_MODEL is not set"):
        outline()


def test_the_bar_moves_inside_the_stage_while_tokens_arrive(llm: FakeLlm) -> None:
    llm.plan(slow(delay=0.01, chunk_size=8))
    progress = RecordingProgress()

    outline(progress)

    streaming = progress.fractions(WRITING)
    assert len(streaming) > 10
    assert all(0 < fraction < 1 for fraction in streaming)
    assert streaming == sorted(set(streaming)), "strictly increasing"
    assert progress.updates[-1][0] == 1.0
    assert progress.checks >= len(streaming)
    assert any(
        f"{DEFAULT_MODEL} answered in" in line and "tokens" in line for line in progress.lines
    )


def test_a_second_request_carries_the_bar_on_from_where_it_was(llm: FakeLlm) -> None:
    llm.plan(Answer(scenes=1, chunk_size=4))
    progress = RecordingProgress()

    outline(progress)

    streaming = progress.fractions(WRITING)
    assert streaming == sorted(streaming)
    assert all(0 < fraction < 1 for fraction in streaming)


def test_the_share_never_reaches_the_end_however_long_the_answer() -> None:
    shares = [stream_share(received, 1000) for received in (1, 500, 1000, 2000, 10_000, 10**6)]
    assert shares == sorted(shares)
    assert all(0 < share < 1 for share in shares)


def test_a_cancel_closes_the_stream(llm: FakeLlm) -> None:
    llm.plan(slow(delay=0.03, chunk_size=2))
    progress = RecordingProgress(stop_after=5)

    with pytest.raises(JobStopped):
        outline(progress)

    [request] = llm.completions()
    wait_for(lambda: request.client_left, "the fake to see the client leave", timeout=5)
    assert request.chunks_sent < request.chunks_planned


def test_a_cancel_hangs_up_at_once_while_the_stream_is_quiet(llm: FakeLlm) -> None:
    llm.plan(slow(delay=10))
    progress = RecordingProgress(stop_after=2)
    started = time.monotonic()

    with pytest.raises(JobStopped):
        outline(progress)

    [request] = llm.completions()
    wait_for(lambda: request.client_left, "the fake to see the client leave", timeout=3)
    assert time.monotonic() - started < 5  # not after the next chunk, 10 s later
    assert request.chunks_sent == 1  # only the opening chunk, before the pause


def test_a_cancel_is_heard_before_the_model_says_anything(llm: FakeLlm) -> None:
    llm.plan(Hang())
    progress = RecordingProgress(stop_after=2)
    started = time.monotonic()

    with pytest.raises(JobStopped):
        outline(progress)

    assert time.monotonic() - started < 2  # not the 5 s read timeout


def test_write_scene_keeps_the_llms_words_and_draws_a_preview(tmp_path: Path) -> None:
    scene = Scene(index=0, narration="and then — silence", visual="Dark  sea,\nno moon", seconds=2)
    assert tidy_scene(scene) != scene  # the local engine would have changed it
    preview = tmp_path / "scene-0.webp"

    written = LlmScriptEngine().write_scene(SPEC, scene, preview, RecordingProgress())

    assert written == scene
    with Image.open(preview) as image:
        assert image.format == "WEBP"
        assert image.n_frames > 1


def test_the_fake_speaks_the_api_to_the_official_client(llm: FakeLlm) -> None:
    client = openai.OpenAI(base_url=llm.base_url, api_key=llm.api_key, max_retries=0)
    try:
        assert [model.id for model in client.models.list()] == [DEFAULT_MODEL]
        whole = client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "exactly 2 scenes"}]
        )
    finally:
        client.close()
    assert whole.object == "chat.completion"
    assert whole.choices[0].finish_reason == "stop"
    assert '"scenes"' in (whole.choices[0].message.content or "")


# --- through a real worker ------------------------------------------------------------


@pytest.fixture
def llm_env(llm_fake: FakeLlm, monkeypatch: pytest.MonkeyPatch) -> FakeLlm:
    """The worker's environment: scripts by the fake LLM. Request it before `qcluster`."""
    monkeypatch.setenv("SCRIPT_ENGINE", "llm")
    monkeypatch.setenv("SCRIPT_LLM_BASE_URL", llm_fake.base_url)
    monkeypatch.setenv("SCRIPT_LLM_MODEL", llm_fake.model)
    monkeypatch.setenv("SCRIPT_LLM_API_KEY", llm_fake.api_key or "")
    monkeypatch.setenv("SCRIPT_LLM_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("PROGRESS_MIN_INTERVAL", "0.1")
    return llm_fake


def _start_script(alice: Any, scene_count: int) -> tuple[Any, str]:
    api = api_client_for(alice)
    brief = BRIEF | {"sceneCount": scene_count, "secondsPerScene": 2}
    project = api.post("/api/video-creation/projects", brief, format="json").json()
    base = f"/api/video-creation/projects/{project['id']}"
    assert api.post(f"{base}/script").status_code == 202
    return api, f"{base}/status"


def _ended(api: Any, status_url: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        answer = api.get(status_url).json()
        return answer if answer["status"] in ("DRAFT", "FAILED") else None

    return wait_for(ended, "the script job to end", timeout=30, every=0.1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_worker_shows_the_llm_writing_and_keeps_its_words(
    alice: Any, llm_env: FakeLlm, qcluster: subprocess.Popen[bytes]
) -> None:
    # About 3 s of tokens: long enough to watch the bar move from the outside.
    llm_env.plan(slow(delay=0.03, chunk_size=2))
    api, status_url = _start_script(alice, scene_count=1)
    outline_share = 100 * 1 / (1 + 3)  # the outline stage's weight against one scene's

    seen: list[int] = []

    def writing() -> bool:
        answer = api.get(status_url).json()
        if answer["status"] == "GENERATING_SCRIPT" and answer["progressMessage"] == WRITING:
            seen.append(answer["progress"])
        return len({value for value in seen if 0 < value < outline_share}) >= 3

    wait_for(writing, "the bar to move while the LLM writes", timeout=30, every=0.05)
    assert seen == sorted(seen)

    finished = _ended(api, status_url)
    assert finished["status"] == "DRAFT", finished["error"]
    assert narrations(finished["scriptData"]["scenes"]) == narrations(
        script_for(BRIEF["brief"], 1)["scenes"]
    )
    [request] = llm_env.completions()
    assert request.body["model"] == DEFAULT_MODEL


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_worker_asks_again_after_a_malformed_answer_and_fails_after_two(
    alice: Any, llm_env: FakeLlm, qcluster: subprocess.Popen[bytes]
) -> None:
    llm_env.plan(malformed())
    api, status_url = _start_script(alice, scene_count=2)

    written = _ended(api, status_url)

    assert written["status"] == "DRAFT", written["error"]
    assert narrations(written["scriptData"]["scenes"]) == narrations(
        script_for(BRIEF["brief"], 2)["scenes"]
    )
    assert len(llm_env.completions()) == 2

    llm_env.plan(malformed(), Answer(scenes=5))
    api, status_url = _start_script(alice, scene_count=2)

    failed = _ended(api, status_url)

    assert failed["status"] == "FAILED"
    assert failed["error"] == {
        "code": "engine_error",
        "message": (
            "The LLM's answer could not be used twice: it has 5 scenes, not the 2 asked for."
        ),
    }
    assert len(llm_env.completions()) == 4
