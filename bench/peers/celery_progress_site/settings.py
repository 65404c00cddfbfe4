"""Django's `startproject` settings, trimmed to what celery-progress's poll needs.

The broker and the result backend are the Redis that BENCH_REDIS_URL names (run.py
gives it db 10). The poll touches no database: DATABASES is empty.
"""

from __future__ import annotations

import os

SECRET_KEY = "celery-progress-peer-for-benchmarks-only-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "celery_progress",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "celery_progress_site.urls"
WSGI_APPLICATION = "celery_progress_site.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

CELERY_BROKER_URL = os.environ["BENCH_REDIS_URL"]
CELERY_RESULT_BACKEND = os.environ["BENCH_REDIS_URL"]
# Each run sends its task to a queue of its own: a message a killed run left behind is
# never picked up by the next one.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "celery")
CELERY_RESULT_EXPIRES = 3600
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
