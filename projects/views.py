"""Server-rendered pages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView


@method_decorator(ensure_csrf_cookie, name="dispatch")
class CreatorPage(LoginRequiredMixin, TemplateView):
    """The creator page: the brief, the jobs' live progress, review, and the video."""

    template_name = "creator.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(**kwargs) | {
            "poll_ms": settings.CREATOR_POLL_MS,
            "poll_seconds": f"{settings.CREATOR_POLL_MS / 1000:g}",
            "use_sse": settings.CREATOR_USE_SSE,
            # The page cannot see heartbeats (EventSource hides comments); it only
            # needs to know how long a healthy stream may stay silent.
            "sse_heartbeat_ms": round(settings.SSE_HEARTBEAT_SECONDS * 1000),
            # Prices before any project exists (a new brief), and of a script being edited.
            "script_price": settings.CREDITS_PER_SCRIPT,
            "credits_per_second": settings.CREDITS_PER_VIDEO_SECOND,
        }
