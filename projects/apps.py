from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = "Video projects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_q.signals import pre_enqueue

        from projects.engines import check_engine_settings
        from videocreation.checks import check_production_secret, refuse_development_secret

        checks.register(check_engine_settings)
        checks.register(check_production_secret)
        pre_enqueue.connect(refuse_development_secret, dispatch_uid="refuse_development_secret")
