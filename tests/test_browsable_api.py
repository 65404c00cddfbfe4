"""The browsable API as a person explores it: signed in, in a browser that asks for HTML.

Every page is read as a browser shows it (its links and its forms, parsed
from the HTML), and every form is sent back as the browser would send it,
CSRF token and all. Programs asking for JSON see what they saw before, plus
`links`; nobody else's project is ever shown.
"""

from __future__ import annotations

import html as html_text
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from projects import lifecycle, storage
from projects.models import Status, Step, VideoProject
from projects.pipeline import preview_name
from tests.conftest import BRIEF, SCRIPT, AsgiServer

pytestmark = pytest.mark.django_db

API = "/api/video-creation"
# What Chromium sends when a person opens an address.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
AJAX_ACCEPT = "text/html; q=1.0, */*"  # DRF's ajax-form.js, for a PATCH
PAGES = ("self", "status", "log", "history", "events", "video")
ACTIONS = ("script", "render", "cancel", "duplicate", "dismiss", "notified")


# --- reading a page as a browser does ----------------------------------------------------


@dataclass
class Form:
    action: str
    method: str  # what the browser (or DRF's ajax-form.js, for data-method) sends
    fields: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    buttons: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """The links, forms, labels and buttons of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: dict[str, str] = {}  # text -> href
        self.hrefs: list[str] = []
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._text_of: str | None = None  # "a", "label", "button", "textarea", "option"
        self._text = ""
        self._href = ""
        self._field = ""
        self._select = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag == "a":
            self._href = attr.get("href", "")
            self.hrefs.append(self._href)
        elif tag == "form":
            method = attr.get("data-method") or attr.get("method") or "GET"
            self._form = Form(attr.get("action", ""), method.upper())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and attr.get("name"):
            if attr.get("type") not in ("checkbox", "radio") or "checked" in attr:
                self._form.fields[attr["name"]] = attr.get("value", "")
        elif tag == "textarea" and self._form is not None:
            self._field = attr.get("name", "")
        elif tag == "select" and self._form is not None:
            self._select = attr.get("name", "")
        elif tag == "option" and self._form is not None and self._select:
            # The selected option, else the first, as a browser submits it.
            chosen = "selected" in attr or self._select not in self._form.fields
            self._form.fields[self._select] = (
                attr.get("value", "") if chosen else self._form.fields[self._select]
            )
        if tag in ("a", "label", "button", "textarea"):
            self._text_of, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._text_of is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = ""
        if tag != self._text_of:
            if tag == "form":
                self._form = None
            return
        text = " ".join(self._text.split())
        self._text_of = None
        if tag == "a":
            self.links[text] = self._href
        elif self._form is not None and tag == "label":
            self._form.labels.append(text)
        elif self._form is not None and tag == "button":
            self._form.buttons.append(text)
        elif self._form is not None and tag == "textarea" and self._field:
            self._form.fields[self._field] = self._text.strip("\n")
            self._field = ""

    def form(self, action: str, method: str, *, with_field: str | None = None) -> Form:
        found = [
            form
            for form in self.forms
            if _path(form.action) == _path(action)
            and form.method == method
            and (with_field is None or with_field in form.fields)
        ]
        assert found, f"no {method} form to {action}: {[(f.method, f.action) for f in self.forms]}"
        return found[0]


def _path(url: str) -> str:
    return urlsplit(url).path


def page(response: Any) -> Page:
    assert response["Content-Type"].startswith("text/html"), response["Content-Type"]
    return Page(response.content.decode())


def shown_json(response: Any) -> Any:
    """The JSON body the browsable page shows, after its status line and headers."""
    block = response.content.decode().split('<div class="response-info"', 1)[1]
    body = block.split("</pre>", 1)[0].rsplit("</span>", 1)[1]
    return json.loads(html_text.unescape(re.sub(r"<[^>]+>", "", body)))


@pytest.fixture
def browser(alice: User) -> Client:
    """Alice's browser: signed in, asking for HTML, with Django's CSRF checks on."""
    client = Client(enforce_csrf_checks=True, headers={"Accept": BROWSER_ACCEPT})
    client.force_login(alice)
    return client


def submit(browser: Client, form: Form, **changes: str) -> Any:
    """Send a form as the browser does: a POST as multipart, a PATCH as DRF's ajax-form.js."""
    fields = {**form.fields, **changes}
    if form.method == "POST":
        return browser.post(form.action, fields)
    return browser.generic(
        form.method,
        form.action,
        encode_multipart(BOUNDARY, fields),
        content_type=MULTIPART_CONTENT,
        headers={"X-CSRFToken": browser.cookies["csrftoken"].value, "Accept": AJAX_ACCEPT},
    )


