"""One thin view per operation: validate, call the lifecycle, shape the answer.

The views a browser's visitor can act on are GenericAPIViews with a serializer
per method, so that DRF's browsable API draws their forms
(projects/api/browsable.py); they validate with the same serializers.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Func, IntegerField
from django.http import FileResponse, HttpResponseBase
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework import status as http
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from projects import lifecycle, progress, storage
from projects.api.browsable import NoBodySerializer, ProjectBrowsableRenderer, project_links
from projects.api.ranges import stored_file_response
from projects.api.serializers import (
    MAX_SCENES,
    ActiveSerializer,
    BriefSerializer,
    ErrorSerializer,
    HistoryQuerySerializer,
    HistorySerializer,
    LogQuerySerializer,
    LogSerializer,
    PageQuerySerializer,
    ProjectSerializer,
    ScriptEditSerializer,
    ScriptSerializer,
    StatsSerializer,
    StatusSerializer,
)
from projects.api.throttles import CreateThrottle, StartThrottle
from projects.lifecycle import Conflict
from projects.models import EventKind, LiveClient, Step, VideoProject
from projects.ownership import ProjectNotFound, owned_project
from projects.pipeline import preview_name

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; nothing was changed."),
    401: OpenApiResponse(ErrorSerializer, description="Not signed in."),
    404: OpenApiResponse(ErrorSerializer, description="No such project of yours."),
}
CONFLICT = {409: OpenApiResponse(ErrorSerializer, description="The status does not allow it.")}
THROTTLED = {
    429: OpenApiResponse(ErrorSerializer, description="Too many requests; see `Retry-After`.")
}


def get_owned_project(request: Request, project_id: Any) -> VideoProject:
    """The caller's project, or 404 — the same 404 for someone else's, none, or a malformed id."""
    return owned_project(request.user, project_id)


def project_body(request: Request, project: VideoProject) -> dict[str, Any]:
    """A project as API clients see it, with the `links` to its pages and actions."""
    return {**project.to_dict(), "links": project_links(request, project)}


class ProjectPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "pageSize"
    max_page_size = 100


class FormView(GenericAPIView):
    """A view whose body, per method, is `body_serializers[method]`; none: an action's button."""

    renderer_classes = [JSONRenderer, ProjectBrowsableRenderer]
    body_serializers: dict[str, type[serializers.Serializer]] = {}

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return self.body_serializers.get(self.request.method, NoBodySerializer)

    def form_project(self, **kwargs: Any) -> VideoProject | None:
        """The project a PATCH form starts from: the browsable API's form, not a request's body."""
        if "data" in kwargs or kwargs.get("instance") is not None:
            return None
        if "project_id" not in self.kwargs:
            return None  # described for the schema, not asked
        try:
            return get_owned_project(self.request, self.kwargs["project_id"])
        except ProjectNotFound:
            return None  # the page is the 404 itself


class ProjectsView(FormView):
    throttle_classes = [CreateThrottle]  # POST only: listing is free
    pagination_class = ProjectPagination
    body_serializers = {"POST": BriefSerializer}

    def get_queryset(self) -> Any:
        return VideoProject.objects.owned_by(self.request.user).order_by("-created_at")

    @extend_schema(
        operation_id="list_projects",
        summary="Your projects, newest first",
        responses={200: ProjectSerializer(many=True), 401: ERRORS[401]},
    )
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([project_body(request, project) for project in page])

    @extend_schema(
        operation_id="create_project",
        summary="Create a project from a brief",
        request=BriefSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                description="Repeat a create safely: the same key and body give the same project.",
            )
        ],
        responses={201: ProjectSerializer, 422: ErrorSerializer, **ERRORS, **THROTTLED},
    )
    def post(self, request: Request) -> Response:
        brief = self.get_serializer(data=request.data)
        brief.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            project = lifecycle.create_project(request.user, brief.validated_data)
            return Response(project_body(request, project), status=http.HTTP_201_CREATED)
        if len(key) > 200:
            raise ValidationError(
                {"Idempotency-Key": ["The Idempotency-Key must be at most 200 characters."]}
            )
        project = lifecycle.create_project_once(request.user, brief.validated_data, key)
        return Response(project_body(request, project), status=http.HTTP_201_CREATED)


