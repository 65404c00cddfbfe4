"""OpenAPI for the endpoints that are async Django views (projects/streams.py).

drf-spectacular describes DRF views only; the status long-poll and the event
stream are plain async views for speed, so their operations are added here,
in the same shape as every other operation of the API.
"""

from __future__ import annotations

from typing import Any

PROJECT_ID = {
    "in": "path",
    "name": "project_id",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
SECURITY = [{"tokenAuth": []}, {"cookieAuth": []}]


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _error("Invalid input; nothing was changed."),
    "401": _error("Not signed in."),
    "404": _error("No such project of yours."),
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"in": "query", "name": name, "schema": schema, "description": description}


STATUS = {
    "get": {
        "operationId": "get_status",
        "summary": (
            "The status object; If-None-Match answers 304 when nothing changed, "
            "and `wait` holds the answer until the version passes `since`"
        ),
        "tags": ["video-creation"],
        "security": SECURITY,
        "parameters": [
            PROJECT_ID,
            _query(
                "wait",
                {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
                "Long-poll: seconds to wait for a change (at most 60).",
            ),
            _query(
                "since",
                {"type": "integer", "minimum": 0},
                "Long-poll: answer once `version` is greater than this (default: the current one).",
            ),
            {"in": "header", "name": "If-None-Match", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}
                },
            },
            "304": {"description": "Not modified since the ETag you sent."},
            **ERRORS,
        },
    }
}

EVENTS = {
    "get": {
        "operationId": "stream_events",
        "summary": (
            "Server-Sent Events: the current status, then every event of the project's log "
            "(`id` is its seq); with Last-Event-ID, every event after it first"
        ),
        "tags": ["video-creation"],
        "security": SECURITY,
        "parameters": [
            PROJECT_ID,
            _query(
                "lastEventId",
                {"type": "integer", "minimum": 0},
                "Resume after this seq (the Last-Event-ID header does the same).",
            ),
            {"in": "header", "name": "Last-Event-ID", "schema": {"type": "integer"}},
        ],
        "responses": {
            "200": {
                "description": (
                    "`text/event-stream`: events `status`, `progress`, `log` and `error`, "
                    "each `data` a JSON object with its `seq`; a comment every 15 s."
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **ERRORS,
        },
    }
}


def document_async_views(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    paths = result.setdefault("paths", {})
    paths["/api/video-creation/projects/{project_id}/status"] = STATUS
    paths["/api/video-creation/projects/{project_id}/events"] = EVENTS
    return result
