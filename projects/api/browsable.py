"""The API as a person explores it in a browser: DRF's browsable renderer, made worth a visit.

Each project carries `links` (absolute URLs, so the renderer makes them
clickable) to everything about it; the project's page adds a button per
action. DRF draws an HTML form for a view with a serializer (the views are
GenericAPIViews for it, projects/api/views.py) but only for POST and PUT:
this renderer draws PATCH too, shows an action that takes no body as a
plain button rather than an empty JSON box, and leaves a form whose fields
HTML cannot hold (the list of scenes) to the raw JSON box, filled in.

The status endpoint is a plain Django view tuned for programs' polls
(projects/streams.py); a browser's own visit to it is answered here instead.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from rest_framework import serializers
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request, override_method
from rest_framework.response import Response
from rest_framework.views import APIView

from projects.models import VideoProject
from projects.ownership import owned_project

# Each link of a project, by the name of its URL (projects/api/urls.py).
PAGES = {
    "self": "project",
    "status": "project-status",
    "log": "project-log",
    "history": "project-history",
    "events": "project-events",
    "video": "project-video",
}
ACTIONS = {
    "script": "project-script",
    "render": "project-render",
    "cancel": "project-cancel",
    "duplicate": "project-duplicate",
    "dismiss": "project-dismiss",
    "notified": "project-notified",
}
# What a person reads on the project page, for the same links.
PAGE_LABELS = {
    "self": "Project",
    "status": "Status",
    "log": "Log",
    "history": "Event history",
    "events": "Live events (SSE)",
    "video": "Video",
}
ACTION_LABELS = {
    "script": "Write the script",
    "render": "Render the video",
    "cancel": "Cancel the job",
    "duplicate": "Duplicate",
    "dismiss": "Not now",
    "notified": "Mark notified",
}
# An id no project has, reversed once per request; each project's links are
# then one string replacement each (a list of 100 projects has 1,300 links).
_PLACEHOLDER = uuid.UUID(int=0)


def project_links(request: Request | HttpRequest, project: VideoProject) -> dict[str, Any]:
    """Absolute URLs of the project's pages, actions and scene previews."""
    templates = getattr(request, "_project_link_templates", None)
    if templates is None:
        templates = {
            name: request.build_absolute_uri(reverse(url_name, args=[_PLACEHOLDER]))
            for name, url_name in (PAGES | ACTIONS).items()
        }
        templates["scenePreview"] = request.build_absolute_uri(
            reverse("scene-preview", args=[_PLACEHOLDER, 0])
        ).removesuffix("0/preview")
        request._project_link_templates = templates
    placeholder, pk = str(_PLACEHOLDER), str(project.pk)
    links: dict[str, Any] = {
        name: templates[name].replace(placeholder, pk) for name in (*PAGES, *ACTIONS)
    }
    preview = templates["scenePreview"].replace(placeholder, pk)
    scenes = (project.script_data or {}).get("scenes") or []
    links["scenePreviews"] = [f"{preview}{index}/preview" for index in range(len(scenes))]
    return links


class NoBodySerializer(serializers.Serializer):
    """An action that takes no body: the browsable API shows it as a plain button."""


class ProjectBrowsableRenderer(BrowsableAPIRenderer):
    template = "rest_framework/project_api.html"

    def get_context(
        self, data: Any, accepted_media_type: Any, renderer_context: dict[str, Any]
    ) -> dict[str, Any]:
        context = super().get_context(data, accepted_media_type, renderer_context)
        view, request = renderer_context["view"], renderer_context["request"]
        if renderer_context["response"].status_code == 404:
            context["display_edit_forms"] = False  # nothing here to edit
        if context["display_edit_forms"]:
            # DRF draws PUT's HTML form only, and these views have no PUT: DRF's
            # PUT-or-PATCH box is replaced by a PATCH section of our own (the template).
            context["patch_form"] = self.get_rendered_html_form(data, view, "PATCH", request)
            context["patch_raw_form"] = context["raw_data_patch_form"]
            context["raw_data_patch_form"] = context["raw_data_put_or_patch_form"] = None
            if _takes_no_body(view, request, "POST"):
                context["post_button"] = True
                context["post_form"] = context["raw_data_post_form"] = None
        links = getattr(view, "page_links", None)
        if links is None and isinstance(data, dict) and isinstance(data.get("links"), dict):
            links = data["links"]
        if links and renderer_context["response"].status_code < 400:
            context["project_pages"] = [(PAGE_LABELS[name], links[name]) for name in PAGES]
            context["scene_previews"] = links.get("scenePreviews", [])
            context["project_actions"] = [(ACTION_LABELS[name], links[name]) for name in ACTIONS]
        return context

    def get_default_renderer(self, view: Any) -> Any:
        # The status page answers browsers only (programs get the plain view's JSON):
        # its body is still shown as JSON.
        return super().get_default_renderer(view) or JSONRenderer()

    def render_form_for_serializer(self, serializer: serializers.BaseSerializer) -> Any:
        # DRF's HTML forms cannot hold a list of nested objects ("Lists are not
        # currently supported in HTML input"): the raw JSON box holds it instead.
        if _holds_a_list(serializer):
            return None
        return super().render_form_for_serializer(serializer)


def _takes_no_body(view: Any, request: Request, method: str) -> bool:
    if method not in view.allowed_methods or not hasattr(view, "get_serializer"):
        return False
    with override_method(view, request, method):
        return not view.get_serializer().fields


def _holds_a_list(serializer: serializers.BaseSerializer) -> bool:
    if isinstance(serializer, serializers.ListSerializer | serializers.ListField):
        return True
    fields = getattr(serializer, "fields", {})
    return any(_holds_a_list(field) for field in fields.values())


# --- the status page --------------------------------------------------------------


def wants_page(request: HttpRequest) -> bool:
    """A browser visiting the status endpoint (it asks for HTML, holds no copy), not a poll.

    The first tests are substring searches: a program's poll pays ~0.2 µs for them.
    """
    if "text/html" not in request.META.get("HTTP_ACCEPT", ""):
        # DRF's own way to ask for the page: ?format=api.
        query = request.META.get("QUERY_STRING", "")
        return "format=api" in query and request.GET.get("format") == "api"
    if "HTTP_IF_NONE_MATCH" in request.META:
        return False
    return request.get_preferred_type(["application/json", "text/html"]) == "text/html"


class StatusPage(APIView):
    """The project's status object, as programs polling this address get it.

    They get it as JSON with an ETag (send If-None-Match for a 304), and can
    long-poll it with ?wait=25&since=<version>.
    """

    renderer_classes = [ProjectBrowsableRenderer]
    http_method_names = ["get", "head"]  # the address answers programs' GET only
    name = "Status"
    page_links: dict[str, Any] | None = None

    def get(self, request: Request, project_id: Any) -> Response:
        project = owned_project(request.user, project_id)
        self.page_links = project_links(request, project)
        return Response(project.to_status_dict())


_status_page = StatusPage.as_view()


def status_page(request: HttpRequest, project_id: Any) -> HttpResponseBase:
    """The status endpoint's answer to a browser: the status object on a browsable page."""
    response = _status_page(request, project_id=project_id)
    response.render()
    return response
