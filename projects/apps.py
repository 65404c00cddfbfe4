from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = "Video projects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from projects.engines import check_engine_settings

        checks.register(check_engine_settings)
