"""A real `qcluster` process takes the jobs from the broker and does them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import BRIEF, api_client_for
from tests.media import probe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _poll_job(api: APIClient, status_url: str, done_status: str) -> list[dict[str, Any]]:
    """Poll every 0.2 s, as a client would, until the job ends; return every answer."""
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answers.append(api.get(status_url).json())
        if answers[-1]["status"] in (done_status, "FAILED"):
            return answers
        time.sleep(0.2)
    raise AssertionError(f"The job did not end in 120 s; last status: {answers[-1]}")


def test_a_worker_process_writes_the_script_and_renders_the_video(
    alice: Any, qcluster: subprocess.Popen[bytes], media_root: Path, tmp_path: Path
) -> None:
    api = api_client_for(alice)
    project = api.post("/api/video-creation/projects", BRIEF, format="json").json()
    base = f"/api/video-creation/projects/{project['id']}"

    assert api.post(f"{base}/script").status_code == 202
    script_answers = _poll_job(api, f"{base}/status", "DRAFT")
    written = script_answers[-1]
    assert written["status"] == "DRAFT", written["error"]
    assert len(written["scriptData"]["scenes"]) == BRIEF["sceneCount"]

    assert api.post(f"{base}/render").status_code == 202
    render_answers = _poll_job(api, f"{base}/status", "COMPLETED")
    finished = render_answers[-1]
    assert finished["status"] == "COMPLETED", finished["error"]
    assert finished["progress"] == 100

    during = [answer["progress"] for answer in render_answers if answer["status"] == "RENDERING"]
    assert during == sorted(during)
    assert len({value for value in during if 0 < value < 100}) >= 2, during
    download = api.get(finished["videoUrl"])
    saved = tmp_path / "video.mp4"
    saved.write_bytes(b"".join(download.streaming_content))
    assert probe(saved).seconds == pytest.approx(
        BRIEF["sceneCount"] * BRIEF["secondsPerScene"], abs=0.3
    )
    assert qcluster.poll() is None
