"""A person uses the creator page: brief, script, review, render, watch; leaves, comes back."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from projects import lifecycle
from projects.models import Status, Step, VideoProject
from tests.e2e.conftest import PHONE, shot
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BRIEF_TEXT = (
    "Sleepers leave Vienna at dusk. Passengers share stories in the dining car. "
    "By morning the train reaches the sea."
)


def fill_brief(page: Page, *, title: str, brief: str, scenes: int, seconds: int) -> None:
    form = page.locator("#brief-form")
    form.locator("[name=title]").fill(title)
    form.locator("[name=brief]").fill(brief)
    form.locator("[name=sceneCount]").fill(str(scenes))
    form.locator("[name=secondsPerScene]").fill(str(seconds))


def bar_value(page: Page) -> int:
    value = page.locator("#job-panel [role=progressbar]").get_attribute("aria-valuenow")
    return int(value or 0)


def watch_render(page: Page, *, reload_mid_job: bool) -> set[int]:
    """Read the bar until the video is shown; optionally leave (reload) half way and come back."""
    seen: set[int] = set()
    reloaded = not reload_mid_job
    deadline = time.monotonic() + 120
    while not page.locator("#watch").is_visible():
        assert time.monotonic() < deadline, f"The video never showed; the bar went {sorted(seen)}"
        value = bar_value(page) if page.locator("#job-panel").is_visible() else 0
        if 0 < value < 100:
            seen.add(value)
        if seen and not reloaded:
            shot(page, "04-rendering")
            page.reload()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("unfinished video project")
            shot(page, "05-resume-dialog")
            dialog.get_by_role("button", name="Continue").click()
            expect(page.locator("#job-panel")).to_be_visible()
            reloaded = True
        page.wait_for_timeout(50)
    return seen


def test_a_person_makes_a_video_leaves_mid_render_and_comes_back(
    signed_in: Page, qcluster: Any
) -> None:
    page = signed_in
    shot(page, "01-brief")
    fill_brief(page, title="Night trains", brief=BRIEF_TEXT, scenes=4, seconds=4)
    page.get_by_role("button", name="Write the script").click()

    review = page.locator("#review")
    expect(review).to_be_visible(timeout=60_000)
    expect(page.locator("#toasts .toast")).to_contain_text("script")
    shot(page, "02-review")
    project = VideoProject.objects.get(title="Night trains")
    assert project.status == Status.DRAFT
    wait_for(lambda: VideoProject.objects.get(pk=project.pk).notified, "the page to post notified")

    review.locator("textarea").first.fill("An edited opening line.")
    page.get_by_role("button", name="Render video").click()
    expect(page.locator("#job-panel")).to_be_visible()
    seen = watch_render(page, reload_mid_job=True)

    assert len(seen) >= 2, f"The bar showed {sorted(seen)} between 0 and 100"
    video = page.locator("#watch video")
    page.wait_for_function("document.querySelector('#watch video').readyState >= 1")
    assert video.evaluate("v => v.duration") == pytest.approx(16, abs=0.5)
    expect(page.get_by_role("link", name="Download video")).to_be_visible()
    ready_toasts = page.locator("#toasts .toast", has_text="video is ready")
    expect(ready_toasts).to_have_count(1)
    shot(page, "06-watch")
    project.refresh_from_db()
    assert project.status == Status.COMPLETED
    assert project.script_data["scenes"][0]["narration"] == "An edited opening line."
    wait_for(lambda: VideoProject.objects.get(pk=project.pk).notified, "the page to post notified")

    page.reload()
    page.wait_for_load_state("networkidle")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator("#toasts .toast")).to_have_count(0)
    shot(page, "07-after-reload")


def test_a_job_that_finished_while_away_is_announced_once(signed_in: Page, alice: Any) -> None:
    page = signed_in
    project = lifecycle.create_project(alice, {"title": "Away", "brief": BRIEF_TEXT})
    lifecycle.start_job(project, Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, "worker-1")
    lifecycle.fail(project.pk, "worker-1", "engine_error", "The renderer ran out of disk space.")

    page.reload()

    expect(page.locator("#toasts .toast")).to_have_count(1)
    expect(page.locator("#toasts .toast")).to_contain_text("ran out of disk space")
    shot(page, "08-announced-failure")
    wait_for(lambda: VideoProject.objects.get(pk=project.pk).notified, "the page to post notified")
    page.reload()
    page.wait_for_load_state("networkidle")
    expect(page.locator("#toasts .toast")).to_have_count(0)


def test_the_brief_shows_the_apis_field_errors(signed_in: Page) -> None:
    page = signed_in
    fill_brief(page, title="Short", brief="too short", scenes=2, seconds=2)

    page.get_by_role("button", name="Write the script").click()

    error = page.locator('.field-error[data-field="brief"]')
    expect(error).to_contain_text("at least 10 characters")
    assert VideoProject.objects.count() == 0
    shot(page, "09-field-errors")


def test_new_project_leaves_the_old_one_listed(signed_in: Page, alice: Any) -> None:
    page = signed_in
    lifecycle.create_project(alice, {"title": "An old draft", "brief": BRIEF_TEXT})

    page.reload()
    page.get_by_role("dialog").get_by_role("button", name="New project").click()

    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator("#brief-form [name=title]")).to_have_value("")
    expect(page.locator("#projects-list")).to_contain_text("An old draft")


def test_the_page_fits_a_phone(signed_in: Page) -> None:
    page = signed_in
    page.set_viewport_size(PHONE)
    page.reload()

    width = page.evaluate("document.documentElement.scrollWidth")

    assert width <= PHONE["width"]
    shot(page, "10-phone-brief")


def test_a_lost_connection_keeps_polling_and_cancel_stops_the_job(
    signed_in: Page, alice: Any
) -> None:
    page = signed_in
    project = lifecycle.create_project(alice, {"title": "Waiting", "brief": BRIEF_TEXT})
    lifecycle.start_job(project, Step.SCRIPT)  # no worker: it stays queued
    page.reload()
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()
    expect(page.locator("#job-panel")).to_be_visible()
    expect(page).to_have_title("(0%) Writing the script — videocreation")

    page.route("**/status", lambda route: route.abort())
    expect(page.locator("#connection-note")).to_be_visible()
    shot(page, "11-reconnecting")
    page.unroute("**/status")
    expect(page.locator("#connection-note")).to_be_hidden()

    page.get_by_role("button", name="Cancel").click()
    wait_for(
        lambda: VideoProject.objects.get(pk=project.pk).status == Status.DRAFT,
        "the job to be cancelled",
    )
    expect(page.locator("#job-panel")).to_be_hidden()
