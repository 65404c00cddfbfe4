from __future__ import annotations

from django.urls import path

from projects import streams
from projects.api import views

urlpatterns = [
    path("projects", views.ProjectsView.as_view(), name="projects"),
    path("projects/<uuid:project_id>", views.ProjectView.as_view(), name="project"),
    path("projects/<uuid:project_id>/script", views.ScriptView.as_view(), name="project-script"),
    path("projects/<uuid:project_id>/render", views.RenderView.as_view(), name="project-render"),
    path("projects/<uuid:project_id>/cancel", views.CancelView.as_view(), name="project-cancel"),
    path("projects/<uuid:project_id>/status", streams.status, name="project-status"),
    path("projects/<uuid:project_id>/events", streams.events, name="project-events"),
    path(
        "projects/<uuid:project_id>/notified",
        views.NotifiedView.as_view(),
        name="project-notified",
    ),
    path("projects/<uuid:project_id>/log", views.LogView.as_view(), name="project-log"),
    path("projects/<uuid:project_id>/video", views.VideoView.as_view(), name="project-video"),
    path(
        "projects/<uuid:project_id>/scenes/<int:index>/preview",
        views.ScenePreviewView.as_view(),
        name="scene-preview",
    ),
    path("projects/<uuid:project_id>/history", views.HistoryView.as_view(), name="project-history"),
    path("stats", views.StatsView.as_view(), name="stats"),
    path("active", views.ActiveView.as_view(), name="active"),
    path("unfinished", views.UnfinishedView.as_view(), name="unfinished"),
]
