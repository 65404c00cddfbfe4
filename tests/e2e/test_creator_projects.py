"""Many projects at once: every job live on "Your projects" over one connection, a kinder resume
dialog, delete and duplicate.

The live tests run against uvicorn (`asgi_server`), the only test server that streams, and
play the worker through the product's write path (`lifecycle.claim`, `progress.write`,
`lifecycle.finish_script`), so each step happens when the test is ready to watch for it.
The others run on `live_server`, where the page polls.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.db.models import Q
from playwright.sync_api import Locator, Page, Response, expect

from projects import lifecycle, progress
from projects.models import EventKind, Status, Step, VideoProject
from tests.conftest import SCRIPT
from tests.e2e.conftest import DESKTOP, PHONE, shot
from tests.e2e.test_creator_page import BRIEF_TEXT, fill_brief
from tests.e2e.test_creator_sse import Requests
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "worker-1"
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
ALL_EVENTS = "/api/video-creation/events"
ONE_PROJECTS_EVENTS = re.compile(r"/projects/[^/]+/events$")

# Kept in the page: every width each listed project's bar has shown, by project id.
RECORD_BARS = """() => {
  const list = document.getElementById("projects-list");
  const seen = (window.seenBars = {});
  const read = () => {
    for (const row of list.querySelectorAll(".project-row")) {
      const fill = row.querySelector(".mini-bar > span");
      if (!fill) continue;
      const widths = (seen[row.dataset.id] = seen[row.dataset.id] || []);
      if (widths[widths.length - 1] !== fill.style.width) widths.push(fill.style.width);
    }
  };
  new MutationObserver(read).observe(list, { childList: true, subtree: true, attributes: true });
  read();
}"""


def row(page: Page, project: VideoProject) -> Locator:
    return page.locator(f'#projects-list .project-row[data-id="{project.pk}"]')


def report(project: VideoProject, percent: int) -> None:
    """What the worker's reporter writes: a log line and the progress, in one transaction."""
    line = f"{project.title}: {percent}%"
    progress.write(
        project.pk,
        expect=Q(lease_owner=WORKER),
        fields={"progress": percent, "progress_message": line},
        events=[(EventKind.LOG, {"lines": [line], "line": line}), (EventKind.PROGRESS, {})],
    )


def start_from_the_page(page: Page, title: str) -> VideoProject:
    fill_brief(page, title=title, brief=BRIEF_TEXT, scenes=2, seconds=2)
    page.get_by_role("button", name="Write the script").click()
    expect(page.locator("#job-panel")).to_be_visible()
    expect(page.locator("#job-progress")).to_be_in_viewport()
    return VideoProject.objects.get(title=title)


def loaded(page: Page) -> None:
    """Reload and wait until the page has drawn the list and asked (or not) about resuming."""
    page.reload()
    expect(page.locator("#creator")).to_have_attribute("data-loaded", "true")


def dismissed(*projects: VideoProject) -> bool:
    return all(VideoProject.objects.get(pk=project.pk).resume_dismissed for project in projects)


# --- every job live, over one connection ---------------------------------------------------


