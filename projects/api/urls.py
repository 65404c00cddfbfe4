from __future__ import annotations

from django.urls import path, register_converter

from credits.api import CreditsView
from projects import streams
from projects.api import views
from projects.ownership import ProjectIdConverter

# Any segment: a malformed id gets the same 404 as someone else's project.
register_converter(ProjectIdConverter, "pid")

urlpatterns = [
    path("projects", views.ProjectsView.as_view(), name="projects"),
    path("projects/<pid:project_id>", views.ProjectView.as_view(), name="project"),
    path("projects/<pid:project_id>/script", views.ScriptView.as_view(), name="project-script"),
    path("projects/<pid:project_id>/render", views.RenderView.as_view(), name="project-render"),
    path("projects/<pid:project_id>/cancel", views.CancelView.as_view(), name="project-cancel"),
    path(
        "projects/<pid:project_id>/duplicate",
        views.DuplicateView.as_view(),
        name="project-duplicate",
    ),
    path("projects/<pid:project_id>/dismiss", views.DismissView.as_view(), name="project-dismiss"),
    path("projects/<pid:project_id>/status", streams.status, name="project-status"),
    path("projects/<pid:project_id>/events", streams.events, name="project-events"),
    path(
        "projects/<pid:project_id>/notified",
        views.NotifiedView.as_view(),
        name="project-notified",
    ),
    path("projects/<pid:project_id>/log", views.LogView.as_view(), name="project-log"),
    path("projects/<pid:project_id>/video", views.VideoView.as_view(), name="project-video"),
    path(
        "projects/<pid:project_id>/scenes/<int:index>/preview",
        views.ScenePreviewView.as_view(),
        name="scene-preview",
    ),
    path("projects/<pid:project_id>/history", views.HistoryView.as_view(), name="project-history"),
    path("events", streams.all_events, name="all-events"),
    path("stats", views.StatsView.as_view(), name="stats"),
    path("active", views.ActiveView.as_view(), name="active"),
    path("unfinished", views.UnfinishedView.as_view(), name="unfinished"),
    path("credits", CreditsView.as_view(), name="credits"),
]
