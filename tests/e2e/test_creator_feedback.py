"""The page tells people what happens: live progress, cancels, rewrites, phones, long titles.

Live updates run against uvicorn (`asgi_server`), the only test server that
streams; the rest run on `live_server`, where the page polls. Where no real
worker is needed, the test plays the worker through the product's write path
(`lifecycle.claim`, `progress.write`, `lifecycle.finish_*`), so each step
happens when the test is ready to watch for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
from playwright.sync_api import Page, Response, expect

from projects import lifecycle
from projects.models import Status, Step, VideoProject
from tests.conftest import SCRIPT
from tests.e2e.conftest import DESKTOP, PHONE, shot
from tests.e2e.test_creator_page import BRIEF_TEXT, fill_brief
from tests.e2e.test_creator_sse import FELL_BACK, LIVE_UPDATES, RECORD_JOB, Requests, is_status_poll

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "worker-1"
REWRITTEN = {
    "title": "Night trains, told again",
    "scenes": [
        {"index": 0, "narration": "The platform empties.", "visual": "Platform", "seconds": 2},
        {"index": 1, "narration": "Gulls wake the sleepers.", "visual": "Gulls", "seconds": 2},
    ],
}
# Every message's box against every control outside it: the names of the controls a message covers.
COVERED_CONTROLS = """() => {
  const hit = (a, b) =>
    a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const controls = [...document.querySelectorAll("button, a[href], input, select, textarea, video")]
    .filter((control) => control.getClientRects().length && !control.closest("#toasts"));
  return [...document.querySelectorAll("#toasts .toast")].flatMap((message) => controls
    .filter((control) => hit(message.getBoundingClientRect(), control.getBoundingClientRect()))
    .map((control) => control.id || control.getAttribute("name") || control.textContent.trim()));
}"""
FITS = "element => element.scrollWidth <= element.clientWidth"


def scripted(owner: Any, title: str = "Night trains") -> VideoProject:
    project = lifecycle.create_project(owner, {"title": title, "brief": BRIEF_TEXT})
    return lifecycle.edit_script(project, SCRIPT)


def finish_the_render(project: VideoProject, media_root: Path, name: str = "0123456789ab") -> None:
    """The worker's part of a render: claim it, write a real (tiny) MP4, save it."""
    lifecycle.claim(project.pk, Step.RENDER, WORKER)
    video = f"videos/{project.pk}/{name}.mp4"
    (media_root / video).parent.mkdir(parents=True, exist_ok=True)
    blue_second = ["-f", "lavfi", "-i", "color=c=blue:s=64x36:d=1", "-pix_fmt", "yuv420p"]
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-v", "error", *blue_second, str(media_root / video)], check=True)
    assert lifecycle.finish_render(project.pk, WORKER, video)


def continue_the_project(page: Page, title: str = "") -> None:
    page.reload()
    # One project offered, or this one of many.
    name = f"Continue “{title}”" if title else "Continue"
    page.get_by_role("dialog").get_by_role("button", name=name).click()


def status_of(project: VideoProject) -> str:
    return VideoProject.objects.get(pk=project.pk).status


def assert_no_message_covers_a_control(page: Page) -> None:
    assert page.locator("#toasts").evaluate("node => getComputedStyle(node).position") == "static"
    assert page.evaluate(COVERED_CONTROLS) == []


# --- live updates -----------------------------------------------------------------------


@pytest.mark.worker
def test_live_updates_are_on_by_default_and_the_bar_moves_through_a_render(
    asgi_signed_in: Page, qcluster: Any
) -> None:
    page = asgi_signed_in
    requests = Requests(page)
    page.reload()  # the page opens its one stream, for every project, as it loads
    expect(page.get_by_role("switch", name=LIVE_UPDATES)).to_be_checked()
    shot(page, "feedback-01-live-by-default")
    fill_brief(page, title="Live by default", brief=BRIEF_TEXT, scenes=2, seconds=2)
    page.get_by_role("button", name="Write the script").click()
    expect(page.locator("#review")).to_be_visible(timeout=60_000)

    page.evaluate(RECORD_JOB)
    page.get_by_role("button", name="Render video").click()

    expect(page.locator("#watch")).to_be_visible(timeout=120_000)
    shot(page, "feedback-02-live-render-done")
    moving = sorted({bar for bar, _ in page.evaluate("window.seenJob") if 0 < bar < 100})
    assert len(moving) >= 2, f"The bar showed {moving} between 0 and 100"
    assert requests.count("/events") == 1, "one stream for every job"
    assert requests.count("/status") == 0, f"It polled while the stream worked: {requests.paths}"
    expect(page.locator("#connection-note")).to_be_hidden()


