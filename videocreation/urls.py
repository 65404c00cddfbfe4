from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from projects import openai_api
from projects.views import CreatorPage


@api_view(["GET"])
def api_root(request: Request) -> Response:
    """The video-creation API: your projects, and those still unfinished."""
    return Response(
        {
            "projects": reverse("projects", request=request),
            "unfinished": reverse("unfinished", request=request),
            "credits": reverse("credits", request=request),
            "schema": reverse("schema", request=request),
            "docs": reverse("docs", request=request),
        }
    )


urlpatterns = [
    path("", CreatorPage.as_view(), name="creator"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/video-creation/", api_root, name="api-root"),
    path("api/video-creation/", include("projects.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/models/<str:model_id>", openai_api.model, name="openai-model"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
]

handler400 = "projects.api.errors.bad_request"
handler404 = "projects.api.errors.not_found"
handler500 = "projects.api.errors.server_error"
