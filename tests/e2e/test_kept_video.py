"""A person renders again: the previous video stays on the page until the new one is ready."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
from playwright.sync_api import Page, expect

from projects import lifecycle
from projects.models import Step, VideoProject
from tests.conftest import SCRIPT
from tests.e2e.conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def finished_project(owner: Any, media_root: Path) -> VideoProject:
    """A project whose first render is done (a real, tiny MP4), without a worker."""
    project = lifecycle.create_project(owner, {"title": "Kept", "brief": "A blue screen, kept."})
    lifecycle.edit_script(project, SCRIPT)
    lifecycle.start_job(project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-1")
    name = f"videos/{project.pk}/0123456789ab.mp4"
    (media_root / name).parent.mkdir(parents=True)
    blue_second = ["-f", "lavfi", "-i", "color=c=blue:s=64x36:d=1", "-pix_fmt", "yuv420p"]
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", *blue_second, str(media_root / name)], check=True)
    assert lifecycle.finish_render(project.pk, "worker-1", name)
    return VideoProject.objects.get(pk=project.pk)


def test_the_previous_video_plays_under_the_bar_and_stays_after_a_cancel(
    signed_in: Page, alice: Any, media_root: Path
) -> None:
    page = signed_in
    project = finished_project(alice, media_root)
    previous = project.video_url
    lifecycle.start_job(project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "worker-2")

    page.reload()
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()

    under_bar = page.locator("#job-previous")
    expect(page.locator("#job-panel")).to_be_visible()
    expect(under_bar).to_be_visible()
    expect(under_bar).to_contain_text("Your previous video — it stays until the new one is ready")
    expect(under_bar.locator("video")).to_have_attribute("src", previous)
    page.wait_for_function("document.querySelector('#job-previous video').readyState >= 1")
    shot(page, "kept-01-previous-under-the-bar")

    lifecycle.cancel(project)

    in_review = page.locator("#review-previous")
    expect(page.locator("#review")).to_be_visible()
    expect(in_review).to_be_visible()
    expect(in_review.locator("video")).to_have_attribute("src", previous)
    expect(in_review.get_by_role("link", name="Download it")).to_have_attribute("href", previous)
    expect(page.locator("#job-previous")).to_be_hidden()
    shot(page, "kept-02-previous-after-cancel")
