from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import Q
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from projects import lifecycle, progress
from projects.admin import EVENTS_PER_PAGE, RECENT_EVENTS
from projects.models import EventKind, ProgressEvent, Status, Step, VideoProject
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


def admin_url(name: str, project: VideoProject) -> str:
    return reverse(f"admin:projects_videoproject_{name}", args=[project.pk])


def with_video(project: VideoProject, media_root: Path) -> VideoProject:
    """The project rendered, as a worker leaves it: its video stored and named."""
    running(project, Step.RENDER)
    name = f"videos/{project.pk}/night-trains-of-europe.mp4"
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(b"\x00\x00\x00\x18ftypmp42 a video" * 100)
    assert lifecycle.finish_render(project.pk, "worker-1", name)
    return reload(project)


def add_log_lines(project: VideoProject, count: int) -> None:
    progress.write(
        project.pk,
        expect=Q(),
        fields={},
        events=[(EventKind.LOG, {"line": f"line {n}"}) for n in range(count)],
    )


def event_seqs(html: str) -> list[int]:
    """The seq of each event row a page shows, top to bottom."""
    return [int(seq) for seq in re.findall(r'<tr class="event-\w+">\s*<td>(\d+)</td>', html)]


def shown_messages(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, message.message) for message in response.context["messages"]]


def history_of(project: VideoProject) -> list[tuple[int, str]]:
    entries = LogEntry.objects.filter(object_id=str(project.pk)).order_by("pk")
    return [(entry.action_flag, entry.get_change_message()) for entry in entries]


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


def test_a_long_title_is_cut_in_the_list_with_the_whole_title_as_its_tooltip(
    admin_browser: Client, make_project: Any
) -> None:
    title = "Nighttrains" * 18 + "Ofeurope"  # 206 characters, no space to wrap at
    make_project(title=title[:200])

    html = admin_browser.get(CHANGELIST).content.decode()

    assert f'<span class="project-title" title="{title[:200]}">{title[:59]}…</span>' in html
    assert "admin_extra/projects.css" in html


def test_the_lists_stylesheet_keeps_a_long_title_inside_its_column(admin_browser: Client) -> None:
    response = admin_browser.get("/static/admin_extra/projects.css")

    assert response.status_code == 200
    css = b"".join(response.streaming_content).decode()

    def rule(selector: str) -> str:
        start = css.index(f"{selector} {{")
        return css[start : css.index("}", start)]

    # The title's column takes only the room the other columns leave...
    assert "max-width: 0" in rule("#result_list .field-list_title")
    # ...and the title is cut with an ellipsis at the column's edge.
    title = rule("#result_list .project-title")
    assert "text-overflow: ellipsis" in title
    assert "overflow: hidden" in title
    assert "white-space: nowrap" in title


# --- the project page -----------------------------------------------------------
def test_the_change_page_shows_the_newest_events_and_links_to_all_of_them(
    admin_browser: Client, make_project: Any
) -> None:
    project = failed(make_project())
    add_log_lines(project, 20)
    total = reload(project).version

    response = admin_browser.get(change_url(project))

    assert response.status_code == 200
    html = response.content.decode()
    assert f"The newest {RECENT_EVENTS} of {total} events." in html
    assert event_seqs(html) == list(range(total, total - RECENT_EVENTS, -1))
    assert f'href="{admin_url("events", project)}"' in html
    assert "line 19" in html
    assert "line 9" not in html


def test_the_script_is_shown_as_a_table_of_its_scenes(
    admin_browser: Client, scripted_project: VideoProject
) -> None:
    html = admin_browser.get(change_url(scripted_project)).content.decode()

    assert "“Night trains of Europe”: 2 scenes, 4 s in all." in html
    table = html[html.index('<table class="project-scenes">') :]
    table = table[: table.index("</table>")]
    headers = re.findall(r'<th scope="col" class="scene-[\w-]+">(\w+)</th>', table)
    assert headers == ["Index", "Narration", "Seconds", "Visual"]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert [re.findall(r"<td>(.*?)</td>", row) for row in rows[1:]] == [
        ["0", "Sleepers leave Vienna at dusk.", "2", "Dusk"],
        ["1", "Morning by the sea.", "2", "Sea"],
    ]


def test_scene_fields_a_script_adds_get_columns_of_their_own(
    admin_browser: Client, make_project: Any
) -> None:
    scenes = [
        {**scene, "title": f"Part {n}", "style": "pastel", "caption": "<b>Hi</b>"}
        for n, scene in enumerate(SCRIPT["scenes"], start=1)
    ]
    project = lifecycle.edit_script(make_project(), {**SCRIPT, "scenes": scenes})

    html = admin_browser.get(change_url(project)).content.decode()

    table = html[html.index('<table class="project-scenes">') :]
    headers = re.findall(r'<th scope="col" class="scene-[\w-]+">(\w+)</th>', table)
    assert headers == ["Index", "Title", "Narration", "Seconds", "Visual", "Style", "Caption"]
    assert "<td>Part 2</td>" in table
    assert "<td>&lt;b&gt;Hi&lt;/b&gt;</td>" in table


