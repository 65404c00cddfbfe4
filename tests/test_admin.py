from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import Q
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from projects import lifecycle, progress
from projects.admin import EVENT_HISTORY_LIMIT
from projects.models import EventKind, Status, Step, VideoProject
from tests.conftest import SCRIPT, events_of

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:projects_videoproject_changelist")


def change_url(project: VideoProject) -> str:
    return reverse("admin:projects_videoproject_change", args=[project.pk])


def reload(project: VideoProject) -> VideoProject:
    return VideoProject.objects.get(pk=project.pk)


@pytest.fixture
def staff(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", password="root-password-1")


@pytest.fixture
def admin_browser(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def running(project: VideoProject, step: Step = Step.SCRIPT) -> VideoProject:
    started = lifecycle.start_job(project, step)
    assert lifecycle.claim(started.pk, step, "worker-1") is not None
    return reload(started)


def failed(project: VideoProject, step: Step = Step.SCRIPT) -> VideoProject:
    running(project, step)
    assert lifecycle.fail(project.pk, "worker-1", "engine_error", "The engine broke.")
    return reload(project)


def run_action(client: Client, action: str, *projects: VideoProject) -> list[tuple[str, str]]:
    """Post an action as the changelist form does; the messages the redirected page shows."""
    response = client.post(
        CHANGELIST,
        {"action": action, "index": "0", "_selected_action": [str(p.pk) for p in projects]},
        follow=True,
    )
    assert response.redirect_chain == [(CHANGELIST, 302)], response.content[:500]
    return [(message.level_tag, message.message) for message in response.context["messages"]]


# --- the list -------------------------------------------------------------------


def test_the_changelist_shows_each_project_with_its_progress_bar_and_step(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project(title="Lighthouses"))
    progress.write(
        project.pk,
        expect=Q(),
        fields={"progress": 45, "completed_steps": 2, "total_steps": 5},
        events=[(EventKind.PROGRESS, {})],
    )

    response = admin_browser.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Lighthouses" in html
    assert '<progress max="100" value="45"' in html
    assert "45%" in html
    assert "script 2/5" in html
    assert "Writing the script" in html
    assert "alice" in html


def test_the_status_filter_narrows_the_list(admin_browser: Client, make_project: Any) -> None:
    make_project(title="Still a draft")
    failed(make_project(title="Broke in the night"))

    response = admin_browser.get(CHANGELIST, {"status__exact": Status.FAILED})

    assert response.status_code == 200
    assert [p.title for p in response.context["cl"].result_list] == ["Broke in the night"]


def test_the_owner_filter_narrows_the_list(
    admin_browser: Client, make_project: Any, charlie: User
) -> None:
    make_project(title="Alice's film")
    make_project(owner=charlie, title="Charlie's film")

    response = admin_browser.get(CHANGELIST, {"owner__id__exact": charlie.pk})

    assert [p.title for p in response.context["cl"].result_list] == ["Charlie's film"]


def test_search_finds_projects_by_title(admin_browser: Client, make_project: Any) -> None:
    make_project(title="Night trains of Europe")
    make_project(title="Lighthouses of Brittany")

    response = admin_browser.get(CHANGELIST, {"q": "lighthouse"})

    assert [p.title for p in response.context["cl"].result_list] == ["Lighthouses of Brittany"]


def test_the_newest_project_comes_first(admin_browser: Client, make_project: Any) -> None:
    make_project(title="First")
    make_project(title="Second")

    response = admin_browser.get(CHANGELIST)

    assert [p.title for p in response.context["cl"].result_list] == ["Second", "First"]


def test_the_changelist_does_not_query_once_per_project(
    admin_browser: Client, make_project: Any, django_user_model: type[User]
) -> None:
    make_project()
    with CaptureQueriesContext(connection) as one_project:
        admin_browser.get(CHANGELIST)
    for n in range(5):
        owner = django_user_model.objects.create_user(f"owner-{n}")
        make_project(owner=owner, title=f"Film {n}")

    with CaptureQueriesContext(connection) as six_projects:
        admin_browser.get(CHANGELIST)

    assert len(six_projects) == len(one_project)


# --- the project page -----------------------------------------------------------


def test_the_change_page_shows_the_event_history(admin_browser: Client, make_project: Any) -> None:
    project = failed(make_project())

    response = admin_browser.get(change_url(project))

    assert response.status_code == 200
    html = response.content.decode()
    assert f"The last {project.version} of {project.version} events, newest first." in html
    assert "Picked up by a worker" in html
    assert "The engine broke." in html
    newest, oldest = f"<td>{project.version}</td>", "<td>1</td>"
    assert html.index(newest) < html.index(oldest)


def test_the_event_history_shows_only_the_last_200_events(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()
    progress.write(
        project.pk,
        expect=Q(),
        fields={},
        events=[(EventKind.LOG, {"line": f"line {n}"}) for n in range(EVENT_HISTORY_LIMIT + 50)],
    )

    html = admin_browser.get(change_url(project)).content.decode()

    assert f"The last {EVENT_HISTORY_LIMIT} of {EVENT_HISTORY_LIMIT + 51} events" in html
    assert html.count("<tr><td>") == EVENT_HISTORY_LIMIT
    assert "line 249" in html
    assert "line 49" not in html


def test_the_change_page_has_no_inputs_and_no_save_button(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()

    html = admin_browser.get(change_url(project)).content.decode()

    assert 'name="_save"' not in html
    assert 'name="status"' not in html
    assert 'name="title"' not in html


def test_the_status_cannot_be_changed_by_posting_the_change_form(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()

    response = admin_browser.post(
        change_url(project),
        {"status": Status.COMPLETED, "progress": "100", "title": "Changed", "_save": "Save"},
    )

    assert response.status_code == 403
    after = reload(project)
    assert after.status == Status.DRAFT
    assert after.title == project.title
    assert after.version == project.version


def test_projects_cannot_be_added_or_deleted_through_the_admin(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()

    assert admin_browser.get(reverse("admin:projects_videoproject_add")).status_code == 403
    delete = reverse("admin:projects_videoproject_delete", args=[project.pk])
    assert admin_browser.post(delete, {"post": "yes"}).status_code == 403
    assert VideoProject.objects.filter(pk=project.pk).exists()


# --- the actions ----------------------------------------------------------------


def test_the_cancel_action_goes_through_the_lifecycle(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project())

    messages = run_action(admin_browser, "cancel_jobs", project)

    after = reload(project)
    assert after.status == Status.DRAFT
    assert after.progress_message == "Cancelled"
    last = events_of(after)[-1]
    assert (last.kind, last.seq) == (EventKind.STATUS, after.version)
    assert after.version == project.version + 1
    assert messages == [("success", "1 project cancelled.")]


def test_the_cancel_action_warns_for_a_project_with_nothing_running(
    admin_browser: Client, make_project: Any
) -> None:
    idle = make_project(title="Idle draft")
    busy = running(make_project(title="Busy one"))

    messages = run_action(admin_browser, "cancel_jobs", idle, busy)

    assert reload(idle).version == idle.version
    assert reload(busy).status == Status.DRAFT
    assert ("warning", "“Idle draft” was not cancelled: There is no running job to cancel.") in (
        messages
    )
    assert ("success", "1 project cancelled.") in messages


@pytest.mark.parametrize(
    ("step", "status"),
    [(Step.SCRIPT, Status.GENERATING_SCRIPT), (Step.RENDER, Status.RENDERING)],
)
def test_retry_restarts_a_failed_projects_last_job(
    admin_browser: Client, scripted_project: VideoProject, step: Step, status: Status
) -> None:
    project = failed(scripted_project, step)
    assert project.status == Status.FAILED

    messages = run_action(admin_browser, "retry_jobs", project)

    after = reload(project)
    assert after.status == status
    assert after.current_step == step
    assert after.attempt == 1
    assert after.error_code == ""
    assert events_of(after)[-1].seq == after.version
    assert messages == [("success", "1 project restarted.")]


def test_retry_refuses_a_project_that_has_not_failed(
    admin_browser: Client, make_project: Any
) -> None:
    draft = make_project(title="Quiet draft")
    busy = running(make_project(title="Busy one"))

    messages = run_action(admin_browser, "retry_jobs", draft, busy)

    assert reload(draft).status == Status.DRAFT
    assert reload(draft).version == draft.version
    assert reload(busy).version == busy.version
    assert (
        "warning",
        "“Quiet draft” was not restarted: Only a failed project can be retried; this one is Draft.",
    ) in messages
    assert (
        "warning",
        "“Busy one” was not restarted: "
        "Only a failed project can be retried; this one is Writing the script.",
    ) in messages
    assert ("success", "0 projects restarted.") in messages


def test_mark_notified_sets_notified_and_is_idempotent(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project())
    assert lifecycle.finish_script(project.pk, "worker-1", SCRIPT)
    finished = reload(project)
    assert finished.notified is False

    first = run_action(admin_browser, "mark_notified", finished)
    told = reload(finished)
    second = run_action(admin_browser, "mark_notified", told)

    assert told.notified is True
    assert told.version == finished.version + 1
    assert reload(told).version == told.version
    assert first == second == [("success", "1 project marked notified.")]


def test_mark_notified_refuses_a_running_project(admin_browser: Client, make_project: Any) -> None:
    project = running(make_project(title="Still rendering"))

    messages = run_action(admin_browser, "mark_notified", project)

    assert reload(project).notified is False
    assert (
        "warning",
        "“Still rendering” was not marked notified: "
        "The job is still running; there is nothing to be told yet.",
    ) in messages


def test_a_staff_user_without_change_permission_sees_projects_but_no_actions(
    django_user_model: type[User], make_project: Any
) -> None:
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_videoproject"))
    client = Client()
    client.force_login(viewer)
    project = running(make_project())

    response = client.get(CHANGELIST)
    client.post(
        CHANGELIST, {"action": "cancel_jobs", "index": "0", "_selected_action": [str(project.pk)]}
    )

    assert response.status_code == 200
    assert "cancel_jobs" not in response.content.decode()
    assert reload(project).status == Status.GENERATING_SCRIPT


# --- the rest of the admin ------------------------------------------------------


@pytest.mark.parametrize("model", ["schedule", "success", "failure"])
def test_the_django_q_admin_stays_available(admin_browser: Client, model: str) -> None:
    assert admin_browser.get(f"/admin/django_q/{model}/").status_code == 200


def test_a_non_staff_user_is_redirected_to_the_admin_login(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={CHANGELIST}"
