"""Live updates: the creator page follows a job over Server-Sent Events, or polls if that fails.

These run against uvicorn (`asgi_server`): pytest-django's `live_server` is a WSGI
server that would hold a stream back until it ends. The first test has a real
worker do the job; the others play the worker themselves, through the same
write path (`lifecycle.claim`, `progress.write`, `lifecycle.finish_script`), so
that each step of the job happens when the test is ready to watch for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db.models import Q
from playwright.sync_api import Page, Request, expect

from projects import lifecycle, progress
from projects.models import EventKind, Step, VideoProject
from tests.conftest import SCRIPT, AsgiServer
from tests.e2e.conftest import shot
from tests.e2e.test_creator_page import BRIEF_TEXT, fill_brief
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LIVE_UPDATES = "Live updates (Server-Sent Events)"
FELL_BACK = "Live updates unavailable"
WORKER = "worker-1"

# Kept in the page: the bar and the number of log lines at each change of the
# job panel while it is on screen, however briefly.
RECORD_JOB = """() => {
  const panel = document.getElementById("job-panel");
  const seen = (window.seenJob = []);
  new MutationObserver(() => {
    if (panel.hidden) return;
    const bar = Number(document.querySelector("#job-progress").getAttribute("aria-valuenow"));
    seen.push([bar, document.querySelectorAll("#job-log .log-line").length]);
  }).observe(panel, { attributes: true, childList: true, subtree: true });
}"""


class Requests:
    """The paths the page asked for, in order."""

    def __init__(self, page: Page) -> None:
        self.paths: list[str] = []
        page.on("request", lambda request: self.paths.append(urlsplit(request.url).path))

    def count(self, ending: str, since: int = 0) -> int:
        return sum(path.endswith(ending) for path in self.paths[since:])


def is_status_poll(request: Request) -> bool:
    return urlsplit(request.url).path.endswith("/status")


def wait_for_status_poll(page: Page) -> None:
    with page.expect_request(is_status_poll, timeout=10_000):
        pass  # the next request for the status, from now on


def logged_lines(project: VideoProject) -> list[str]:
    events = project.events.filter(kind=EventKind.LOG).order_by("seq")
    return [
        line for event in events for line in event.payload.get("lines", [event.payload["line"]])
    ]


def shown_lines(page: Page) -> list[str]:
    return page.locator("#job-log .log-line").all_text_contents()


def write_script(page: Page, title: str) -> VideoProject:
    fill_brief(page, title=title, brief=BRIEF_TEXT, scenes=4, seconds=4)
    page.get_by_role("button", name="Write the script").click()
    expect(page.locator("#job-panel")).to_be_visible()
    return VideoProject.objects.get(title=title)


def report(project: VideoProject, percent: int, line: str) -> None:
    """What the worker's reporter writes: a log line and the progress, in one transaction."""
    progress.write(
        project.pk,
        expect=Q(lease_owner=WORKER),
        fields={"progress": percent, "progress_message": line},
        events=[(EventKind.LOG, {"line": line}), (EventKind.PROGRESS, {})],
    )


def assert_the_end_is_shown_once(page: Page, project: VideoProject) -> None:
    expect(page.locator("#review")).to_be_visible(timeout=60_000)
    expect(page.locator("#toasts .toast")).to_have_count(1)
    expect(page.locator("#toasts .toast")).to_contain_text("Your script is ready")
    wait_for(lambda: VideoProject.objects.get(pk=project.pk).notified, "the page to post notified")
    assert shown_lines(page) == logged_lines(project), "each log line once, in order"
    expect(page.locator("#connection-note")).to_be_hidden()


@pytest.mark.worker
def test_live_updates_follow_a_job_over_the_stream(asgi_signed_in: Page, qcluster: Any) -> None:
    page = asgi_signed_in
    requests = Requests(page)
    page.get_by_role("switch", name=LIVE_UPDATES).check()
    page.reload()  # the page opens its one stream as it loads
    page.evaluate(RECORD_JOB)

    project = write_script(page, "Live night trains")

    assert_the_end_is_shown_once(page, project)
    shot(page, "sse-01-review-after-live-updates")
    job = page.evaluate("window.seenJob")
    moving = sorted({bar for bar, _ in job if 0 < bar < 100})
    assert len(moving) >= 2, f"The bar showed {moving} between 0 and 100"
    assert any(0 < bar < 100 and lines > 0 for bar, lines in job), f"No log mid-job: {job}"
    assert requests.count("/events") >= 1
    assert requests.count("/status") == 0, f"It polled while the stream worked: {requests.paths}"