def test_a_project_without_a_script_says_so(admin_browser: Client, make_project: Any) -> None:
    html = admin_browser.get(change_url(make_project())).content.decode()

    assert "No script yet." in html
    assert "project-scenes" not in html


# --- the video ------------------------------------------------------------------


def test_the_video_link_plays_the_video_for_staff(
    admin_browser: Client, scripted_project: VideoProject, media_root: Path
) -> None:
    done = with_video(scripted_project, media_root)
    link = admin_url("video", done)

    page = admin_browser.get(change_url(done)).content.decode()
    video = admin_browser.get(link)
    part = admin_browser.get(link, HTTP_RANGE="bytes=4-11")

    assert f'<a href="{link}">{done.video.name}</a> (current)' in page
    assert video.status_code == 200
    assert video["Content-Type"] == "video/mp4"
    assert b"".join(video.streaming_content) == (media_root / done.video.name).read_bytes()
    assert part.status_code == 206
    assert b"".join(part.streaming_content) == b"ftypmp42"


def test_the_video_link_is_not_for_people_outside_the_staff(
    alice: User, scripted_project: VideoProject, media_root: Path
) -> None:
    done = with_video(scripted_project, media_root)
    client = Client()
    client.force_login(alice)  # the owner, but not staff: her video is in the API

    response = client.get(admin_url("video", done))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- the event history ----------------------------------------------------------


def test_the_event_history_is_paged_newest_first(admin_browser: Client, make_project: Any) -> None:
    project = make_project()
    add_log_lines(project, 120)
    url = admin_url("events", project)

    first = admin_browser.get(url)
    second = admin_browser.get(url, {"page": 2})
    last = admin_browser.get(url, {"page": 3})

    assert first.status_code == second.status_code == last.status_code == 200
    first_html, second_html, last_html = (page.content.decode() for page in (first, second, last))
    assert event_seqs(first_html) == list(range(121, 121 - EVENTS_PER_PAGE, -1))
    assert event_seqs(second_html) == list(range(71, 71 - EVENTS_PER_PAGE, -1))
    assert event_seqs(last_html) == list(range(21, 0, -1))
    assert "121 events in all, newest first, 50 a page." in first_html
    assert 'href="?page=2" rel="next">Older →</a>' in first_html
    assert 'href="?page=1" rel="prev">← Newer</a>' in second_html
    assert 'href="?page=3" rel="next">Older →</a>' in second_html
    assert "Older →" not in last_html
    assert "line 119" in first_html and "line 0" in last_html


def test_the_event_history_filters_by_kind(admin_browser: Client, make_project: Any) -> None:
    project = failed(make_project())
    add_log_lines(project, 60)
    url = admin_url("events", project)

    errors = admin_browser.get(url, {"kind": "error"}).content.decode()
    logs = admin_browser.get(url, {"kind": "log"}).content.decode()
    older_logs = admin_browser.get(url, {"kind": "log", "page": 2}).content.decode()

    error_seqs = list(
        ProgressEvent.objects.filter(project=project, kind=EventKind.ERROR).values_list(
            "seq", flat=True
        )
    )
    assert event_seqs(errors) == error_seqs
    assert "The engine broke. (engine_error)" in errors
    assert 'class="selected" aria-current="page">Error (1)</a>' in errors
    assert len(event_seqs(logs)) == EVENTS_PER_PAGE
    assert 'href="?kind=log&amp;page=2" rel="next">Older →</a>' in logs
    log_count = ProgressEvent.objects.filter(project=project, kind=EventKind.LOG).count()
    assert len(event_seqs(older_logs)) == log_count - EVENTS_PER_PAGE
    assert "line 0" in older_logs
    assert '<tr class="event-status">' not in logs + older_logs


