"""Health for load balancers and operators: `/healthz` and `/healthz/workers`.

- `GET /healthz` — 200 when the database answers and every migration this
  code knows is applied; 503 otherwise, saying which (a web process that
  cannot read its tables should get no traffic). It lists the workers too,
  but does not fail for them: pages and the API answer without a worker.
- `GET /healthz/workers` — 200 when at least one `manage.py worker` of this
  process's queue and broker has beaten within WORKER_STALE_SECONDS; 503 otherwise.

A middleware answers them, right after SecurityMiddleware (exempt from its
HTTPS redirect: probes come over plain HTTP) and before everything else:
load balancers probe by address, with a Host header that is no entry of
ALLOWED_HOSTS, and a probe needs no session, CSRF token, user or throttle.
Probes come every few seconds: the database gets one `SELECT 1` and one
read of the heartbeats; the migration plan is read until it is empty once,
then never again in this process (migrations are not unapplied under a
running release). Anyone may probe, so the answer names no host, process or
database error unless the probe carries the operator's METRICS_TOKEN.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_q.brokers import get_broker
from django_q.conf import Conf

from projects.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

# Listed in /healthz; a deployment has a handful of workers, rarely dozens.
MAX_LISTED_WORKERS = 50


class HealthCheckMiddleware:
    """Answers the health paths before the host check, sessions and CSRF (see above)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        answer = HEALTH_PATHS.get(request.path_info)
        if answer is None:
            return self.get_response(request)
        return _respond(answer, request)

    async def _acall(self, request: HttpRequest) -> Any:
        answer = HEALTH_PATHS.get(request.path_info)
        if answer is None:
            return await self.get_response(request)
        return await sync_to_async(_respond)(answer, request)


def _respond(answer: Any, request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(
            {"detail": f"Method {request.method} not allowed.", "code": "method_not_allowed"},
            status=405,
        )
        response["Allow"] = "GET, HEAD"
        return response
    body, status = answer()
    if not _for_operator(request):
        body = _public(body)
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def _for_operator(request: HttpRequest) -> bool:
    """Whether the probe carries the operator's METRICS_TOKEN (as /metrics asks for it)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    token = settings.METRICS_TOKEN
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


# The database's own words name its host and port; a worker's, the machine and process.
PUBLIC_DETAIL = {
    "database_unreachable": "The database does not answer.",
    "database_error": "The database failed.",
}


def _public(body: dict[str, Any]) -> dict[str, Any]:
    """What anyone probing may read: states, counts and ages, no host, pid or error text.

    With `Authorization: Bearer <METRICS_TOKEN>` the probe gets the whole answer.
    """
    body = dict(body)
    if body.get("code") in PUBLIC_DETAIL:
        body["detail"] = PUBLIC_DETAIL[body["code"]]
    if "workers" in body:
        hidden = {"host", "pid"}
        body["workers"] = [
            {key: value for key, value in worker.items() if key not in hidden}
            for worker in body["workers"]
        ]
    return body


def healthz() -> tuple[dict[str, Any], int]:
    problem = _database_problem()
    if problem is not None:
        return _unavailable("database_unreachable", problem, database="unreachable"), 503
    try:
        pending = pending_migrations()
        workers = [] if pending else list_workers()
    except DatabaseError as error:
        # It answered `SELECT 1` a moment ago, then failed.
        detail = f"The database failed: {_sentence(error)}"
        return _unavailable("database_error", detail, database="error"), 503
    if pending:
        detail = f"{len(pending)} migration(s) not applied: {', '.join(pending)}."
        parts = {"database": "ok", "migrations": "pending", "pending": pending}
        return _unavailable("migrations_pending", detail, **parts), 503
    return {"status": "ok", "database": "ok", "migrations": "ok", "workers": workers}, 200


def healthz_workers() -> tuple[dict[str, Any], int]:
    problem = _database_problem()
    if problem is not None:
        return _unavailable("database_unreachable", problem, workers=[]), 503
    try:
        workers = list_workers()
    except DatabaseError as error:
        # It answered `SELECT 1` a moment ago: most likely the table is not migrated yet.
        detail = f"Could not read the workers' heartbeats: {_sentence(error)}"
        return _unavailable("database_error", detail, workers=[]), 503
    if not any(worker["alive"] for worker in workers):
        queue, broker = this_queue()
        detail = (
            f"No worker of queue {queue!r} on the {broker} broker has been seen in the "
            f"last {settings.WORKER_STALE_SECONDS:g} s."
        )
        return _unavailable("no_workers", detail, workers=workers), 503
    return {"status": "ok", "workers": workers}, 200


HEALTH_PATHS = {
    "/healthz": healthz,
    "/healthz/": healthz,
    "/healthz/workers": healthz_workers,
    "/healthz/workers/": healthz_workers,
}


def _unavailable(code: str, detail: str, **parts: Any) -> dict[str, Any]:
    return {"status": "unavailable", "code": code, "detail": detail, **parts}


def _database_problem() -> str | None:
    """None when the database answers `SELECT 1`, else what went wrong."""
    for attempt in (1, 2):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return None
        except DatabaseError as error:
            # A kept connection may have died with a database restart: one fresh try.
            connection.close()
            if attempt == 2:
                logger.warning("Health check: the database does not answer: %s", error)
                return f"The database does not answer: {_sentence(error)}"
    return None


def _sentence(error: DatabaseError) -> str:
    return str(error).strip()[:300] or type(error).__name__


_all_applied = False


def pending_migrations() -> list[str]:
    """`app.name` of each migration this code has and the database has not applied."""
    global _all_applied
    if _all_applied:
        return []
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = [f"{migration.app_label}.{migration.name}" for migration, backwards in plan]
    _all_applied = not pending
    return pending


def forget_migrations() -> None:
    """Ask the database again on the next probe (for tests)."""
    global _all_applied
    _all_applied = False


@functools.cache
def this_queue() -> tuple[str, str]:
    """The queue this process's tasks go to, and the broker's kind (`orm` or `redis`)."""
    return Conf.CLUSTER_NAME, type(get_broker()).__name__.lower()


def list_workers() -> list[dict[str, Any]]:
    """The workers of this process's queue, the most recently seen first."""
    queue, broker = this_queue()
    heartbeats = WorkerHeartbeat.objects.of_queue(queue, broker).with_age().order_by("-seen_at")
    return [heartbeat.to_dict() for heartbeat in heartbeats[:MAX_LISTED_WORKERS]]
