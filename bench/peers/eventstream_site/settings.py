"""Django's `startproject` settings, trimmed, plus django-eventstream with its database storage.

The database is the PostgreSQL database BENCH_DATABASE_URL names (the benchmark makes it).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "eventstream-peer-for-benchmarks-only-0123456789-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_eventstream",
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
ROOT_URLCONF = "eventstream_site.urls"
ASGI_APPLICATION = "eventstream_site.asgi.application"
_database = urlsplit(os.environ["BENCH_DATABASE_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username or "postgres",
        "HOST": _database.hostname or "127.0.0.1",
        "PORT": str(_database.port or 5432),
    }
}
USE_TZ = True

# Events are kept in the database (Last-Event-ID works across restarts), as the README's
# reliable-delivery set-up has it. `NumberedStorage` is that storage; it also remembers
# the id of the event it stored last, for the hook to report.
EVENTSTREAM_STORAGE_CLASS = "eventstream_site.storage.NumberedStorage"
