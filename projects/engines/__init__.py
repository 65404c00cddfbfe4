"""Engines: how each stage of a job is done. `VIDEO_ENGINE` picks one ("local" or a dotted path)."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from projects.engines.base import Engine

ENGINES = {"local": "projects.engines.local.LocalEngine"}


def get_engine() -> Engine:
    path = ENGINES.get(settings.VIDEO_ENGINE, settings.VIDEO_ENGINE)
    return import_string(path)()