class ProjectView(FormView):
    body_serializers = {"PATCH": BriefSerializer}

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.method == "PATCH":
            kwargs["partial"] = True
            # The form shows the brief as it is: a PATCH of only what is changed.
            if kwargs.get("instance") is None:
                kwargs["instance"] = self.form_project(**kwargs)
        return super().get_serializer(*args, **kwargs)

    @extend_schema(operation_id="get_project", responses={200: ProjectSerializer, **ERRORS})
    def get(self, request: Request, project_id: Any) -> Response:
        return Response(project_body(request, get_owned_project(request, project_id)))

    @extend_schema(
        operation_id="edit_project",
        summary="Edit the brief (while DRAFT or FAILED)",
        request=BriefSerializer(partial=True),
        responses={200: ProjectSerializer, **ERRORS, **CONFLICT},
    )
    def patch(self, request: Request, project_id: Any) -> Response:
        project = get_owned_project(request, project_id)
        brief = self.get_serializer(data=request.data)
        brief.is_valid(raise_exception=True)
        if brief.validated_data:
            project = lifecycle.edit_brief(project, brief.validated_data)
        return Response(project_body(request, project))

    @extend_schema(
        operation_id="delete_project",
        summary="Delete the project with its events, previews and videos (not while a job runs)",
        responses={204: None, **ERRORS, **CONFLICT},
    )
    def delete(self, request: Request, project_id: Any) -> Response:
        lifecycle.delete_project(get_owned_project(request, project_id))
        return Response(status=http.HTTP_204_NO_CONTENT)


