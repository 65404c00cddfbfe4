from __future__ import annotations

from django.urls import path

from webhooks import api

urlpatterns = [
    path("webhooks", api.EndpointsView.as_view(), name="webhooks"),
    path("webhooks/<uuid:endpoint_id>", api.EndpointView.as_view(), name="webhook"),
    path(
        "webhooks/<uuid:endpoint_id>/rotate-secret",
        api.RotateSecretView.as_view(),
        name="webhook-rotate",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries",
        api.DeliveriesView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries/<str:delivery_id>/resend",
        api.ResendView.as_view(),
        name="webhook-resend",
    ),
]
