"""Whose project is this: the one check every entry point makes (DESIGN.md, "Ownership").

The API, the status poll and the event streams, the WebSocket consumer and
the OpenAI-compatible endpoint all find a caller's project here. Someone
else's project, one that does not exist, and an id that is not even a UUID
get the same `ProjectNotFound`, so ids cannot be probed; each entry point
answers it in its own error shape.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
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


# The status poll asks `token_holders_project` many times a second with other
# values. Django compiles a queryset's SQL, and works out how to convert each
# column, at every evaluation: more than half of a poll's time. Each thread
# (a web pool thread keeps its database connection) does both once and reuses
# them with the values of each poll (bench/auth_cost.py measures the difference).
_KEY, _PK = "sentinel-key", uuid.UUID(int=1)
_per_thread = threading.local()


@dataclass(frozen=True)
class _Compiled:
    db: Any
    sql: str
    slots: tuple[str, ...]  # which value goes to each placeholder: "key" or "pk"
    compiler: Any
    converters: dict[int, Any]
    names: list[str]


def _compiled(version_only: bool) -> _Compiled:
    db = connections[DEFAULT_DB_ALIAS]  # this thread's
    cache = _per_thread.__dict__.setdefault("compiled", {})
    compiled = cache.get(version_only)
    if compiled is None or compiled.db is not db:
        projects = token_holders_project(_KEY, _PK).order_by()  # one row: no ordering
        query = projects.values_list("version", flat=True) if version_only else projects
        compiler = query[:1].query.get_compiler(connection=db)
        sql, params = compiler.as_sql()
        columns = [column for column, _, _ in compiler.select]
        values = {_KEY: "key", _prepared_pk(_PK, db): "pk"}
        compiled = cache[version_only] = _Compiled(
            db=db,
            sql=sql,
            slots=tuple(values[param] for param in params),
            compiler=compiler,
            converters=compiler.get_converters(columns),
            names=[column.target.attname for column in columns],
        )
    return compiled


def _prepared_pk(pk: uuid.UUID, db: Any) -> Any:
    return VideoProject._meta.pk.get_db_prep_value(pk, db)


def _fetch(version_only: bool, key: str, pk: uuid.UUID) -> tuple[_Compiled, Any] | None:
    compiled = _compiled(version_only)
    values = {"key": key, "pk": _prepared_pk(pk, compiled.db)}
    with compiled.db.cursor() as cursor:
        cursor.execute(compiled.sql, [values[slot] for slot in compiled.slots])
        row = cursor.fetchone()
    if row is None:
        return None
    if compiled.converters:
        [row] = compiled.compiler.apply_converters([row], compiled.converters)
    return compiled, row


def token_holders_version(key: str, pk: uuid.UUID) -> int | None:
    """`token_holders_project(key, pk)`'s version, or None: all a poll answered 304 reads."""
    found = _fetch(True, key, pk)
    return None if found is None else found[1][0]


def token_holders_row(key: str, pk: uuid.UUID) -> VideoProject | None:
    """`token_holders_project(key, pk)`'s project, or None."""
    found = _fetch(False, key, pk)
    if found is None:
        return None
    compiled, row = found
    return VideoProject.from_db(DEFAULT_DB_ALIAS, compiled.names, row)


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