class DuplicateView(FormView):
    throttle_classes = [CreateThrottle]  # a copy is a new project

    @extend_schema(
        operation_id="duplicate_project",
        summary="Copy the brief and the saved script into a new DRAFT (in any status)",
        request=None,
        responses={201: ProjectSerializer, **ERRORS, **THROTTLED},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        copy = lifecycle.duplicate_project(get_owned_project(request, project_id))
        location = request.build_absolute_uri(reverse("project", args=[copy.pk]))
        return Response(
            project_body(request, copy),
            status=http.HTTP_201_CREATED,
            headers={"Location": location},
        )


class ScriptView(FormView):
    throttle_classes = [StartThrottle]  # POST only: editing the script is free
    body_serializers = {"PATCH": ScriptEditSerializer}

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.method == "PATCH" and kwargs.get("instance") is None:
            project = self.form_project(**kwargs)
            if project is not None:
                # The form's JSON box starts from the saved script, to edit in place.
                kwargs["instance"] = {"scriptData": _form_script(project.script_data)}
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        operation_id="start_script",
        summary="Start writing the script",
        request=None,
        responses={202: StatusSerializer, **ERRORS, **CONFLICT, **THROTTLED},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        project = lifecycle.start_job(get_owned_project(request, project_id), Step.SCRIPT)
        return Response(project.to_status_dict(), status=http.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="edit_script",
        summary="Edit the script (while DRAFT)",
        request=ScriptEditSerializer,
        responses={200: StatusSerializer, **ERRORS, **CONFLICT},
    )
    def patch(self, request: Request, project_id: Any) -> Response:
        project = get_owned_project(request, project_id)
        edit = self.get_serializer(data=request.data)
        edit.is_valid(raise_exception=True)
        project = lifecycle.edit_script(project, edit.validated_data["scriptData"])
        return Response(project.to_status_dict())


def _form_script(script: Any) -> Any:
    """The saved script as the edit form shows it; None (an empty form) if it will not fit."""
    if not script:
        return None
    try:
        ScriptSerializer(instance=script).data  # noqa: B018 — does it fit the form's fields?
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
    return script


class RenderView(FormView):
    throttle_classes = [StartThrottle]

    @extend_schema(
        operation_id="start_render",
        summary="Start rendering the video (needs a script)",
        request=None,
        responses={202: StatusSerializer, **ERRORS, **CONFLICT, **THROTTLED},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        project = lifecycle.start_job(get_owned_project(request, project_id), Step.RENDER)
        return Response(project.to_status_dict(), status=http.HTTP_202_ACCEPTED)


class CancelView(FormView):
    @extend_schema(
        operation_id="cancel_job",
        summary="Cancel the running job; the project returns to DRAFT",
        request=None,
        responses={202: StatusSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        project = lifecycle.cancel(get_owned_project(request, project_id))
        return Response(project.to_status_dict(), status=http.HTTP_202_ACCEPTED)


class LogView(APIView):
    MAX_LINES = 500

    @extend_schema(
        operation_id="get_log",
        summary="The job log, from line `offset` on (at most 500 lines a call)",
        parameters=[OpenApiParameter("offset", int, description="Lines the caller already has.")],
        responses={200: LogSerializer, **ERRORS},
    )
    def get(self, request: Request, project_id: Any) -> Response:
        project = get_owned_project(request, project_id)
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        offset = query.validated_data["offset"]
        lines = _log_lines(project, offset, self.MAX_LINES)
        return Response({"lines": lines, "nextOffset": offset + len(lines)})


class _LineCount(Func):
    """How many lines a `log` event carries, counted by the database (older events: one)."""

    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return "COALESCE(json_array_length(payload, '$.lines'), 1)", []

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return "COALESCE(jsonb_array_length(payload -> 'lines'), 1)", []


def _log_lines(project: VideoProject, offset: int, limit: int) -> list[str]:
    """Lines `offset` to `offset + limit` of the job log, which events carry in batches.

    The line counts come from the database, so only the events that hold the
    page are read whole, however late the offset in a long log.
    """
    log = project.events.filter(kind=EventKind.LOG).order_by("seq")
    counts = log.annotate(line_count=_LineCount()).values_list("seq", "line_count")
    seqs: list[int] = []
    skip, held = offset, 0
    for seq, count in counts.iterator():
        if not seqs and skip >= count:
            skip -= count
            continue
        seqs.append(seq)
        held += count
        if held - skip >= limit:
            break
    if not seqs:
        return []
    lines: list[str] = []
    page = log.filter(seq__gte=seqs[0], seq__lte=seqs[-1]).values_list("payload", flat=True)
    for payload in page:
        lines += payload.get("lines", [payload.get("line", "")])
    return lines[skip : skip + limit]


class HistoryView(APIView):
    @extend_schema(
        operation_id="get_history",
        summary="The project's event log after seq `after`, in order (at most `limit`, ≤ 1000)",
        parameters=[
            OpenApiParameter("after", int, description="The last seq you have (0: all)."),
            OpenApiParameter("limit", int, description="How many events, 1 to 1000 (100)."),
        ],
        responses={200: HistorySerializer, **ERRORS},
    )
    def get(self, request: Request, project_id: Any) -> Response:
        project = get_owned_project(request, project_id)
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        events = list(project.events.filter(seq__gt=after).order_by("seq")[: limit + 1])
        page = events[:limit]
        return Response(
            {
                "events": [event.to_dict() for event in page],
                "nextAfter": page[-1].seq if page else after,
                "hasMore": len(events) > limit,
                "version": project.version,
            }
        )

    @extend_schema(
        operation_id="delete_history",
        summary="Clear the event log of a project with no running job",
        responses={204: None, **ERRORS, **CONFLICT},
    )
    def delete(self, request: Request, project_id: Any) -> Response:
        project = get_owned_project(request, project_id)
        if progress.delete_history(project) is None:
            raise Conflict("The history of a running job cannot be cleared.", project.status)
        return Response(status=http.HTTP_204_NO_CONTENT)


class StatsView(APIView):
    @extend_schema(
        operation_id="get_stats",
        summary="Projects counted by status: yours (staff: everyone's)",
        responses={200: StatsSerializer, 401: ERRORS[401]},
    )
    def get(self, request: Request) -> Response:
        everyone = request.user.is_staff
        projects = (
            VideoProject.objects.all() if everyone else VideoProject.objects.owned_by(request.user)
        )
        by_status = projects.count_by_status()
        return Response(
            {
                "scope": "everyone" if everyone else "mine",
                "total": sum(by_status.values()),
                "byStatus": by_status,
            }
        )


class ActiveView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="get_active",
        summary="Connected SSE and WebSocket clients by user and by project, in every web process",
        responses={
            200: ActiveSerializer,
            401: ERRORS[401],
            403: OpenApiResponse(ErrorSerializer, description="Only staff may see this."),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(LiveClient.objects.summary())


class UnfinishedView(APIView):
    @extend_schema(
        operation_id="list_unfinished",
        summary=(
            "Your projects in progress, in DRAFT, or finished but not yet notified; "
            "not those dismissed (“Not now”) since they last changed"
        ),
        responses={200: StatusSerializer(many=True), 401: ERRORS[401]},
    )
    def get(self, request: Request) -> Response:
        projects = (
            VideoProject.objects.owned_by(request.user)
            .unfinished()
            .not_dismissed()
            .order_by("-created_at")
        )
        return Response([project.to_status_dict() for project in projects[:100]])


class DismissView(FormView):
    @extend_schema(
        operation_id="dismiss_resume",
        summary="“Not now”: leave the project out of `unfinished` until it changes again",
        description=(
            "Records, on the server, that the owner declined to resume the project as it is "
            "now (`resumeDismissed` becomes true); every tab and device then leaves it out of "
            "`GET unfinished`. Any later change to the project (a job's progress, an edit, "
            "a start) brings it back. Idempotent; any status."
        ),
        request=None,
        responses={200: StatusSerializer, **ERRORS},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        project = lifecycle.dismiss_resume(get_owned_project(request, project_id))
        return Response(project.to_status_dict())


class NotifiedView(FormView):
    @extend_schema(
        operation_id="mark_notified",
        summary="Mark the finished job as told to its owner (idempotent)",
        request=None,
        responses={200: StatusSerializer, **ERRORS, **CONFLICT},
    )
    def post(self, request: Request, project_id: Any) -> Response:
        project = lifecycle.mark_notified(get_owned_project(request, project_id))
        return Response(project.to_status_dict())


class VideoView(APIView):
    @extend_schema(
        operation_id="download_video",
        summary="The last finished MP4, whatever the status (Range requests answer 206)",
        responses={
            (200, "video/mp4"): OpenApiResponse(description="The whole video."),
            (206, "video/mp4"): OpenApiResponse(description="The requested byte range."),
            302: OpenApiResponse(
                description=(
                    "With `MEDIA_STORAGE=s3`: `Location` is a short-lived signed address "
                    "at the storage, which answers 200 or 206 itself. Follow it without "
                    "this API's `Authorization` header (curl -L and HTTP clients drop it "
                    "for another host)."
                )
            ),
            404: ERRORS[404],
            416: OpenApiResponse(description="The range lies outside the file."),
        },
    )
    def get(self, request: Request, project_id: Any) -> HttpResponseBase:
        project = get_owned_project(request, project_id)
        # Served in any status: a re-render, cancelled or failed, keeps the last video.
        if not project.video:
            raise NotFound("This project has no rendered video yet.")
        filename = f"{_slug(project.title)}.mp4"
        try:
            return stored_file_response(request, project.video.name, "video/mp4", filename)
        except FileNotFoundError:
            raise NotFound("The video file is missing; render the project again.") from None


class ScenePreviewView(APIView):
    @extend_schema(
        operation_id="scene_preview",
        summary="A scene's animated preview (WebP), drawn while the script was written",
        responses={
            (200, "image/webp"): OpenApiResponse(description="Animated WebP."),
            404: ERRORS[404],
        },
    )
    def get(self, request: Request, project_id: Any, index: int) -> HttpResponseBase:
        project = get_owned_project(request, project_id)
        if index >= MAX_SCENES:
            # A huge index would make a file name the OS refuses: an OSError, a 500.
            raise NotFound("This scene has no preview.")
        # The saved script's previews; a rewrite draws its own beside them. A
        # preview is small: read through the storage wherever it is kept.
        try:
            preview = storage.media().open(preview_name(project.pk, index, project.preview_set))
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound("This scene has no preview.") from None
        response = FileResponse(preview, content_type="image/webp")
        response["Cache-Control"] = "private, no-cache"
        return response


def _slug(title: str) -> str:
    kept = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return "-".join(part for part in kept.split("-") if part)[:60] or "video"
