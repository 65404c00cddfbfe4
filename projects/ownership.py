"""Whose project is this: the one check every entry point makes (DESIGN.md, "Ownership").

The API, the status poll and the event streams, the WebSocket consumer and
the OpenAI-compatible endpoint all find a caller's project here. Someone
else's project, one that does not exist, and an id that is not even a UUID
get the same `ProjectNotFound`, so ids cannot be probed; each entry point
answers it in its own error shape.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from projects.models import VideoProject

NOT_YOURS = "No project with this id belongs to you."


class ProjectNotFound(Http404):
    """The caller has no project with this id (whether or not anyone else does)."""

    def __init__(self) -> None:
        super().__init__(NOT_YOURS)


class ProjectIdConverter:
    """The URL segment of a project id, handed over as written.

    Django's `uuid` converter answers a malformed id with the 404 of an unknown
    address; taking any segment lets `owned_project` answer it with the same
    404 as someone else's project.
    """

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: Any) -> str:
        return str(value)


def owned_project(user: Any, project_id: Any) -> VideoProject:
    """The user's project with this id, or `ProjectNotFound`."""
    pk = _as_uuid(project_id)
    project = None if pk is None else VideoProject.objects.owned_by(user).filter(pk=pk).first()
    if project is None:
        raise ProjectNotFound
    return project


async def aowned_project(user: Any, project_id: Any) -> VideoProject:
    """`owned_project` for async code."""
    pk = _as_uuid(project_id)
    if pk is None:
        raise ProjectNotFound
    project = await VideoProject.objects.owned_by(user).filter(pk=pk).afirst()
    if project is None:
        raise ProjectNotFound
    return project


def token_holders_project(key: str, pk: uuid.UUID) -> QuerySet[VideoProject]:
    """The project `pk` if the active user holding token `key` owns it, as one query.

    The same answer as `owned_project(user_for_token(key), pk)` in one trip to
    the database instead of two (the token and its user, then the project): the
    status poll's authentication costs a join, and a deleted token or a
    deactivated user stops working at their next request. Empty when the token,
    the user or the project is not there: the caller asks the slow way which.
    """
    return VideoProject.objects.filter(pk=pk, owner__auth_token__key=key, owner__is_active=True)


def as_uuid(project_id: Any) -> uuid.UUID | None:
    """A project id as a UUID; None for anything that cannot be one."""
    return _as_uuid(project_id)


def _as_uuid(project_id: Any) -> uuid.UUID | None:
    if isinstance(project_id, uuid.UUID):
        return project_id
    if not isinstance(project_id, str):
        # A JSON number, list or null from a WebSocket message is no id either.
        return None
    try:
        return uuid.UUID(project_id)
    except ValueError:
        return None