def rendered(project: VideoProject, media_root: Path) -> VideoProject:
    """The project with a finished video and its first scene's preview, as a worker leaves it."""
    started = lifecycle.start_job(project, Step.RENDER)
    assert lifecycle.claim(started.pk, Step.RENDER, "worker-1") is not None
    name = f"videos/{project.pk}/night-trains.mp4"
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(b"\x00\x00\x00\x18ftypmp42 a video" * 100)
    assert lifecycle.finish_render(project.pk, "worker-1", name)
    project = VideoProject.objects.get(pk=project.pk)
    storage.media().save(preview_name(project.pk, 0, project.preview_set), _webp())
    return project


def _webp() -> ContentFile:
    return ContentFile(b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10")


# --- links ---------------------------------------------------------------------------------


def test_a_project_page_links_to_its_pages_and_previews_and_each_link_answers(
    browser: Client, scripted_project: VideoProject, media_root: Path
) -> None:
    project = rendered(scripted_project, media_root)
    here = f"http://testserver{API}/projects/{project.pk}"

    response = browser.get(f"{API}/projects/{project.pk}")

    assert response.status_code == 200
    shown = page(response)
    for label, suffix in {
        "Project": "",
        "Status": "/status",
        "Log": "/log",
        "Event history": "/history",
        "Live events (SSE)": "/events",
        "Video": "/video",
        "Scene 1 preview": "/scenes/0/preview",
        "Scene 2 preview": "/scenes/1/preview",
    }.items():
        assert shown.links[label] == here + suffix, label
    # The JSON on the page has the same links, each one clickable.
    links = shown_json(response)["links"]
    assert links["status"] == here + "/status"
    for name in (*PAGES, *ACTIONS):
        assert links[name] in shown.hrefs, name
    answers = {
        label: browser.get(shown.links[label])
        for label in ("Status", "Log", "Event history", "Video", "Scene 1 preview")
    }
    assert {label: r.status_code for label, r in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["Video"]["Content-Type"] == "video/mp4"
    assert answers["Scene 1 preview"]["Content-Type"] == "image/webp"
    assert "Sleepers leave Vienna at dusk." in answers["Event history"].content.decode()
    # Scene 2 was never drawn: the link answers as a missing preview does.
    missing = browser.get(shown.links["Scene 2 preview"])
    assert missing.status_code == 404
    assert "This scene has no preview." in missing.content.decode()


def test_the_projects_list_links_each_project(browser: Client, make_project: Any) -> None:
    first, second = make_project(title="First"), make_project(title="Second")

    response = browser.get(f"{API}/projects")

    listed = shown_json(response)["results"]
    assert [p["title"] for p in listed] == ["Second", "First"]
    for shown, project in zip(listed, (second, first), strict=True):
        assert shown["links"]["self"] == f"http://testserver{API}/projects/{project.pk}"
    assert listed[0]["links"]["self"] in page(response).hrefs


def test_a_project_without_a_video_links_to_a_404_that_says_so(
    browser: Client, make_project: Any
) -> None:
    project = make_project()
    links = shown_json(browser.get(f"{API}/projects/{project.pk}"))["links"]

    response = browser.get(links["video"])

    assert response.status_code == 404
    assert "This project has no rendered video yet." in response.content.decode()
    assert links["scenePreviews"] == []


def test_the_log_and_history_pages_offer_their_json_too(
    browser: Client, scripted_project: VideoProject
) -> None:
    base = f"{API}/projects/{scripted_project.pk}"

    for url in (f"{base}/log", f"{base}/history"):
        shown = page(browser.get(url))
        json_option = f"{url}?format=json"
        assert json_option in shown.hrefs, url  # DRF's GET ▾ json
        response = browser.get(json_option)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/json"
    assert browser.get(f"{base}/history?format=json&limit=1").json()["hasMore"] is True
    assert browser.get(f"{base}/log?sort=up").status_code == 400  # still strict otherwise


# --- forms ---------------------------------------------------------------------------------


def test_the_create_form_has_the_briefs_labelled_fields_and_creates_a_project(
    browser: Client, alice: User
) -> None:
    form = page(browser.get(f"{API}/projects")).form(f"{API}/projects", "POST", with_field="title")

    assert form.labels == ["Title", "Brief", "Aspect ratio", "Scenes", "Seconds per scene", "Style"]
    assert form.buttons == ["POST"]
    assert (form.fields["aspectRatio"], form.fields["sceneCount"]) == ("16:9", "4")

    response = submit(
        browser,
        form,
        title="Lighthouses",
        brief="Lighthouses of the Atlantic coast at dusk, one by one.",
        aspectRatio="9:16",
        sceneCount="3",
    )

    assert response.status_code == 201
    project = VideoProject.objects.get(owner=alice)
    assert (
        project.title,
        project.aspect_ratio,
        project.scene_count,
        project.seconds_per_scene,
    ) == (
        "Lighthouses",
        "9:16",
        3,
        4,
    )
    created = shown_json(response)
    assert created["id"] == str(project.pk)
    assert page(response).links["Status"].endswith(f"/projects/{project.pk}/status")


def test_a_create_form_with_a_mistake_says_what_is_wrong_and_creates_nothing(
    browser: Client,
) -> None:
    form = page(browser.get(f"{API}/projects")).form(f"{API}/projects", "POST", with_field="title")

    response = submit(browser, form, title="Short", brief="Too short", sceneCount="13")

    assert response.status_code == 400
    error = shown_json(response)
    assert error["fields"] == {
        "brief": ["The brief must be at least 10 characters long."],
        "sceneCount": ["Scenes must be a whole number from 1 to 12."],
    }
    assert not VideoProject.objects.exists()


def test_a_project_has_a_patch_form_filled_with_its_brief_that_edits_it(
    browser: Client, make_project: Any
) -> None:
    project = make_project()
    url = f"{API}/projects/{project.pk}"

    form = page(browser.get(url)).form(url, "PATCH", with_field="title")

    assert form.labels == ["Title", "Brief", "Aspect ratio", "Scenes", "Seconds per scene", "Style"]
    assert form.fields["title"] == BRIEF["title"]
    assert form.fields["brief"] == BRIEF["brief"]
    assert form.fields["sceneCount"] == "2"
    assert form.buttons == ["PATCH"]

    response = submit(browser, form, title="Night trains, revised", secondsPerScene="6")

    assert response.status_code == 200
    edited = VideoProject.objects.get(pk=project.pk)
    assert (edited.title, edited.seconds_per_scene, edited.brief) == (
        "Night trains, revised",
        6,
        BRIEF["brief"],
    )
    assert shown_json(response)["title"] == "Night trains, revised"


def test_the_script_page_offers_its_json_to_edit_and_a_button_to_write_it(
    browser: Client, scripted_project: VideoProject
) -> None:
    url = f"{API}/projects/{scripted_project.pk}/script"

    shown = page(browser.get(url))

    raw = shown.form(url, "PATCH", with_field="_content")
    assert json.loads(raw.fields["_content"]) == {"scriptData": SCRIPT}
    assert shown.form(url, "POST").buttons == ["POST"]
    assert "_content" not in shown.form(url, "POST").fields  # no empty JSON box


def test_a_project_page_has_a_button_for_each_action_and_they_work(
    browser: Client, make_project: Any, alice: User
) -> None:
    project = make_project()
    shown = page(browser.get(f"{API}/projects/{project.pk}"))
    buttons = {
        form.buttons[0]: form for form in shown.forms if form.buttons and form.method == "POST"
    }
    assert list(buttons) == [
        "Write the script",
        "Render the video",
        "Cancel the job",
        "Duplicate",
        "Not now",
        "Mark notified",
    ]

    started = submit(browser, buttons["Write the script"])
    assert started.status_code == 202
    assert VideoProject.objects.get(pk=project.pk).status == Status.GENERATING_SCRIPT

    cancelled = submit(browser, buttons["Cancel the job"])
    assert cancelled.status_code == 202
    assert VideoProject.objects.get(pk=project.pk).status == Status.DRAFT

    refused = submit(browser, buttons["Render the video"])
    assert refused.status_code == 409
    assert "script" in shown_json(refused)["detail"].lower()

    dismissed = submit(browser, buttons["Not now"])
    assert dismissed.status_code == 200
    assert VideoProject.objects.get(pk=project.pk).resume_dismissed is True

    copied = submit(browser, buttons["Duplicate"])
    assert copied.status_code == 201
    copy = VideoProject.objects.exclude(pk=project.pk).get(owner=alice)
    assert copy.title == f"{BRIEF['title']} (copy)"
    assert page(copied).links["Project"] == f"http://testserver{API}/projects/{copy.pk}"


def test_an_action_page_shows_a_plain_button_that_works(
    browser: Client, scripted_project: VideoProject
) -> None:
    url = f"{API}/projects/{scripted_project.pk}/render"

    response = browser.get(url)

    assert response.status_code == 405  # POST only; the page still offers it
    button = page(response).form(url, "POST")
    assert button.buttons == ["POST"]
    assert set(button.fields) == {"csrfmiddlewaretoken"}
    assert submit(browser, button).status_code == 202
    assert VideoProject.objects.get(pk=scripted_project.pk).status == Status.RENDERING


def test_a_form_without_the_csrf_token_changes_nothing(browser: Client, make_project: Any) -> None:
    project = make_project()
    form = page(browser.get(f"{API}/projects/{project.pk}")).form(
        f"{API}/projects/{project.pk}/script", "POST"
    )
    del form.fields["csrfmiddlewaretoken"]

    response = submit(browser, form)

    assert response.status_code == 403
    assert VideoProject.objects.get(pk=project.pk).status == Status.DRAFT


# --- the status page -----------------------------------------------------------------------


def test_the_status_page_shows_the_status_object_in_a_browser(
    browser: Client, make_project: Any
) -> None:
    project = make_project()
    url = f"{API}/projects/{project.pk}/status"

    response = browser.get(url)

    assert response.status_code == 200
    assert shown_json(response) == project.to_status_dict()
    shown = page(response)
    assert shown.links["Project"] == f"http://testserver{API}/projects/{project.pk}"
    assert shown.links["Log"] == f"http://testserver{API}/projects/{project.pk}/log"
    assert "ETag" not in response  # a page, not a copy for If-None-Match
    assert browser.get(url, {"format": "api"}, headers={"Accept": "*/*"}).status_code == 200


def test_programs_polling_the_status_get_the_same_json_and_304s(
    alice_api: APIClient, make_project: Any
) -> None:
    project = make_project()
    url = f"{API}/projects/{project.pk}/status"

    plain = alice_api.get(url)
    for accept in ("application/json", "*/*", "application/json, text/html;q=0.5"):
        assert (
            alice_api.get(url, HTTP_ACCEPT=accept).json()
            == plain.json()
            == project.to_status_dict()
        )
    assert plain["Content-Type"] == "application/json"
    # A browser's own fetch that holds a copy is answered as every poll is.
    again = alice_api.get(url, HTTP_ACCEPT=BROWSER_ACCEPT, HTTP_IF_NONE_MATCH=plain["ETag"])
    assert again.status_code == 304


# --- what programs see, and what nobody else sees ------------------------------------------


def test_json_clients_see_the_same_project_plus_links(
    alice_api: APIClient, scripted_project: VideoProject
) -> None:
    url = f"{API}/projects/{scripted_project.pk}"

    body = alice_api.get(url).json()

    links = body.pop("links")
    assert body == scripted_project.to_dict()
    here = f"http://testserver{url}"
    assert links == {
        "self": here,
        "status": f"{here}/status",
        "log": f"{here}/log",
        "history": f"{here}/history",
        "events": f"{here}/events",
        "video": f"{here}/video",
        "scenePreviews": [f"{here}/scenes/0/preview", f"{here}/scenes/1/preview"],
        "script": f"{here}/script",
        "render": f"{here}/render",
        "cancel": f"{here}/cancel",
        "duplicate": f"{here}/duplicate",
        "dismiss": f"{here}/dismiss",
        "notified": f"{here}/notified",
    }
    created = alice_api.post(f"{API}/projects", BRIEF, format="json").json()
    assert created["links"]["self"] == f"http://testserver{API}/projects/{created['id']}"
    listed = alice_api.get(f"{API}/projects").json()["results"]
    assert all(set(project["links"]) == set(links) for project in listed)
    # The status object stays as it was: no links there.
    assert "links" not in alice_api.post(f"{url}/dismiss").json()


def test_another_users_project_is_a_404_on_every_page(
    browser: Client, charlie: User, make_project: Any
) -> None:
    theirs = lifecycle.edit_script(make_project(owner=charlie, title="Charlie's secret"), SCRIPT)
    base = f"{API}/projects/{theirs.pk}"

    for url in (base, f"{base}/status", f"{base}/log", f"{base}/history"):
        response = browser.get(url)
        assert response.status_code == 404, url
        assert "No project with this id belongs to you." in response.content.decode()
    # A POST-only address answers 405 to a GET before it looks for the project;
    # its forms start empty, not from Charlie's script.
    script_page = browser.get(f"{base}/script")
    assert script_page.status_code == 405
    for response in (script_page, *(browser.get(url) for url in (base, f"{base}/status"))):
        html = response.content.decode()
        assert "Charlie" not in html
        assert SCRIPT["scenes"][0]["narration"] not in html
    assert submit(browser, Form(base, "PATCH", {"title": "Mine now"})).status_code == 404
    assert VideoProject.objects.get(pk=theirs.pk).title == "Charlie's secret"


# --- against a running web process -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_projects_links_work_against_the_web_server(
    asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    token, _ = Token.objects.get_or_create(user=alice)
    headers = {"Authorization": f"Token {token.key}"}

    links = httpx.get(f"{asgi_server.url}{API}/projects/{project.pk}", headers=headers).json()[
        "links"
    ]

    assert links["events"] == f"{asgi_server.url}{API}/projects/{project.pk}/events"
    with httpx.stream("GET", links["events"], headers=headers, timeout=30) as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        data = next(line for line in events.iter_lines() if line.startswith("data:"))
        assert json.loads(data.removeprefix("data:"))["id"] == str(project.pk)
    status = httpx.get(links["status"], headers={**headers, "Accept": BROWSER_ACCEPT})
    assert status.status_code == 200
    assert status.headers["content-type"].startswith("text/html")
    assert project.title in status.text
    polled = httpx.get(links["status"], headers=headers)
    assert polled.json()["id"] == str(project.pk)
    assert (
        httpx.get(
            links["status"], headers={**headers, "If-None-Match": polled.headers["ETag"]}
        ).status_code
        == 304
    )
