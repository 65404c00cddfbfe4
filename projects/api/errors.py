"""Every error body is `{"detail": <a sentence>, "code": <a word>}` (+ `fields`, + `status`).

Validation errors: `fields` maps each field, named as the API names it, to its
messages; a nested field is named by its path — `scriptData.title`,
`scriptData.scenes` (the list as a whole), `scriptData.scenes[2]` (the third
scene as a whole), `scriptData.scenes[2].seconds`. `detail` is the first
message as a person reads it: the form's own words ("Scenes must be a whole
number from 1 to 12.", "Scene 3: seconds must be a number from 1 to 20."), or
a message of DRF's after its field's name ("offset: A valid integer is required.").

Under `/v1/` (the OpenAI-compatible endpoint) errors take OpenAI's shape instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from credits.ledger import InsufficientCredits
from projects.api.serializers import PLAIN_CODE, PLAIN_MESSAGES
from projects.api.throttles import throttled_message
from projects.lifecycle import Conflict, IdempotencyKeyReused


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Conflict):
        return Response(
            {"detail": exc.message, "code": "conflict", "status": exc.status}, status=409
        )
    if isinstance(exc, InsufficientCredits):
        body = {"balance": exc.balance, "price": exc.price}
        return Response(
            {"detail": _not_enough(exc), "code": "insufficient_credits", **body}, status=402
        )
    if isinstance(exc, IdempotencyKeyReused):
        return Response({"detail": str(exc), "code": "idempotency_key_reused"}, status=422)
    if isinstance(exc, RequestDataTooBig):
        # Django's own answer would be an HTML 400 page.
        return Response({"detail": too_large_message(), "code": "too_large"}, status=413)
    if isinstance(exc, Http404):
        # DRF's handler would answer it without our `code`.
        exc = exceptions.NotFound(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_body(exc.detail)
    elif isinstance(exc, exceptions.Throttled):
        # DRF's handler has set Retry-After from the same wait.
        response.data = {"detail": throttled_message(exc.wait), "code": "throttled"}
    elif isinstance(exc, exceptions.APIException):
        response.data = {"detail": str(exc.detail), "code": _code_of(exc)}
    return response


def _not_enough(refused: InsufficientCredits) -> str:
    return (
        f"This job costs {refused.price} credits and your balance is {refused.balance}. "
        "Ask for more credits, or make the video shorter."
    )


def _code_of(exc: exceptions.APIException) -> str:
    code = getattr(exc.detail, "code", None) or exc.default_code
    return {"not_found": "not_found"}.get(code, code)


NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY
SCENE_PATH = re.compile(r"^scriptData\.scenes\[(\d+)\]")


def validation_body(detail: Any) -> dict[str, Any]:
    fields: dict[str, list[str]] = {}
    for path, message in _flatten(detail, ""):
        fields.setdefault(path or NON_FIELD, []).append(message)
    if not fields:
        fields[NON_FIELD] = ["This value is invalid."]
    first_path, first_messages = next(iter(fields.items()))
    sentence = _sentence(first_path, first_messages[0])
    if len(fields) > 1:
        sentence += f" (and {len(fields) - 1} more field{'s' if len(fields) > 2 else ''} to fix)"
    return {"detail": sentence, "code": "invalid", "fields": fields}


def _flatten(errors: Any, path: str) -> Iterator[tuple[str, str]]:
    """Each message with the path of its field (a serializer's own errors: its path)."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            if isinstance(key, int):
                yield from _flatten(value, f"{path}[{key}]")
            elif key == NON_FIELD:
                yield from _flatten(value, path)
            else:
                yield from _flatten(value, f"{path}.{key}" if path else str(key))
    elif isinstance(errors, list):
        for index, error in enumerate(errors):
            # A list serializer's errors: one dict per item ({} for a good one).
            nested = isinstance(error, dict | list)
            yield from _flatten(error, f"{path}[{index}]" if nested else path)
    else:
        # An ErrorDetail stays one, keeping its code (PLAIN_CODE).
        yield path, errors if isinstance(errors, str) else str(errors)


def _sentence(path: str, message: str) -> str:
    if message not in PLAIN_MESSAGES and getattr(message, "code", None) != PLAIN_CODE:
        return message if path == NON_FIELD else f"{path}: {message}"
    scene = SCENE_PATH.match(path)
    if scene is None:
        return message
    return f"Scene {int(scene.group(1)) + 1}: {message[:1].lower()}{message[1:]}"


def too_large_message() -> str:
    return f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes."


def json_error(status: int, detail: str, code: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status)


def _openai_error(status: int, message: str, type: str, code: str) -> JsonResponse:
    error = {"message": message, "type": type, "param": None, "code": code}
    return JsonResponse({"error": error}, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> Any:
    """Django's 400s (a body too large, a malformed request) in the shape of the path's API."""
    too_large = isinstance(exception, RequestDataTooBig)
    if request.path.startswith("/v1/"):
        if too_large:
            return _openai_error(413, too_large_message(), "invalid_request_error", "too_large")
        return _openai_error(
            400, "The request could not be read.", "invalid_request_error", "bad_request"
        )
    if request.path.startswith("/api/"):
        if too_large:
            return json_error(413, too_large_message(), "too_large")
        return json_error(400, "The request could not be read.", "bad_request")
    from django.views.defaults import bad_request as html_bad_request

    return html_bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> Any:
    if request.path.startswith("/v1/"):
        return _openai_error(
            404, "There is nothing at this address.", "invalid_request_error", "not_found"
        )
    if request.path.startswith("/api/"):
        return json_error(404, "There is nothing at this address.", "not_found")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> Any:
    if request.path.startswith("/v1/"):
        return _openai_error(
            500,
            "Something went wrong on our side; please try again.",
            "server_error",
            "server_error",
        )
    if request.path.startswith("/api/"):
        return json_error(
            500, "Something went wrong on our side; please try again.", "server_error"
        )
    from django.views.defaults import server_error as html_server_error

    return html_server_error(request)