def test_an_unknown_kind_or_page_of_events_is_a_clear_error(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()
    add_log_lines(project, 3)
    url = admin_url("events", project)

    bad_kind = admin_browser.get(url, {"kind": "gossip"})
    past_the_end = admin_browser.get(url, {"page": 9})
    not_a_page = admin_browser.get(url, {"page": "last-ish"})

    assert bad_kind.status_code == 400
    assert "Select a valid choice. gossip is not one of the available choices." in (
        bad_kind.content.decode()
    )
    assert past_the_end.status_code == 404
    assert "There is no page “9” of these events: they fill 1 page." in (
        past_the_end.content.decode()
    )
    assert not_a_page.status_code == 404
    assert event_seqs(bad_kind.content.decode()) == []


# --- the buttons on the project page --------------------------------------------


def buttons_on(client: Client, project: VideoProject) -> list[str]:
    html = client.get(change_url(project)).content.decode()
    group = re.search(r'<div class="project-buttons".*?</div>', html, re.S)
    if group is None:
        return []
    return re.findall(r"<(?:button|a)[^>]*>([^<]+)</(?:button|a)>", group.group(0))


def press(client: Client, name: str, project: VideoProject) -> Any:
    response = client.post(admin_url(name, project), follow=True)
    assert response.redirect_chain == [(change_url(project), 302)], response.redirect_chain
    return response


def test_each_project_offers_the_buttons_its_status_allows(
    admin_browser: Client, make_project: Any
) -> None:
    draft = make_project(title="A draft")
    busy = running(make_project(title="Busy"))
    broken = failed(make_project(title="Broken"))

    assert buttons_on(admin_browser, draft) == ["Duplicate", "Delete…"]
    assert buttons_on(admin_browser, busy) == ["Cancel job", "Duplicate", "Delete…"]
    assert buttons_on(admin_browser, broken) == ["Retry", "Mark notified", "Duplicate", "Delete…"]


def test_the_cancel_button_cancels_the_job_and_is_recorded(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project(title="Lighthouses"))

    response = press(admin_browser, "cancel", project)

    after = reload(project)
    assert after.status == Status.DRAFT
    assert after.progress_message == "Cancelled"
    assert events_of(after)[-1].seq == after.version
    assert shown_messages(response) == [
        ("success", "The job of “Lighthouses” was cancelled; its brief and script are kept.")
    ]
    assert history_of(project) == [(CHANGE, "Cancelled the running job.")]
    history = admin_browser.get(admin_url("history", project)).content.decode()
    assert "Cancelled the running job." in history


def test_cancel_with_nothing_running_warns_and_records_nothing(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project(title="Idle draft")

    response = press(admin_browser, "cancel", project)

    assert reload(project).version == project.version
    assert shown_messages(response) == [
        ("warning", "“Idle draft” was not cancelled: There is no running job to cancel.")
    ]
    assert history_of(project) == []


def test_the_retry_button_restarts_the_failed_job_and_is_recorded(
    admin_browser: Client, scripted_project: VideoProject
) -> None:
    project = failed(scripted_project, Step.RENDER)

    response = press(admin_browser, "retry", project)

    after = reload(project)
    assert after.status == Status.RENDERING
    assert after.error_code == ""
    assert shown_messages(response) == [
        ("success", "“Night trains of Europe” is running its last job again.")
    ]
    assert history_of(project) == [(CHANGE, "Retried the failed job.")]


def test_retry_refuses_a_project_that_has_not_failed_and_records_nothing(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project(title="Busy one"))

    response = press(admin_browser, "retry", project)

    assert reload(project).version == project.version
    assert shown_messages(response) == [
        (
            "warning",
            "“Busy one” was not restarted: "
            "Only a failed project can be retried; this one is Writing the script.",
        )
    ]
    assert history_of(project) == []


def test_the_mark_notified_button_marks_once_and_records_once(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project(title="Finished"))
    assert lifecycle.finish_script(project.pk, "worker-1", SCRIPT)

    first = press(admin_browser, "mark_notified", project)
    second = press(admin_browser, "mark_notified", project)

    assert reload(project).notified is True
    assert shown_messages(first) == [
        ("success", "“Finished” is marked notified: its owner will not be told again.")
    ]
    assert shown_messages(second) == [("info", "“Finished” was already marked notified.")]
    assert history_of(project) == [(CHANGE, "Marked notified.")]
    assert buttons_on(admin_browser, project) == ["Duplicate", "Delete…"]


def test_duplicate_copies_the_project_into_a_new_draft_and_opens_it(
    admin_browser: Client, scripted_project: VideoProject, django_user_model: type[User]
) -> None:
    project = running(scripted_project, Step.RENDER)

    response = admin_browser.post(admin_url("duplicate", project), follow=True)

    copy = VideoProject.objects.exclude(pk=project.pk).get()
    assert response.redirect_chain == [(change_url(copy), 302)]
    assert (copy.title, copy.status, copy.owner.username) == (
        "Night trains of Europe (copy)",
        Status.DRAFT,
        "alice",
    )
    assert (copy.brief, copy.script_data) == (project.brief, SCRIPT)
    assert reload(project).status == Status.RENDERING  # the original's render runs on
    [(level, message)] = shown_messages(response)
    assert level == "success"
    assert message == (
        f'“Night trains of Europe” was duplicated as <a href="{change_url(copy)}">'
        "“Night trains of Europe (copy)”</a>, a new draft with its brief and script."
    )
    html = response.content.decode()
    assert f'<a href="{change_url(copy)}">“Night trains of Europe (copy)”</a>' in html
    assert history_of(copy) == [
        (ADDITION, f"Duplicated from “Night trains of Europe” ({project.pk}).")
    ]
    assert history_of(project) == []
    history = admin_browser.get(admin_url("history", copy)).content.decode()
    assert "Duplicated from “Night trains of Europe”" in history


def test_duplicate_of_a_project_deleted_meanwhile_says_it_is_gone_and_copies_nothing(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()
    lifecycle.delete_project(project)

    response = admin_browser.post(admin_url("duplicate", project), follow=True)

    assert response.redirect_chain == [(reverse("admin:index"), 302)]
    assert shown_messages(response)[0][1].endswith("exist. Perhaps it was deleted?")
    assert not VideoProject.objects.exists()
    assert not LogEntry.objects.exists()


def test_delete_asks_first_then_removes_the_project_its_events_and_its_video(
    admin_browser: Client,
    scripted_project: VideoProject,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = with_video(scripted_project, media_root)
    video = media_root / project.video.name
    url = admin_url("delete_project", project)

    question = admin_browser.get(url)
    assert question.status_code == 200
    html = question.content.decode()
    assert f"Delete “{project.title}” (owner: alice)?" in html
    assert f"its {project.version} events;" in html
    assert "Yes, delete it" in html
    assert VideoProject.objects.filter(pk=project.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_browser.post(url, follow=True)

    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert shown_messages(response) == [
        (
            "success",
            "“Night trains of Europe” was deleted, with its events, clips, previews and video.",
        )
    ]
    assert not VideoProject.objects.filter(pk=project.pk).exists()
    assert not ProgressEvent.objects.filter(project_id=project.pk).exists()
    assert not video.exists()
    entry = LogEntry.objects.get(object_id=str(project.pk))
    assert (entry.action_flag, entry.object_repr) == (DELETION, "Night trains of Europe")
    assert "Night trains of Europe" in admin_browser.get(reverse("admin:index")).content.decode()


def test_delete_refuses_a_running_project_with_an_error_and_records_nothing(
    admin_browser: Client, make_project: Any
) -> None:
    project = running(make_project(title="Busy one"))

    question = admin_browser.get(admin_url("delete_project", project)).content.decode()
    response = press(admin_browser, "delete_project", project)

    assert "A job is running (Writing the script): cancel it before deleting" in question
    assert reload(project).version == project.version
    assert shown_messages(response) == [
        (
            "error",
            "“Busy one” was not deleted: "
            "The script is being written; cancel it before deleting the project.",
        )
    ]
    assert history_of(project) == []


def test_a_button_of_a_project_deleted_meanwhile_says_it_is_gone(
    admin_browser: Client, make_project: Any
) -> None:
    project = make_project()
    lifecycle.delete_project(project)

    response = admin_browser.post(admin_url("cancel", project), follow=True)

    assert response.redirect_chain == [(reverse("admin:index"), 302)]
    assert shown_messages(response)[0][1].endswith("exist. Perhaps it was deleted?")


def test_the_buttons_answer_only_a_post(admin_browser: Client, make_project: Any) -> None:
    project = running(make_project())

    for name in ("cancel", "retry", "mark_notified", "duplicate"):
        assert admin_browser.get(admin_url(name, project)).status_code == 405
    assert reload(project).version == project.version
    assert VideoProject.objects.count() == 1


def test_the_buttons_need_the_pages_csrf_token(staff: User, make_project: Any) -> None:
    project = running(make_project())
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)

    cancel = client.post(admin_url("cancel", project))
    delete = client.post(admin_url("delete_project", make_project()))
    duplicate = client.post(admin_url("duplicate", project))

    assert cancel.status_code == delete.status_code == duplicate.status_code == 403
    assert reload(project).version == project.version
    assert VideoProject.objects.count() == 2


def test_staff_who_may_only_view_projects_get_no_buttons(
    django_user_model: type[User], make_project: Any
) -> None:
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_videoproject"))
    client = Client()
    client.force_login(viewer)
    project = running(make_project())

    assert client.get(change_url(project)).status_code == 200
    assert buttons_on(client, project) == []
    for name in ("cancel", "retry", "mark_notified", "duplicate", "delete_project"):
        assert client.post(admin_url(name, project)).status_code == 403
    assert client.get(admin_url("delete_project", project)).status_code == 403
    assert reload(project).version == project.version
    assert history_of(project) == []


def test_the_buttons_are_not_for_people_outside_the_staff(alice: User, make_project: Any) -> None:
    project = running(make_project())
    client = Client()
    client.force_login(alice)

    for name in ("cancel", "retry", "mark_notified", "duplicate", "delete_project"):
        response = client.post(admin_url(name, project))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    assert reload(project).version == project.version
    assert history_of(project) == []


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
