"""The answer to a sign-in that django-axes has locked out: 429, a page, and `Retry-After`."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def locked_out(request: HttpRequest, *_: Any) -> HttpResponse:
    """django-axes' AXES_LOCKOUT_CALLABLE, for the sign-in page and the admin's alike.

    axes passes (response, credentials) from sync code but only (credentials)
    from its async middleware; neither is needed here, so both are ignored.
    Each refused try starts the cool-off again (axes'
    AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT), so the wait is all of it.
    """
    seconds = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds())
    context = {"minutes": math.ceil(seconds / 60)}
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response