@VIEWPORTS
def test_three_jobs_move_on_the_list_over_one_connection_and_each_end_is_told_once(
    asgi_signed_in: Page, viewport: dict[str, int]
) -> None:
    page = asgi_signed_in
    page.set_viewport_size(viewport)
    size = viewport["width"]
    requests = Requests(page)
    loaded(page)

    trains = []
    for number in (1, 2, 3):
        trains.append(start_from_the_page(page, f"Train {number}"))
        if number < 3:
            page.locator("#new-video-button").click()
    first, second, third = trains
    expect(page.locator("#workspace-title")).to_have_text("Train 3")
    page.evaluate(RECORD_BARS)
    shot(page, f"projects-01-three-jobs-started-{size}")

    for train in trains:
        lifecycle.claim(train.pk, Step.SCRIPT, WORKER)
    for percent in (30, 60):
        for train in trains:
            report(train, percent)
        for train in trains:
            expect(row(page, train).locator(".project-meta")).to_contain_text(f"{percent}%")
            expect(row(page, train).locator(".mini-bar > span")).to_have_attribute(
                "style", f"width: {percent}%"
            )
    expect(page.locator("#job-percent")).to_have_text("60%")  # the open one, from the same stream
    expect(page.locator("#job-log .log-line")).to_have_text(
        ["Picked up by a worker", "Train 3: 30%", "Train 3: 60%"]
    )
    shot(page, f"projects-02-three-bars-moving-{size}")
    bars = page.evaluate("window.seenBars")
    for train in trains:
        moving = [width for width in bars[str(train.pk)] if width not in ("0%", "100%")]
        assert {"30%", "60%"} <= set(moving), f"{train.title}'s bar showed {bars[str(train.pk)]}"

    lifecycle.finish_script(first.pk, WORKER, SCRIPT)  # while Train 3 is open

    told = page.locator("#toasts .toast", has_text="Train 1")
    expect(told).to_have_count(1)
    expect(told).to_contain_text("Your script is ready")
    expect(told.get_by_role("button", name="Open")).to_be_visible()
    wait_for(lambda: VideoProject.objects.get(pk=first.pk).notified, "the page to post notified")
    expect(row(page, first).locator(".badge")).to_have_text("Script ready")
    expect(row(page, first).locator(".project-item")).not_to_contain_text("null")
    expect(row(page, first).locator(".mini-bar")).to_have_count(0)
    expect(page.locator("#workspace-title")).to_have_text("Train 3")
    shot(page, f"projects-03-a-job-ended-elsewhere-{size}")

    lifecycle.finish_script(second.pk, WORKER, SCRIPT)
    report(third, 90)
    expect(page.locator("#toasts .toast", has_text="Train 2")).to_have_count(1)
    expect(page.locator("#job-percent")).to_have_text("90%")
    expect(told).to_have_count(1)  # once, whatever came after

    assert requests.count(ALL_EVENTS) == 1, f"One connection for everything: {requests.paths}"
    assert not [path for path in requests.paths if ONE_PROJECTS_EVENTS.search(path)]
    assert requests.count("/status") == 0, f"It polled while the stream worked: {requests.paths}"

    loaded(page)  # told once: not again after a reload
    expect(page.locator("#toasts .toast", has_text="Train 1")).to_have_count(0)
    shot(page, f"projects-04-after-reload-{size}")


def test_the_list_falls_back_to_polling_when_the_stream_fails(asgi_signed_in: Page) -> None:
    page = asgi_signed_in
    requests = Requests(page)
    page.route(f"**{ALL_EVENTS}*", lambda route: route.abort())
    loaded(page)
    first = start_from_the_page(page, "Train 1")
    page.locator("#new-video-button").click()
    second = start_from_the_page(page, "Train 2")
    expect(page.locator("#connection-note")).to_contain_text("Live updates unavailable")

    lifecycle.claim(first.pk, Step.SCRIPT, WORKER)
    report(first, 45)  # not the open project: only the list's poll can show it
    expect(row(page, first).locator(".project-meta")).to_contain_text("45%")
    lifecycle.claim(second.pk, Step.SCRIPT, WORKER)
    report(second, 20)
    expect(page.locator("#job-percent")).to_have_text("20%")
    assert requests.count(ALL_EVENTS) >= 1
    shot(page, "projects-05-list-polled-after-the-stream-failed")


# --- the resume dialog -----------------------------------------------------------------------


def drafts(owner: User) -> list[VideoProject]:
    running = lifecycle.create_project(owner, {"title": "Rendering trains", "brief": BRIEF_TEXT})
    running = lifecycle.edit_script(running, SCRIPT)
    lifecycle.start_job(running, Step.RENDER)
    return [
        lifecycle.create_project(owner, {"title": title, "brief": BRIEF_TEXT})
        for title in ("Harbour at dawn", "Mountain pass")
    ] + [running]


@VIEWPORTS
def test_not_now_keeps_the_dialog_away_in_every_tab_until_a_project_changes(
    signed_in: Page, alice: User, viewport: dict[str, int]
) -> None:
    page = signed_in
    page.set_viewport_size(viewport)
    size = viewport["width"]
    projects = drafts(alice)

    loaded(page)
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("3 unfinished video projects")
    for project in projects:
        expect(dialog.get_by_role("button", name=f"Continue “{project.title}”")).to_be_visible()
    expect(dialog).to_contain_text("Rendering, 0%")
    assert page.locator("#resume-project").evaluate("list => list.scrollWidth <= list.clientWidth")
    shot(page, f"projects-06-every-unfinished-project-{size}")

    dialog.get_by_role("button", name="Not now").click()
    expect(dialog).to_have_count(0)
    wait_for(lambda: dismissed(*projects), "every offered project to be dismissed")

    loaded(page)
    expect(page.get_by_role("dialog")).to_have_count(0)
    second_tab = page.context.new_page()
    second_tab.goto("/")
    expect(second_tab.locator("#creator")).to_have_attribute("data-loaded", "true")
    expect(second_tab.get_by_role("dialog")).to_have_count(0)
    expect(second_tab.locator("#projects-list .project-row")).to_have_count(3)
    shot(second_tab, f"projects-07-second-tab-no-dialog-{size}")
    second_tab.close()

    harbour = lifecycle.edit_brief(projects[0], {"style": "misty"})  # it changed: ask again
    loaded(page)
    expect(dialog).to_contain_text("an unfinished video project")
    expect(dialog.get_by_role("button", name=re.compile("^Continue"))).to_have_count(1)
    expect(dialog.get_by_role("button", name=f"Continue “{harbour.title}”")).to_be_visible()
    shot(page, f"projects-08-asked-again-after-a-change-{size}")

    dialog.get_by_role("button", name="New project").click()  # says "not now" as well
    expect(page.locator("#brief-title")).to_be_focused()
    wait_for(lambda: dismissed(harbour), "New project to dismiss the project it was offered")
    loaded(page)
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_continue_opens_the_project_it_names(signed_in: Page, alice: User) -> None:
    page = signed_in
    projects = drafts(alice)
    loaded(page)
    page.get_by_role("dialog").get_by_role("button", name="Continue “Mountain pass”").click()
    expect(page.locator("#workspace-title")).to_have_text("Mountain pass")
    assert not dismissed(projects[0]) and not dismissed(projects[1]), "Continue dismisses nothing"


