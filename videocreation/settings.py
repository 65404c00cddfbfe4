"""Settings: every value comes from the environment, through small helpers that refuse bad values.

With nothing set, the project runs on a SQLite file beside this repository and
django-q2's ORM broker. `DATABASE_URL=postgres://…` and `REDIS_URL=redis://…`
move it to PostgreSQL and Redis without a code change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Used only where no SECRET_KEY is given; the web entry points, the workers and
# the commands that run them refuse it unless DEBUG is on (see
# `require_production_secret` and videocreation/checks.py).
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-do-not-deploy"


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    return _env_number(name, default, int, "a whole number", minimum)


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(name, default, float, "a number", minimum)


def _env_number(
    name: str, default: Any, parse: Callable[[str], Any], kind: str, minimum: Any
) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_schedule(name: str, default: str) -> list[float]:
    """Seconds between attempts, comma-separated, each a positive number; empty: the default."""
    try:
        schedule = [float(item) for item in env_list(name, default) or default.split(",")]
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be seconds separated by commas.") from None
    if not schedule or any(seconds <= 0 for seconds in schedule):
        raise ImproperlyConfigured(f"{name} must hold positive numbers of seconds.")
    return schedule


_RATE_PERIODS = {"s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day"}


def env_rate(name: str, default: str) -> str | None:
    """A throttle rate such as `30/min` (DRF's form), or None for `off`.

    DRF reads only the period's first letter, so `30/month` would silently
    mean a minute: only the periods DRF means are taken.
    """
    raw = env_str(name, default).strip().lower()
    if raw in {"", "off", "none"}:
        return None
    count, _, period = raw.partition("/")
    known = period in _RATE_PERIODS or period.removesuffix("s") in _RATE_PERIODS
    if count.isdigit() and int(count) >= 1 and known:
        return f"{int(count)}/{period}"
    raise ImproperlyConfigured(
        f"{name} must be a rate such as 30/min (per s, min, hour or day) or off, not {raw!r}."
    )


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")


def require_production_secret() -> None:
    """Called by the web entry points: a server without DEBUG must have its own secret."""
    if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random value "
            "(or DEBUG=1 for local development only)."
        )


# --- Production (HTTPS) ------------------------------------------------------

# HTTPS=1 says the site is reached over TLS (usually ended by a proxy in front):
# plain-HTTP requests are redirected, browsers are told to use HTTPS only (HSTS),
# and cookies travel only over TLS. Off by default, because `make run` serves
# http://127.0.0.1:8000, where secure cookies would never come back. Each
# protection can be set on its own; `manage.py check --deploy` names what is missing.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
# Load balancers probe over plain HTTP (matched without the leading slash).
SECURE_REDIRECT_EXEMPT = [r"^healthz(/workers)?/?$"]
# A year, what HSTS preload lists ask for; try a few minutes first on a new domain:
# browsers keep refusing plain HTTP for as long as the last answer said.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
# The header only makes the domain eligible; browsers preload it once someone submits
# it at hstspreload.org, which takes effect for a registrable domain only.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_REFERRER_POLICY = env_str("SECURE_REFERRER_POLICY", "same-origin")


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """The header by which a TLS-ending proxy says a request came over HTTPS.

    `1` means `X-Forwarded-Proto: https`; otherwise a header name (its value
    `https`) or `Name: value`. Only for a proxy that always sets or strips that
    header: else a client could send it and pass plain HTTP off as HTTPS.
    """
    raw = env_str(name, "").strip()
    if raw.lower() in {"", "0", "false", "no", "off"}:
        return None
    if raw.lower() in {"1", "true", "yes", "on"}:
        raw = "X-Forwarded-Proto: https"
    header, colon, value = (part.strip() for part in raw.partition(":"))
    if not re.fullmatch(r"[A-Za-z0-9-]+", header) or (colon and not value):
        raise ImproperlyConfigured(
            f"{name} must be 1 (X-Forwarded-Proto: https), a header name or "
            f"'Name: value', not {raw!r}."
        )
    return ("HTTP_" + header.upper().replace("-", "_"), value or "https")


SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "projects",
    "credits",
    "webhooks",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before the host check, sessions and CSRF: load balancers probe by address.
    "videocreation.health.HealthCheckMiddleware",
    "videocreation.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into our 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "videocreation.urls"
WSGI_APPLICATION = "videocreation.wsgi.application"
ASGI_APPLICATION = "videocreation.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# Connections are kept this many seconds by the threads that serve requests
# (videocreation/server.py) and by workers, and checked before reuse; a thread
# Django's ASGI handler makes for one request closes its own when it ends.
CONN_MAX_AGE = env_int("CONN_MAX_AGE", 300)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=CONN_MAX_AGE, conn_health_checks=CONN_MAX_AGE > 0
    )
}
IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if IS_POSTGRES:
    # An unreachable server fails a connection (a request, /healthz) in this many
    # seconds instead of the operating system's TCP timeout of minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    )

if IS_SQLITE:
    # WAL lets the web process read while a worker writes; IMMEDIATE takes the
    # write lock when a transaction starts, so two writers queue on the busy
    # timeout instead of failing with "database is locked" half way through.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not an in-memory database: worker processes started by the
    # tests must see the same data.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    # SQLITE_TEST_DB lets two test runs share a checkout without sharing a database.
    test_db = env_str("SQLITE_TEST_DB", str(BASE_DIR / "var" / "test-db.sqlite3"))
    DATABASES["default"]["TEST"] = {"NAME": test_db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and queue -------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "")

if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    # On one machine without Redis the web processes (WEB_CONCURRENCY) share a
    # cache through files, so a user's throttle history is one, not one per process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env_str("CACHE_DIR", str(BASE_DIR / "var" / "cache")),
        }
    }

# The longest a job may run before it is failed with a clear error.
JOB_TIME_LIMIT = env_int("JOB_TIME_LIMIT", 20 * 60, minimum=10)
# A worker holds a job for this long; a heartbeat renews the lease every
# JOB_HEARTBEAT_SECONDS whatever the engine is doing, and every worker's sweeper
# (`manage.py worker`, every JOB_SWEEP_SECONDS) puts back jobs whose lease ran
# out: a job whose worker died is taken up again within lease + sweep seconds.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 10, minimum=3)
JOB_HEARTBEAT_SECONDS = env_float("JOB_HEARTBEAT_SECONDS", 2.0, minimum=0.1)
JOB_SWEEP_SECONDS = env_float("JOB_SWEEP_SECONDS", 1.0, minimum=0.1)
# Each sweep also records the worker's heartbeat (WorkerHeartbeat); /healthz/workers
# and `manage.py worker_status` count a worker gone once it has been silent this long.
WORKER_STALE_SECONDS = env_float("WORKER_STALE_SECONDS", 30.0, minimum=0.3)
if WORKER_STALE_SECONDS < 3 * JOB_SWEEP_SECONDS:
    raise ImproperlyConfigured(
        "WORKER_STALE_SECONDS must be at least three times JOB_SWEEP_SECONDS, "
        "or one slow sweep would count a live worker gone."
    )
if JOB_HEARTBEAT_SECONDS * 2 > JOB_LEASE_SECONDS:
    raise ImproperlyConfigured(
        "JOB_HEARTBEAT_SECONDS must be at most half of JOB_LEASE_SECONDS, "
        "or one late heartbeat loses a live worker its job."
    )
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
JOB_RETRY_BACKOFF_SECONDS = env_float("JOB_RETRY_BACKOFF_SECONDS", 2.0)
# At most this many progress writes per second per job; the last state is always written.
PROGRESS_MIN_INTERVAL = env_float("PROGRESS_MIN_INTERVAL", 0.25)

Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "videocreation"),
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    # django-q2 kills a task after `timeout` and, with a broker that
    # acknowledges, redelivers one not acknowledged after `retry`; both sit
    # above the job's own limit so neither cuts a healthy job short.
    "timeout": JOB_TIME_LIMIT + 120,
    "retry": JOB_TIME_LIMIT + 300,
    "max_attempts": 2,
    # Our tasks record their own failures on the project; a task the worker
    # lost is put back by the lease sweeper, not by the broker.
    "ack_failures": True,
    "save_limit": 250,
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = env_float("Q_POLL_SECONDS", 0.2)

# --- Credits (see credits/ledger.py) ---------------------------------------

# Starting a script job costs CREDITS_PER_SCRIPT; a render, CREDITS_PER_VIDEO_SECOND
# per second of the script's scenes. A new user's account opens with the grant.
CREDITS_PER_SCRIPT = env_int("CREDITS_PER_SCRIPT", 1)
CREDITS_PER_VIDEO_SECOND = env_int("CREDITS_PER_VIDEO_SECOND", 1)
CREDITS_SIGNUP_GRANT = env_int("CREDITS_SIGNUP_GRANT", 100)
# At most this many jobs of one user hold a worker or a place in the broker at
# once; further starts are accepted (and charged) and wait their turn.
MAX_ACTIVE_JOBS_PER_USER = env_int("MAX_ACTIVE_JOBS_PER_USER", 2, minimum=1)

VIDEO_ENGINE = env_str("VIDEO_ENGINE", "local")
# Per stage: the script job (outline, scenes) and the render job (clips, joining).
# Empty means VIDEO_ENGINE. Names: local, llm (script), remote, command (render),
# or a dotted path to an engine class.
SCRIPT_ENGINE = env_str("SCRIPT_ENGINE", "")
RENDER_ENGINE = env_str("RENDER_ENGINE", "")

# The `llm` script engine: any server speaking OpenAI's chat completions API.
SCRIPT_LLM_BASE_URL = env_str("SCRIPT_LLM_BASE_URL", "https://api.openai.com/v1")
SCRIPT_LLM_MODEL = env_str("SCRIPT_LLM_MODEL", "gpt-4o-mini")
SCRIPT_LLM_API_KEY = env_str("SCRIPT_LLM_API_KEY", "")
SCRIPT_LLM_TIMEOUT_SECONDS = env_float("SCRIPT_LLM_TIMEOUT_SECONDS", 120.0, minimum=1.0)

# The `remote` render engine: a provider speaking the OpenAI-style videos API.
REMOTE_VIDEO_BASE_URL = env_str("REMOTE_VIDEO_BASE_URL", "https://api.openai.com/v1")
REMOTE_VIDEO_API_KEY = env_str("REMOTE_VIDEO_API_KEY", "")
REMOTE_VIDEO_MODEL = env_str("REMOTE_VIDEO_MODEL", "sora-2")
REMOTE_VIDEO_POLL_SECONDS = env_float("REMOTE_VIDEO_POLL_SECONDS", 2.0, minimum=0.01)
REMOTE_VIDEO_TIMEOUT_SECONDS = env_float("REMOTE_VIDEO_TIMEOUT_SECONDS", 30.0, minimum=1.0)
REMOTE_VIDEO_MAX_RETRIES = env_int("REMOTE_VIDEO_MAX_RETRIES", 5, minimum=0)
# The first retry of a failed request waits this long; each next one twice as long.
REMOTE_VIDEO_RETRY_BACKOFF_SECONDS = env_float("REMOTE_VIDEO_RETRY_BACKOFF_SECONDS", 1.0)

# The `command` render engine: a team's own pipeline script, run once per scene
# (split like a shell would, but run without one). On a stop its process group
# gets SIGTERM, then SIGKILL after the grace, so a script can tidy up first.
RENDER_COMMAND = env_str("RENDER_COMMAND", "")
RENDER_COMMAND_STOP_GRACE_SECONDS = env_float("RENDER_COMMAND_STOP_GRACE_SECONDS", 3.0)
# The script sees an allow-listed environment (PATH, HOME, locale, …) and these
# names too, comma-separated: what the team's pipeline needs, never our secrets.
RENDER_COMMAND_ENV = env_list("RENDER_COMMAND_ENV", "")

# Events of projects idle this long are pruned by a daily django-q2 schedule.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30, minimum=1)

# How often the creator page asks for the status of a running job.
CREATOR_POLL_MS = env_int("CREATOR_POLL_MS", 3000, minimum=100)
# Whether the creator page follows a job over Server-Sent Events (falling back
# to polling when the stream fails) instead of polling, unless the person
# switched; on by default (live is what people expect).
CREATOR_USE_SSE = env_bool("CREATOR_USE_SSE", True)

# --- Webhooks (see webhooks/) ------------------------------------------------

# A failed delivery is tried again after each of these waits in turn, then given
# up: the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
WEBHOOK_RETRY_SCHEDULE = env_schedule("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")
# An endpoint whose every attempt failed for this long is turned off.
WEBHOOK_DISABLE_AFTER_SECONDS = env_float("WEBHOOK_DISABLE_AFTER_SECONDS", 86400.0, minimum=1.0)
# At most one `job.progress` per endpoint this often.
WEBHOOK_PROGRESS_SECONDS = env_float("WEBHOOK_PROGRESS_SECONDS", 10.0, minimum=0.0)
# One attempt, from connecting to the end of the answer read.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# How much of a receiver's answer is read and kept (bytes).
WEBHOOK_RESPONSE_LIMIT = env_int("WEBHOOK_RESPONSE_LIMIT", 4096, minimum=0)
# A message handed to the broker this long ago and still not attempted is sent again:
# the broker lost it, or the worker that took it died. A second task is harmless
# (the first to claim the message attempts it; the other finds nothing due).
WEBHOOK_TASK_LOST_SECONDS = env_float("WEBHOOK_TASK_LOST_SECONDS", 60.0, minimum=0.1)
# Private, loopback and link-local receivers are refused unless this is on
# (tests, development): a webhook must not reach what only our machines reach.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False)
# Deliveries have their own django-q2 queue, and `manage.py worker` its own cluster
# of this many processes for it: a message does not wait behind long jobs.
WEBHOOK_QUEUE = env_str("WEBHOOK_QUEUE", f"{Q_CLUSTER['name']}-webhooks")
WEBHOOK_WORKERS = env_int("WEBHOOK_WORKERS", 2, minimum=1)
# A user keeps at most this many endpoints.
WEBHOOK_MAX_ENDPOINTS = env_int("WEBHOOK_MAX_ENDPOINTS", 10, minimum=1)
# How long a rotated-out secret still signs beside the new one.
WEBHOOK_SECRET_GRACE_SECONDS = env_float("WEBHOOK_SECRET_GRACE_SECONDS", 86400.0)

# --- Live events (see projects/bus.py) -----------------------------------

# How a committed event wakes the web processes: PostgreSQL NOTIFY, Redis
# pub/sub, or listeners polling the database (the only way on SQLite).
EVENT_BUS = env_str("EVENT_BUS", "postgres" if IS_POSTGRES else "redis" if REDIS_URL else "poll")
if EVENT_BUS not in {"postgres", "redis", "poll"}:
    raise ImproperlyConfigured(f"EVENT_BUS must be postgres, redis or poll, not {EVENT_BUS!r}.")
if EVENT_BUS == "postgres" and not IS_POSTGRES:
    raise ImproperlyConfigured("EVENT_BUS=postgres needs a PostgreSQL DATABASE_URL.")
if EVENT_BUS == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("EVENT_BUS=redis needs REDIS_URL.")
# How often a polling listener reads the database (and, with NOTIFY or Redis,
# how often it checks anyway, in case a wake-up was lost).
EVENT_POLL_SECONDS = env_float("EVENT_POLL_SECONDS", 0.25, minimum=0.01)
EVENT_SAFETY_POLL_SECONDS = env_float("EVENT_SAFETY_POLL_SECONDS", 5.0, minimum=0.1)
# SSE: a comment line this often keeps proxies from closing an idle stream; a
# stream ends after SSE_MAX_SECONDS (clients reconnect with Last-Event-ID).
SSE_HEARTBEAT_SECONDS = env_float("SSE_HEARTBEAT_SECONDS", 15.0, minimum=0.1)
SSE_MAX_SECONDS = env_float("SSE_MAX_SECONDS", 1800.0, minimum=1.0)
SSE_RETRY_MS = env_int("SSE_RETRY_MS", 3000, minimum=100)
LONG_POLL_MAX_SECONDS = 60
# `manage.py web` runs WEB_CONCURRENCY server processes on one port, each with
# WEB_THREADS threads for requests that answer at once (videocreation/server.py).
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", os.cpu_count() or 1, minimum=1)
WEB_THREADS = env_int("WEB_THREADS", 8, minimum=1)
# A web process vouches for its live clients this often; `GET active` counts a
# client gone once its process has been silent for LIVE_CLIENT_STALE_SECONDS.
LIVE_CLIENT_REFRESH_SECONDS = env_float("LIVE_CLIENT_REFRESH_SECONDS", 15.0, minimum=0.1)
LIVE_CLIENT_STALE_SECONDS = env_float("LIVE_CLIENT_STALE_SECONDS", 45.0, minimum=0.3)
# A WebSocket session records how far each of its projects' logs it has sent
# this often (and when its socket closes); a session idle this many days goes.
WS_CURSOR_FLUSH_SECONDS = env_float("WS_CURSOR_FLUSH_SECONDS", 1.0, minimum=0.05)
WS_SESSION_RETENTION_DAYS = env_int("WS_SESSION_RETENTION_DAYS", 7, minimum=1)

# /metrics answers a request carrying `Authorization: Bearer <METRICS_TOKEN>`, or a
# staff session; anyone else gets 404 (projects/metrics.py).
METRICS_TOKEN = env_str("METRICS_TOKEN", "").strip()
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters, or unset.")

# --- Auth, API ------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out sign-in before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# After AXES_FAILURE_LIMIT failed sign-ins (the page or the admin) for one username
# from one IP address, that pair is refused with 429 for AXES_COOLOFF_MINUTES,
# counted again from each refused try. Locking on the username alone would let
# anyone lock anyone out; on the address alone, a whole office behind one NAT.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15.0, minimum=0.1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "videocreation.lockout.locked_out"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "projects.api.auth.TokenOrBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "projects.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "projects.api.errors.exception_handler",
}

# Per user, in Django's cache (projects/api/throttles.py): creating projects, and
# starting jobs (script, render, and /v1/chat/completions). `off` turns one off.
THROTTLE_CREATE_RATE = env_rate("THROTTLE_CREATE_RATE", "30/min")
THROTTLE_START_RATE = env_rate("THROTTLE_START_RATE", "30/min")
# Open SSE, WebSocket and OpenAI streams one user may hold across every web
# process (counted in LiveClient); 0 means no cap.
MAX_STREAMS_PER_USER = env_int("MAX_STREAMS_PER_USER", 20)

SPECTACULAR_SETTINGS = {
    "TITLE": "videocreation API",
    "DESCRIPTION": (
        "Write a brief, get a video script, review it, render the video; "
        "follow every job's progress."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for the webhook event types, wherever a field lists them.
    "ENUM_NAME_OVERRIDES": {"WebhookEventEnum": "webhooks.models.EVENT_TYPES"},
    # Project ids take any URL segment (projects.ownership); their schema is still a UUID.
    "PATH_CONVERTER_OVERRIDES": {"pid": {"type": "string", "format": "uuid"}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "projects.api.schema.document_async_views",
    ],
}

# --- Files ------------------------------------------------------------------

# The largest request body (bytes) an API call may send; past it: 413. Django's
# default, 2.5 MB, is far above any real request (a brief is ≤ 2,000 characters,
# a whole script ~25 KB) and small enough that holding it in memory is harmless.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1024)

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (tests, a first run), serve straight from the finders.
WHITENOISE_USE_FINDERS = True

# --- Media storage (see projects/storage.py) --------------------------------
# Where the results a person fetches (videos, scene previews) are kept: `local`,
# the MEDIA_ROOT folder (one machine, or a folder every machine mounts), or `s3`,
# a bucket of an S3-compatible service that every web process and worker reaches.
# Workers keep their work files (scene clips, checkpoints) under MEDIA_ROOT either way.
MEDIA_STORAGE = env_str("MEDIA_STORAGE", "local").strip().lower() or "local"
_ADDRESSING_STYLES = {"auto", "path", "virtual"}


def s3_media_storage() -> dict[str, Any]:
    """`STORAGES["default"]` for MEDIA_STORAGE=s3, from the AWS_* environment."""
    bucket = env_str("AWS_STORAGE_BUCKET_NAME", "").strip()
    if not bucket:
        raise ImproperlyConfigured(
            "MEDIA_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME: the bucket that keeps the "
            "videos and previews."
        )
    endpoint = env_str("AWS_S3_ENDPOINT_URL", "").strip()
    if endpoint and not endpoint.startswith(("https://", "http://")):
        raise ImproperlyConfigured(
            f"AWS_S3_ENDPOINT_URL must be an http(s):// address, not {endpoint!r}."
        )
    style = env_str("AWS_S3_ADDRESSING_STYLE", "").strip().lower()
    if style and style not in _ADDRESSING_STYLES:
        raise ImproperlyConfigured(
            f"AWS_S3_ADDRESSING_STYLE must be auto, path or virtual, not {style!r}."
        )
    expire = env_int("AWS_QUERYSTRING_EXPIRE", 3600, minimum=1)
    if expire > 604_800:
        raise ImproperlyConfigured("AWS_QUERYSTRING_EXPIRE must be at most 604800 (7 days).")
    # Keys: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment (read by
    # django-storages), else boto3's own chain (an instance role, ~/.aws).
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "").strip() or None,
            "addressing_style": style or None,
            # Version 4 signatures: every AWS region and S3-compatible service takes them.
            "signature_version": env_str("AWS_S3_SIGNATURE_VERSION", "s3v4").strip() or "s3v4",
            "location": env_str("AWS_LOCATION", "").strip().strip("/"),
            # Objects stay private; a download is a redirect to a signed address that
            # expires (S3 caps a signature at 7 days).
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": expire,
        },
    }


if MEDIA_STORAGE == "s3":
    STORAGES["default"] = s3_media_storage()
elif MEDIA_STORAGE != "local":
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be local or s3, not {MEDIA_STORAGE!r}.")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "projects": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    },
}
