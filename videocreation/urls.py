from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from projects import openai_api
from projects.metrics import metrics_view
from projects.operator_page import operator_page
from projects.views import CreatorPage

# Each is also the name of the URL it links to.
API_ROOT_LINKS = ("projects", "unfinished", "credits", "webhooks", "schema", "docs")


# Described for the schema: `check --deploy` warns about a view it cannot describe.
@extend_schema(
    responses=inline_serializer(
        "ApiRoot", {link: serializers.URLField() for link in API_ROOT_LINKS}
    )
)
@api_view(["GET"])
def api_root(request: Request) -> Response:
    """The video-creation API: your projects, those still unfinished, credits and webhooks."""
    return Response({link: reverse(link, request=request) for link in API_ROOT_LINKS})


urlpatterns = [
    path("", CreatorPage.as_view(), name="creator"),
    # Before the admin's own URLs, which would answer 404 for it; staff only.
    path("admin/operator/", admin.site.admin_view(operator_page), name="admin-operator"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/video-creation/", api_root, name="api-root"),
    path("api/video-creation/", include("projects.api.urls")),
    path("api/video-creation/", include("webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/models/<str:model_id>", openai_api.model, name="openai-model"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
]

handler400 = "projects.api.errors.bad_request"
handler404 = "projects.api.errors.not_found"
handler500 = "projects.api.errors.server_error"