@pytest.mark.worker
def test_when_the_stream_fails_the_page_polls_and_the_bar_still_reaches_done(
    asgi_signed_in: Page, alice: Any, qcluster: Any
) -> None:
    page = asgi_signed_in
    page.route("**/events*", lambda route: route.abort())
    requests = Requests(page)
    scripted(alice, "Polled to the end")
    continue_the_project(page)
    expect(page.locator("#review")).to_be_visible()

    page.get_by_role("button", name="Render video").click()

    expect(page.locator("#connection-note")).to_contain_text(FELL_BACK)
    shot(page, "feedback-03-fell-back-to-polling")
    expect(page.locator("#watch")).to_be_visible(timeout=120_000)
    expect(page.locator("#toasts .toast", has_text="Your video is ready")).to_have_count(1)
    shot(page, "feedback-04-polled-render-done")
    assert requests.count("/events") >= 1
    assert requests.count("/status") >= 1


def test_the_first_status_is_asked_for_at_once_after_a_start(
    signed_in: Page, settings: Any
) -> None:
    page = signed_in
    settings.CREATOR_POLL_MS = 20_000  # a first poll one interval late would miss the deadline
    page.reload()
    fill_brief(page, title="At once", brief=BRIEF_TEXT, scenes=2, seconds=2)

    with page.expect_request(is_status_poll, timeout=5_000):
        page.get_by_role("button", name="Write the script").click()

    expect(page.locator("#job-panel")).to_be_visible()


# --- cancel and rewrite -----------------------------------------------------------------


def test_cancel_asks_nothing_and_says_that_nothing_is_lost(
    signed_in: Page, alice: Any, media_root: Path
) -> None:
    page = signed_in
    questions: list[str] = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    project = scripted(alice, "Stopped twice")
    lifecycle.start_job(project, Step.RENDER)
    finish_the_render(project, media_root)
    lifecycle.start_job(project, Step.RENDER)  # a second render, no worker: it stays queued
    continue_the_project(page)
    expect(page.locator("#job-panel")).to_be_visible()
    shot(page, "feedback-05-render-running")

    page.get_by_role("button", name="Cancel").click()

    rendered = page.locator("#toasts .toast", has_text="Render cancelled — nothing lost")
    expect(rendered).to_be_visible()
    expect(rendered).to_contain_text("Your script and your last video are as they were.")
    expect(rendered).to_be_in_viewport()
    expect(page.locator("#review")).to_be_visible()
    expect(page.locator("#scenes .scene")).to_have_count(2)
    expect(page.locator("#review-previous video")).to_be_visible()
    assert_no_message_covers_a_control(page)
    shot(page, "feedback-06-render-cancelled")
    assert status_of(project) == Status.DRAFT

    page.get_by_role("button", name="Rewrite the script").click()  # nothing edited: no question
    expect(page.locator("#job-panel")).to_be_visible()
    expect(rendered).to_have_count(0)  # the project moved on: the old message went
    page.get_by_role("button", name="Cancel").click()

    script_job = page.locator("#toasts .toast", has_text="Script job cancelled — nothing lost")
    expect(script_job).to_contain_text("Your brief and your last script are as they were.")
    expect(page.locator("#review")).to_be_visible()
    expect(page.locator("#scenes .scene [name=narration]").first).to_have_value(
        SCRIPT["scenes"][0]["narration"]
    )
    shot(page, "feedback-07-script-job-cancelled")
    assert questions == []
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    assert status_of(project) == Status.DRAFT


def test_rewrite_with_unsaved_edits_asks_first(signed_in: Page, alice: Any) -> None:
    page = signed_in
    project = scripted(alice, "Rewritten")
    continue_the_project(page)
    narration = page.locator("#scenes .scene").first.locator("[name=narration]")
    narration.fill("My own opening line.")

    page.get_by_role("button", name="Rewrite the script").click()
    question = page.get_by_role("alertdialog")
    expect(question).to_contain_text("Your changes to the script are not saved")
    shot(page, "feedback-08-rewrite-asks")
    question.get_by_role("button", name="Keep my edits").click()

    expect(question).to_be_hidden()
    expect(narration).to_have_value("My own opening line.")
    expect(page.locator("#review")).to_be_visible()
    assert status_of(project) == Status.DRAFT, "no job started"

    page.get_by_role("button", name="Rewrite the script").click()
    question.get_by_role("button", name="Rewrite anyway").click()

    expect(page.locator("#job-panel")).to_be_visible()
    assert status_of(project) == Status.GENERATING_SCRIPT
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    lifecycle.finish_script(project.pk, WORKER, REWRITTEN)
    expect(page.locator("#review")).to_be_visible()
    expect(narration).to_have_value(REWRITTEN["scenes"][0]["narration"])
    expect(page.locator("#script-title")).to_have_value(REWRITTEN["title"])
    shot(page, "feedback-09-rewritten")


