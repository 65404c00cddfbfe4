"""A running job shows the server's estimate of the time left, counted down between status updates.

The status object's `estimatedSecondsRemaining` comes from the server; these
tests put the value they need into the real status answers (`page.route`), so
that each one shows a chosen estimate. The job itself is played through the
product's write path (`lifecycle.claim`, `progress.write`), without a worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models import Q
from playwright.sync_api import Page, Route, expect

from projects import lifecycle, progress
from projects.models import EventKind, Step, VideoProject
from tests.e2e.conftest import shot
from tests.e2e.test_creator_page import BRIEF_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "worker-1"
# The countdown sits beside Elapsed, outside every region a screen reader announces.
IN_A_LIVE_REGION = (
    "node => node.closest('[aria-live], [role=status], [role=log], [role=alert]') !== null"
)


@pytest.fixture
def estimate(signed_in: Page) -> Iterator[dict[str, int | None]]:
    """Every status answer carries `estimate["seconds"]`, as the test has set it when it passes."""
    chosen: dict[str, int | None] = {"seconds": None}

    def answer(route: Route) -> None:
        response = route.fetch()
        if response.status != 200:  # a 304 has no body to change
            route.fulfill(response=response)
            return
        status = response.json() | {"estimatedSecondsRemaining": chosen["seconds"]}
        route.fulfill(response=response, json=status)

    signed_in.route("**/status", answer)
    yield chosen
    # A poll still on its way when the page closes would fail the test.
    signed_in.unroute_all(behavior="ignoreErrors")


def running_job(owner: Any, title: str) -> VideoProject:
    project = lifecycle.create_project(owner, {"title": title, "brief": BRIEF_TEXT})
    lifecycle.start_job(project, Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    return project


def report(project: VideoProject, percent: int, message: str) -> None:
    """The worker's progress: a new version, so the next status answer is a new status object."""
    progress.write(
        project.pk,
        expect=Q(lease_owner=WORKER),
        fields={"progress": percent, "progress_message": message},
        events=[(EventKind.PROGRESS, {})],
    )


def continue_the_job(page: Page) -> None:
    page.reload()
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()
    expect(page.locator("#job-panel")).to_be_visible()


def test_a_running_job_counts_the_time_left_down_until_the_server_says_more(
    signed_in: Page, alice: Any, estimate: dict[str, int | None]
) -> None:
    page = signed_in
    estimate["seconds"] = 42
    project = running_job(alice, "Night train")

    continue_the_job(page)

    remaining = page.locator("#job-remaining")
    expect(remaining).to_have_text("about 40 s left")
    expect(page.locator(".project-item", has_text="Night train")).to_contain_text("about 40 s left")
    assert not remaining.evaluate(IN_A_LIVE_REGION)
    shot(page, "time-left-40-s")
    expect(remaining).to_have_text("about 35 s left", timeout=10_000)

    estimate["seconds"] = 3700
    report(project, 30, "Writing scene 2 of 4")
    expect(page.locator("#job-message")).to_have_text("Writing scene 2 of 4")
    expect(remaining).to_have_text("about 1 h 2 min left")

    estimate["seconds"] = None
    report(project, 60, "Writing scene 3 of 4")
    expect(page.locator("#job-message")).to_have_text("Writing scene 3 of 4")
    expect(remaining).to_be_hidden()
    expect(page.locator("#job-panel")).not_to_contain_text(" left")


def test_the_countdown_stops_at_a_few_seconds(
    signed_in: Page, alice: Any, estimate: dict[str, int | None]
) -> None:
    page = signed_in
    page.clock.install()
    estimate["seconds"] = 6
    running_job(alice, "Almost there")

    continue_the_job(page)
    remaining = page.locator("#job-remaining")
    expect(remaining).to_have_text("about 5 s left")
    page.clock.fast_forward("01:00")

    expect(remaining).to_have_text("a few seconds left")


def test_a_job_waiting_for_a_worker_shows_the_servers_message_and_no_time_left(
    signed_in: Page, alice: Any, charlie: Any, estimate: dict[str, int | None]
) -> None:
    page = signed_in
    estimate["seconds"] = None
    for title in ("First in line", "Second in line"):
        queued = lifecycle.create_project(charlie, {"title": title, "brief": BRIEF_TEXT})
        lifecycle.start_job(queued, Step.SCRIPT)
    project = lifecycle.create_project(alice, {"title": "Third in line", "brief": BRIEF_TEXT})
    lifecycle.start_job(project, Step.SCRIPT)  # no worker: it stays in line

    continue_the_job(page)
    # The page keeps the ETag of the status answer it last applied.
    page.wait_for_function("() => window.videocreation.state.etag !== null")

    expect(page.locator("#job-message")).to_have_text(
        "Waiting for a worker — 2 jobs ahead of yours"
    )
    expect(page.locator("#job-percent")).to_have_text("0%")
    expect(page.locator("#job-remaining")).to_be_hidden()
    expect(page.locator("#job-panel")).not_to_contain_text(" left")
    shot(page, "time-left-waiting")
