"""The admin: a window on projects and their event logs, and three lifecycle actions.

Nothing here writes a project's fields. The change page is view-only (a
`save()` from the admin form would be a read-modify-write racing the
worker's progress reports), and the actions call `lifecycle`, whose
compare-and-set updates refuse what the current status does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from projects import lifecycle
from projects.api.ranges import stored_file_response
from projects.models import Status, VideoProject

EVENT_HISTORY_LIMIT = 200
# Status events carry the whole status object, script included; the table
# shows the start of each payload so a long job's page stays light.
PAYLOAD_PREVIEW_CHARS = 300


@admin.register(VideoProject)
class VideoProjectAdmin(admin.ModelAdmin):
    list_display = [
        "title",
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
        ("Result", {"fields": ["script_data", "video_link", "preview_set"]}),
        ("Times", {"fields": [("created_at", "updated_at", "started_at", "completed_at")]}),
        ("Event history", {"fields": ["event_history"]}),
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
        "script_data",
        "video_link",
        "preview_set",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "event_history",
    ]

    # --- permissions: look, and act through the lifecycle; never edit ---------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # View-only: Django then renders the form without inputs and answers a
        # POST to it with 403, so the status cannot be set through the form.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting a running project would pull the row from under its worker.
        return False

    def has_lifecycle_permission(self, request: HttpRequest) -> bool:
        """Who may run the actions: those Django would let change a project."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    # --- what the list and the page show ---------------------------------------

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

    def get_urls(self) -> list[URLPattern]:
        video = path(
            "<uuid:project_id>/video/",
            self.admin_site.admin_view(self.video_view),
            name="projects_videoproject_video",
        )
        return [video, *super().get_urls()]

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

    @admin.display(description="Events")
    def event_history(self, project: VideoProject) -> SafeString:
        events = list(
            project.events.order_by("-seq").only("seq", "kind", "payload", "created_at")[
                :EVENT_HISTORY_LIMIT
            ]
        )
        if not events:
            return format_html("<p>{}</p>", "No events yet.")
        total = project.events.count()
        rows = format_html_join(
            "\n",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (
                    event.seq,
                    event.kind,
                    _payload_preview(event.payload),
                    localize(timezone.localtime(event.created_at)),
                )
                for event in events
            ),
        )
        return format_html(
            "<p>The last {} of {} events, newest first.</p>"
            "<table><thead><tr><th>Seq</th><th>Kind</th><th>Payload</th><th>Created</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            len(events),
            total,
            rows,
        )

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
            except lifecycle.Conflict as refused:
                self.message_user(
                    request, f"“{project}” was not {done}: {refused.message}", messages.WARNING
                )
            else:
                succeeded += 1
        noun = "project" if succeeded == 1 else "projects"
        self.message_user(request, f"{succeeded} {noun} {done}.", messages.SUCCESS)


def _payload_preview(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
    return Truncator(text).chars(PAYLOAD_PREVIEW_CHARS)
