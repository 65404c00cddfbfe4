"""The admin: a window on projects and their event logs, and the lifecycle's actions.

Nothing here writes a project's fields. The change page is view-only (a
`save()` from the admin form would be a read-modify-write racing the
worker's progress reports); its buttons (Cancel, Retry, Mark notified,
Duplicate, Delete) and the list's actions call `lifecycle`, whose
compare-and-set updates refuse what the current status does not allow. Each
button's success is written to the admin's history (a LogEntry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import InvalidPage, Paginator
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from credits import ledger
from projects import lifecycle
from projects.api.ranges import stored_file_response
from projects.models import EventKind, ProgressEvent, Status, VideoProject
from projects.ownership import ProjectNotFound

EVENTS_PER_PAGE = 50
# The change page shows the newest few; the rest are a click away, a page at a time.
RECENT_EVENTS = 10
# Status events carry the whole status object, script included: a page of
# them shows the start of each payload, so fifty rows stay light.
PAYLOAD_PREVIEW_CHARS = 2000
# A title cut in the list (the whole title is its tooltip); CSS also clips it
# at the column's width, so one long word cannot push the columns off screen.
LIST_TITLE_CHARS = 60
# The script's scene fields, in the order a reader wants them; any other
# field a script carries follows these.
SCENE_COLUMNS = ("index", "title", "narration", "seconds", "visual", "style")
STATUS_LABELS = dict(Status.choices)
# What the lifecycle says when it will not: the status does not allow it, or
# (a retry) the owner cannot pay for the job again.
REFUSALS = (lifecycle.Conflict, ledger.InsufficientCredits)


@dataclass(frozen=True)
class ProjectButton:
    """A button on the change page: a POST to one of the views below."""

    label: str
    url: str
    css_class: str = ""


class EventFilter(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All kinds"), *EventKind.choices], required=False)


@admin.register(VideoProject)
class VideoProjectAdmin(admin.ModelAdmin):
    list_display = [
        "list_title",
        "owner",
        "status",
        "progress_bar",
        "step",
        "attempt",
        "updated_at",
    ]
    list_filter = ["status", ("owner", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["owner"]
    search_fields = ["title"]
    ordering = ["-created_at"]
    actions = ["cancel_jobs", "retry_jobs", "mark_notified"]
    fieldsets = [
        (
            "Brief",
            {
                "fields": [
                    "id",
                    "owner",
                    "title",
                    "brief",
                    ("aspect_ratio", "scene_count", "seconds_per_scene"),
                    "style",
                ]
            },
        ),
        (
            "Job",
            {
                "fields": [
                    "status",
                    "progress_bar",
                    "progress_message",
                    ("current_step", "completed_steps", "total_steps"),
                    "attempt",
                    ("error_code", "error_message"),
                    ("lease_owner", "lease_expires_at"),
                    "version",
                    ("notified", "auto_render"),
                ]
            },
        ),
        ("Result", {"fields": ["video_link", "preview_set", "script_table"]}),
        ("Times", {"fields": [("created_at", "updated_at", "started_at", "completed_at")]}),
        ("Event history", {"fields": ["recent_events"]}),
    ]
    readonly_fields = [
        "id",
        "owner",
        "title",
        "brief",
        "aspect_ratio",
        "scene_count",
        "seconds_per_scene",
        "style",
        "status",
        "progress_bar",
        "progress_message",
        "current_step",
        "completed_steps",
        "total_steps",
        "attempt",
        "error_code",
        "error_message",
        "auto_render",
        "lease_owner",
        "lease_expires_at",
        "version",
        "notified",
        "script_table",
        "video_link",
        "preview_set",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "recent_events",
    ]

    class Media:
        css = {"all": ["admin_extra/projects.css"]}

    # --- permissions: look, and act through the lifecycle; never edit ---------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # View-only: Django then renders the form without inputs and answers a
        # POST to it with 403, so the status cannot be set through the form.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Django's own deletion would pull the row from under a running job's
        # worker and leave its files behind: the Delete button goes through
        # `lifecycle.delete_project` instead (`delete_project_view`).
        return False

    def has_lifecycle_permission(self, request: HttpRequest) -> bool:
        """Who may run the actions: those Django would let change a project."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def has_duplicate_permission(self, request: HttpRequest) -> bool:
        """Who may duplicate a project (through the lifecycle): those Django would let add one."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.add_{opts.model_name}")

    def has_delete_project_permission(self, request: HttpRequest) -> bool:
        """Who may delete a project (through the lifecycle): those Django would let delete one."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}")

    # --- what the list and the page show ---------------------------------------

    @admin.display(description="Title", ordering="title")
    def list_title(self, project: VideoProject) -> SafeString:
        return format_html(
            '<span class="project-title" title="{}">{}</span>',
            project.title,
            Truncator(project.title).chars(LIST_TITLE_CHARS),
        )

    @admin.display(description="Progress", ordering="progress")
    def progress_bar(self, project: VideoProject) -> SafeString:
        return format_html(
            '<progress max="100" value="{}" style="width: 6em; vertical-align: middle;">'
            "{}%</progress> {}%",
            project.progress,
            project.progress,
            project.progress,
        )

    @admin.display(description="Step", ordering="current_step")
    def step(self, project: VideoProject) -> str:
        if not project.current_step:
            return "—"
        if not project.total_steps:
            return project.current_step
        return f"{project.current_step} {project.completed_steps}/{project.total_steps}"

    @admin.display(description="Video")
    def video_link(self, project: VideoProject) -> SafeString | str:
        # The file field's own link points under MEDIA_URL, which nothing serves
        # (videos go out through a view that checks who asks): link to ours.
        if not project.video:
            return "—"
        url = reverse("admin:projects_videoproject_video", args=[project.pk])
        current = "current" if project.status == Status.COMPLETED else "the last finished one"
        return format_html('<a href="{}">{}</a> ({})', url, project.video.name, current)

    @admin.display(description="Script")
    def script_table(self, project: VideoProject) -> SafeString:
        return render_to_string(
            "admin/projects/videoproject/script_table.html", _script_context(project.script_data)
        )

    @admin.display(description="Newest events")
    def recent_events(self, project: VideoProject) -> SafeString:
        events = list(project.events.order_by("-seq")[:RECENT_EVENTS])
        total = project.events.count() if len(events) == RECENT_EVENTS else len(events)
        return render_to_string(
            "admin/projects/videoproject/recent_events.html",
            {
                "events": [_event_row(event) for event in events],
                "total": total,
                "events_url": reverse("admin:projects_videoproject_events", args=[project.pk]),
                "per_page": EVENTS_PER_PAGE,
            },
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: VideoProject | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["project_buttons"] = self._buttons_for(request, obj)
            if self.has_delete_project_permission(request):
                context["delete_project_url"] = self._url("delete_project", obj.pk)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _buttons_for(self, request: HttpRequest, project: VideoProject) -> list[ProjectButton]:
        """The lifecycle's buttons that the project's status allows now."""
        buttons = []
        if self.has_lifecycle_permission(request):
            buttons += self._lifecycle_buttons(project)
        if self.has_duplicate_permission(request):
            # Any status: while a job runs, the copy takes the script saved before it.
            buttons.append(ProjectButton("Duplicate", self._url("duplicate", project.pk)))
        return buttons

    def _lifecycle_buttons(self, project: VideoProject) -> list[ProjectButton]:
        buttons = []
        if project.is_running:
            buttons.append(ProjectButton("Cancel job", self._url("cancel", project.pk)))
        if project.status == Status.FAILED:
            buttons.append(ProjectButton("Retry", self._url("retry", project.pk), "default"))
        # The owner is told of a finished job once: until then, staff may say they were.
        if project.completed_at is not None and not project.notified and not project.is_running:
            buttons.append(ProjectButton("Mark notified", self._url("mark_notified", project.pk)))
        return buttons

    # --- the views behind the links and buttons -----------------------------------

    def get_urls(self) -> list[URLPattern]:
        views: list[tuple[str, str, Callable[..., HttpResponseBase]]] = [
            ("video/", "video", self.video_view),
            ("events/", "events", self.events_view),
            ("cancel/", "cancel", self.cancel_view),
            ("retry/", "retry", self.retry_view),
            ("mark-notified/", "mark_notified", self.mark_notified_view),
            ("duplicate/", "duplicate", self.duplicate_view),
            ("delete-project/", "delete_project", self.delete_project_view),
        ]
        ours = [
            path(
                f"<uuid:project_id>/{route}",
                self.admin_site.admin_view(view),
                name=f"{self.opts.app_label}_{self.opts.model_name}_{name}",
            )
            for route, name, view in views
        ]
        return [*ours, *super().get_urls()]

    def _url(self, name: str, project_id: Any = None) -> str:
        opts = self.opts
        args = [] if project_id is None else [project_id]
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=args)

    def video_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        """The project's last finished video, for staff who may view projects."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        project = VideoProject.objects.filter(pk=project_id).first()
        if project is None or not project.video:
            raise Http404("This project has no video.")
        name = project.video.name
        try:
            return stored_file_response(request, name, "video/mp4", Path(name).name)
        except FileNotFoundError:
            raise Http404("This project's video file is missing.") from None

    def events_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        """The project's whole event history, newest first, a page at a time, by kind."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        project = VideoProject.objects.filter(pk=project_id).first()
        if project is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        context = self._events_context(request, project)
        status = 200
        event_filter = EventFilter(request.GET)
        if not event_filter.is_valid():
            context.update(error=event_filter.errors["kind"][0], event_filter=event_filter)
            status = 400
        else:
            context["event_filter"] = event_filter
            kind = event_filter.cleaned_data["kind"]
            events = project.events.order_by("-seq")
            if kind:
                events = events.filter(kind=kind)
            paginator = Paginator(events, EVENTS_PER_PAGE)
            try:
                page = paginator.page(request.GET.get("page") or 1)
            except InvalidPage:
                context["error"] = (
                    f"There is no page “{request.GET.get('page')}” of these events: "
                    f"they fill {paginator.num_pages} "
                    f"{'page' if paginator.num_pages == 1 else 'pages'}."
                )
                status = 404
            else:
                context.update(_page_context(page, kind))
        return TemplateResponse(
            request, "admin/projects/videoproject/events.html", context, status=status
        )

    def _events_context(self, request: HttpRequest, project: VideoProject) -> dict[str, Any]:
        counts = {
            row["kind"]: row["n"]
            for row in project.events.order_by().values("kind").annotate(n=Count("pk"))
        }
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": project,
            "title": f"Events of “{project}”",
            "subtitle": None,
            "kinds": [
                {"value": value, "label": label, "count": counts.get(value, 0)}
                for value, label in EventKind.choices
            ],
            "total": sum(counts.values()),
            "per_page": EVENTS_PER_PAGE,
        }

    def cancel_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        return self._lifecycle_view(
            request,
            project_id,
            lifecycle.cancel,
            "cancelled",
            "Cancelled the running job.",
            "The job of “{project}” was cancelled; its brief and script are kept.",
        )

    def retry_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        return self._lifecycle_view(
            request,
            project_id,
            lifecycle.retry,
            "restarted",
            "Retried the failed job.",
            "“{project}” is running its last job again.",
        )

    def mark_notified_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        return self._lifecycle_view(
            request,
            project_id,
            lifecycle.mark_notified,
            "marked notified",
            "Marked notified.",
            "“{project}” is marked notified: its owner will not be told again.",
        )

    def _lifecycle_view(
        self,
        request: HttpRequest,
        project_id: Any,
        operation: Callable[[VideoProject], VideoProject],
        done: str,
        history: str,
        success: str,
    ) -> HttpResponseBase:
        """Apply one lifecycle operation to one project; say how it went, and record a change."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_lifecycle_permission(request):
            raise PermissionDenied
        project = VideoProject.objects.filter(pk=project_id).first()
        if project is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        try:
            changed = operation(project)
        except ProjectNotFound:
            # Deleted between this request's read and the operation.
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        except REFUSALS as refused:
            self.message_user(
                request, f"“{project}” was not {done}: {_reason(refused)}", messages.WARNING
            )
        else:
            if changed.version == project.version:
                # mark_notified says yes to a project already marked: nothing happened.
                self.message_user(request, f"“{project}” was already {done}.", messages.INFO)
            else:
                self.log_change(request, changed, history)
                self.message_user(request, success.format(project=project), messages.SUCCESS)
        return HttpResponseRedirect(self._url("change", project.pk))

    def duplicate_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        """Copy the brief and the saved script into a new DRAFT; go to the copy's page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_duplicate_permission(request):
            raise PermissionDenied
        project = VideoProject.objects.filter(pk=project_id).first()
        if project is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        try:
            # The copy and its history entry are written together, or neither is.
            with transaction.atomic():
                copy = lifecycle.duplicate_project(project)
                self.log_addition(request, copy, f"Duplicated from “{project}” ({project.pk}).")
        except ProjectNotFound:
            # Deleted between this request's read and the copy.
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        self.message_user(
            request,
            format_html(
                '“{}” was duplicated as <a href="{}">“{}”</a>, a new draft with its brief '
                "and script.",
                project,
                self._url("change", copy.pk),
                copy,
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self._url("change", copy.pk))

    def delete_project_view(self, request: HttpRequest, project_id: Any) -> HttpResponseBase:
        """Ask first (GET); then delete the project, its events and its files (POST)."""
        if not self.has_delete_project_permission(request):
            raise PermissionDenied
        project = VideoProject.objects.filter(pk=project_id).first()
        if project is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project_id))
        if request.method == "POST":
            return self._delete_project(request, project)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": project,
            "title": "Are you sure?",
            "subtitle": None,
            "event_count": project.events.count(),
        }
        return TemplateResponse(request, "admin/projects/videoproject/delete_project.html", context)

    def _delete_project(self, request: HttpRequest, project: VideoProject) -> HttpResponseBase:
        try:
            # The history entry names the project, so it is written first; a
            # refusal rolls it back with everything else.
            with transaction.atomic():
                self.log_deletions(request, [project])
                lifecycle.delete_project(project)
        except ProjectNotFound:
            return self._get_obj_does_not_exist_redirect(request, self.opts, str(project.pk))
        except lifecycle.Conflict as refused:
            self.message_user(
                request, f"“{project}” was not deleted: {refused.message}", messages.ERROR
            )
            return HttpResponseRedirect(self._url("change", project.pk))
        self.message_user(
            request,
            f"“{project}” was deleted, with its events, clips, previews and video.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self._url("changelist"))

    # --- actions ---------------------------------------------------------------

    @admin.action(description="Cancel job", permissions=["lifecycle"])
    def cancel_jobs(self, request: HttpRequest, projects: QuerySet[VideoProject]) -> None:
        self._run_lifecycle(request, projects, "cancelled", lifecycle.cancel)

    @admin.action(description="Retry", permissions=["lifecycle"])
    def retry_jobs(self, request: HttpRequest, projects: QuerySet[VideoProject]) -> None:
        self._run_lifecycle(request, projects, "restarted", lifecycle.retry)

    @admin.action(description="Mark notified", permissions=["lifecycle"])
    def mark_notified(self, request: HttpRequest, projects: QuerySet[VideoProject]) -> None:
        self._run_lifecycle(request, projects, "marked notified", lifecycle.mark_notified)

    def _run_lifecycle(
        self,
        request: HttpRequest,
        projects: QuerySet[VideoProject],
        done: str,
        operation: Callable[[VideoProject], object],
    ) -> None:
        """Apply `operation` to each project on its own; report the successes and each refusal."""
        succeeded = 0
        for project in projects:
            try:
                operation(project)
            except REFUSALS as refused:
                self.message_user(
                    request, f"“{project}” was not {done}: {_reason(refused)}", messages.WARNING
                )
            else:
                succeeded += 1
        noun = "project" if succeeded == 1 else "projects"
        self.message_user(request, f"{succeeded} {noun} {done}.", messages.SUCCESS)


def _reason(refused: Exception) -> str:
    return refused.message if isinstance(refused, lifecycle.Conflict) else str(refused)


# --- the script as a table -----------------------------------------------------------


def _script_context(script: Any) -> dict[str, Any]:
    """The scenes as rows of cells under the columns the script has; its raw JSON if odd."""
    if not script:
        return {"empty": True}
    scenes = script.get("scenes") if isinstance(script, dict) else None
    if not isinstance(scenes, list) or not all(isinstance(scene, dict) for scene in scenes):
        return {"raw": json.dumps(script, ensure_ascii=False, indent=2, sort_keys=True)}
    present = {key for scene in scenes for key in scene}
    columns = [key for key in SCENE_COLUMNS if key in present]
    columns += sorted(present - set(SCENE_COLUMNS))
    seconds = [scene.get("seconds") for scene in scenes]
    total = sum(seconds) if all(isinstance(s, int | float) for s in seconds) else None
    return {
        "script_title": script.get("title", ""),
        "columns": columns,
        "rows": [[_cell(scene.get(column, "")) for column in columns] for scene in scenes],
        "scene_count": len(scenes),
        "total_seconds": total,
    }


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- the event history -------------------------------------------------------------------


def _event_row(event: ProgressEvent) -> dict[str, Any]:
    payload = json.dumps(event.payload, ensure_ascii=False, sort_keys=True, indent=1)
    return {
        "seq": event.seq,
        "kind": event.kind,
        "kind_label": event.get_kind_display(),
        "summary": _event_summary(event.kind, event.payload),
        "payload": Truncator(payload).chars(PAYLOAD_PREVIEW_CHARS),
        "created_at": event.created_at,
    }


def _event_summary(kind: str, payload: Any) -> str:
    """One line a person reads: the log line, the error, or where the job stood."""
    if not isinstance(payload, dict):
        return ""
    if kind == EventKind.LOG:
        return str(payload.get("line", ""))
    if kind == EventKind.ERROR:
        error = payload.get("error") or {}
        return f"{error.get('message', '')} ({error.get('code', '')})"
    parts = []
    if kind == EventKind.STATUS and payload.get("status"):
        parts.append(STATUS_LABELS.get(payload["status"], str(payload["status"])))
    if payload.get("progress") is not None:
        parts.append(f"{payload['progress']}%")
    if payload.get("progressMessage"):
        parts.append(str(payload["progressMessage"]))
    return " · ".join(part for part in parts if part)


def _page_context(page: Any, kind: str) -> dict[str, Any]:
    paginator = page.paginator
    return {
        "events": [_event_row(event) for event in page.object_list],
        "page": page,
        "page_range": paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1),
        "ellipsis": paginator.ELLIPSIS,
        "kind": kind,
        "matching": paginator.count,
    }