# --- delete and duplicate ---------------------------------------------------------------------


def is_deletion(response: Response) -> bool:
    return response.request.method == "DELETE"


@VIEWPORTS
def test_delete_asks_first_and_duplicate_opens_the_copy(
    signed_in: Page, alice: User, viewport: dict[str, int]
) -> None:
    page = signed_in
    page.set_viewport_size(viewport)
    size = viewport["width"]
    old = lifecycle.edit_script(
        lifecycle.create_project(alice, {"title": "Old draft", "brief": BRIEF_TEXT}), SCRIPT
    )
    busy = lifecycle.edit_script(
        lifecycle.create_project(alice, {"title": "Busy render", "brief": BRIEF_TEXT}), SCRIPT
    )
    lifecycle.start_job(busy, Step.RENDER)
    loaded(page)
    page.get_by_role("dialog").get_by_role("button", name="Not now").click()

    # Duplicate from the list: the copy opens.
    row(page, old).get_by_role("button", name="Duplicate “Old draft”").click()
    expect(page.locator("#workspace-title")).to_have_text("Old draft (copy)")
    copy = VideoProject.objects.get(title="Old draft (copy)")
    assert (copy.status, copy.script_data) == (Status.DRAFT, SCRIPT)
    expect(page.locator("#review")).to_be_visible()
    expect(row(page, copy)).to_be_visible()
    shot(page, f"projects-09-duplicate-opened-{size}")

    # Delete the open project, after saying yes.
    page.get_by_role("button", name="Delete project").click()
    question = page.get_by_role("alertdialog")
    expect(question).to_contain_text("Old draft (copy)")
    shot(page, f"projects-10-delete-asks-{size}")
    question.get_by_role("button", name="Delete").click()
    expect(row(page, copy)).to_have_count(0)
    expect(page.locator("#workspace-title")).to_have_text("New video")
    expect(page.locator("#toasts .toast", has_text="Project deleted")).to_be_visible()
    assert not VideoProject.objects.filter(pk=copy.pk).exists()

    # A running job: the API's refusal, word for word; nothing goes.
    row(page, busy).get_by_role("button", name="Delete “Busy render”").click()
    with page.expect_response(is_deletion) as answer:
        page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    assert answer.value.status == 409
    refusal = page.locator("#toasts .toast-error")
    expect(refusal).to_contain_text(answer.value.json()["detail"])
    expect(row(page, busy)).to_be_visible()
    assert VideoProject.objects.filter(pk=busy.pk).exists()
    shot(page, f"projects-11-delete-refused-while-rendering-{size}")
    refusal.get_by_role("button", name="Dismiss").click()

    # "Keep it" keeps it; then delete it from the list.
    row(page, old).get_by_role("button", name="Delete “Old draft”").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Keep it").click()
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    expect(row(page, old)).to_be_visible()
    row(page, old).get_by_role("button", name="Delete “Old draft”").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    expect(row(page, old)).to_have_count(0)
    wait_for(lambda: not VideoProject.objects.filter(pk=old.pk).exists(), "the draft to go")

    # Duplicate the open, running project: the copy is a draft with its script.
    page.locator("#projects-list .project-item", has_text="Busy render").click()
    expect(page.locator("#job-panel")).to_be_visible()
    page.get_by_role("button", name="Duplicate", exact=True).click()
    expect(page.locator("#workspace-title")).to_have_text("Busy render (copy)")
    expect(page.locator("#review")).to_be_visible()
    assert VideoProject.objects.get(title="Busy render (copy)").status == Status.DRAFT
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    shot(page, f"projects-12-running-project-duplicated-{size}")