# --- phones, stale messages, long titles, errors -------------------------------------------


def test_on_a_phone_the_bar_is_in_view_after_a_start_and_the_video_when_ready(
    signed_in: Page, alice: Any, media_root: Path
) -> None:
    page = signed_in
    page.set_viewport_size(PHONE)
    for number in range(5):  # a long list below the workspace
        lifecycle.create_project(alice, {"title": f"Older draft {number}", "brief": BRIEF_TEXT})
    project = scripted(alice, "On the phone")
    continue_the_project(page, "On the phone")
    expect(page.locator("#review")).to_be_visible()
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")

    page.get_by_role("button", name="Render video").click()

    expect(page.locator("#job-progress")).to_be_in_viewport(ratio=1)
    shot(page, "feedback-10-phone-bar-in-view")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")  # off to the list
    finish_the_render(project, media_root)

    expect(page.locator("#watch video")).to_be_in_viewport()
    expect(page.locator("#toasts .toast", has_text="Your video is ready")).to_be_visible()
    assert_no_message_covers_a_control(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "feedback-11-phone-video-in-view")


def test_a_video_ready_message_goes_when_its_project_renders_again(
    signed_in: Page, alice: Any, media_root: Path
) -> None:
    page = signed_in
    project = scripted(alice, "Ready while away")
    lifecycle.start_job(project, Step.RENDER)
    finish_the_render(project, media_root)
    page.reload()
    ready = page.locator("#toasts .toast", has_text="Your video is ready")
    expect(ready).to_be_visible()
    expect(ready.get_by_role("button", name="Open")).to_be_visible()
    shot(page, "feedback-12-ready-message")

    page.locator("#projects-list .project-item", has_text="Ready while away").click()
    expect(page.locator("#watch")).to_be_visible()
    page.get_by_role("button", name="Render again").click()

    expect(page.locator("#job-panel")).to_be_visible()
    expect(ready).to_have_count(0)
    shot(page, "feedback-13-ready-message-gone")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_long_title_without_spaces_wraps(
    signed_in: Page, alice: Any, viewport: dict[str, int]
) -> None:
    page = signed_in
    page.set_viewport_size(viewport)
    title = "Nachtzugreise" * 15 + "Wien!"  # 200 characters, no space to break at
    assert len(title) == 200
    lifecycle.create_project(alice, {"title": title, "brief": BRIEF_TEXT})
    page.reload()
    resume = page.locator("#resume-project")
    expect(resume).to_contain_text(title)
    assert resume.evaluate(FITS)
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()

    heading = page.locator("#workspace-title")
    listed = page.locator("#projects-list .project-title")
    expect(heading).to_have_text(title)
    expect(listed).to_have_text(title)
    assert heading.evaluate(FITS), "the heading runs out of its box"
    assert listed.evaluate(FITS), "the list's title runs out of its box"
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    shot(page, f"feedback-14-long-title-{viewport['width']}")


def is_project_creation(response: Response) -> bool:
    request = response.request
    return request.method == "POST" and request.url.endswith("/api/video-creation/projects")


def test_errors_show_the_apis_words_as_they_are(signed_in: Page, alice: Any) -> None:
    page = signed_in
    fill_brief(page, title="", brief=BRIEF_TEXT, scenes=2, seconds=2)

    with page.expect_response(is_project_creation) as answer:
        page.get_by_role("button", name="Write the script").click()

    refused = answer.value.json()
    expect(page.locator("#brief-form [role=alert]")).to_have_text(refused["detail"])
    expect(page.locator('#brief-form .field-error[data-field="title"]')).to_have_text(
        " ".join(refused["fields"]["title"])
    )
    expect(page.locator("#brief-title")).to_have_attribute("aria-invalid", "true")
    shot(page, "feedback-15-brief-error")

    project = scripted(alice, "A scene too short")
    continue_the_project(page)
    seconds = page.locator("#scenes .scene").nth(1).locator("[name=seconds]")
    seconds.fill("0")
    with page.expect_response(lambda response: response.request.method == "PATCH") as answer:
        page.get_by_role("button", name="Save script").click()

    refused = answer.value.json()
    expect(page.locator("#script-form [role=alert]")).to_have_text(refused["detail"])
    beside = page.locator("#scenes .scene").nth(1).locator(".field-error[data-field=seconds]")
    expect(beside).not_to_be_empty()
    expect(seconds).to_have_attribute("aria-invalid", "true")
    shot(page, "feedback-16-scene-error")
    assert VideoProject.objects.get(pk=project.pk).script_data == SCRIPT, "a refused edit"