def test_a_stream_that_fails_falls_back_to_polling(asgi_signed_in: Page) -> None:
    page = asgi_signed_in
    requests = Requests(page)
    page.route("**/events*", lambda route: route.abort())
    page.get_by_role("switch", name=LIVE_UPDATES).check()
    page.reload()  # the page opens its one stream as it loads
    project = write_script(page, "Night trains, polled")

    expect(page.locator("#connection-note")).to_contain_text(FELL_BACK)
    wait_for_status_poll(page)
    assert requests.count("/events") >= 1
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    report(project, 40, "Writing scene 2 of 4")
    expect(page.locator("#job-log .log-line")).to_have_count(2)
    expect(page.locator("#job-percent")).to_have_text("40%")
    shot(page, "sse-02-fell-back-to-polling")
    lifecycle.finish_script(project.pk, WORKER, SCRIPT)

    assert_the_end_is_shown_once(page, project)


@pytest.fixture
def slow_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser reconnects 5 s after a drop: time enough to start the server again."""
    monkeypatch.setenv("SSE_RETRY_MS", "5000")


def test_a_stream_that_drops_resumes_where_it_left_off(
    slow_retry: None, asgi_server: AsgiServer, asgi_signed_in: Page
) -> None:
    page = asgi_signed_in
    requests = Requests(page)
    page.get_by_role("switch", name=LIVE_UPDATES).check()
    project = write_script(page, "Night trains, restarted")
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    expect(page.locator("#job-log .log-line")).to_have_count(1)
    dropped = len(requests.paths)

    asgi_server.stop()  # a deploy: the stream drops
    report(project, 40, "Writing scene 2 of 4")  # while no server is there to tell
    asgi_server.start()

    expect(page.locator("#job-percent")).to_have_text("40%", timeout=20_000)
    expect(page.locator("#job-log .log-line")).to_have_count(2)
    lifecycle.finish_script(project.pk, WORKER, SCRIPT)
    assert_the_end_is_shown_once(page, project)
    assert requests.count("/events", since=dropped) == 1, "EventSource reconnected once"
    assert requests.count("/status") == 0, f"The page fell back to polling: {requests.paths}"


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat every 0.5 s: the page asks about a stream that stays silent for 1 s."""
    monkeypatch.setenv("SSE_HEARTBEAT_SECONDS", "0.5")


def test_a_stream_held_back_falls_back_to_polling(
    quick_heartbeat: None, asgi_signed_in: Page
) -> None:
    page = asgi_signed_in
    # Like a buffering proxy: the stream is never answered, and never fails either.
    page.route("**/events*", lambda route: None)
    page.get_by_role("switch", name=LIVE_UPDATES).check()
    page.reload()  # the page opens its one stream as it loads
    project = write_script(page, "Night trains, held back")

    for _ in range(2):
        wait_for_status_poll(page)  # the page asks about the silent stream…
    expect(page.locator("#connection-note")).to_be_hidden()  # …and nothing was missed
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    report(project, 40, "Writing scene 2 of 4")

    expect(page.locator("#connection-note")).to_contain_text(FELL_BACK)
    expect(page.locator("#job-log .log-line")).to_have_count(2)
    expect(page.locator("#job-percent")).to_have_text("40%")
    lifecycle.finish_script(project.pk, WORKER, SCRIPT)
    assert_the_end_is_shown_once(page, project)


def test_live_updates_are_the_default_and_the_switch_changes_transport_mid_job(
    asgi_signed_in: Page, alice: Any
) -> None:
    page = asgi_signed_in
    switch = page.get_by_role("switch", name=LIVE_UPDATES)
    lines = page.locator("#job-log .log-line")
    project = lifecycle.create_project(alice, {"title": "Switching", "brief": BRIEF_TEXT})
    lifecycle.start_job(project, Step.SCRIPT)
    lifecycle.claim(project.pk, Step.SCRIPT, WORKER)
    requests = Requests(page)
    page.reload()
    with page.expect_request("**/events*"):
        page.get_by_role("dialog").get_by_role("button", name="Continue").click()

    expect(switch).to_be_checked()
    expect(lines).to_have_text(["Picked up by a worker"])

    with page.expect_request(is_status_poll):
        switch.uncheck()
    switched = len(requests.paths)
    expect(lines).to_have_text(["Picked up by a worker"])  # drawn again, once
    report(project, 40, "Writing scene 2 of 4")
    expect(lines).to_have_count(2)
    expect(page.locator("#job-percent")).to_have_text("40%")
    shot(page, "sse-03-switched-to-polling")
    assert requests.count("/events", since=switched) == 0, requests.paths[switched:]

    with page.expect_request("**/events*"):
        switch.check()
    switched = len(requests.paths)
    report(project, 80, "Writing scene 4 of 4")
    expect(lines).to_have_count(3)
    expect(page.locator("#job-percent")).to_have_text("80%")
    lifecycle.finish_script(project.pk, WORKER, SCRIPT)
    assert_the_end_is_shown_once(page, project)
    assert requests.count("/status", since=switched) == 0, requests.paths[switched:]

    switch.uncheck()
    page.reload()
    expect(switch).not_to_be_checked()  # the person's choice, remembered
