"""Production settings fail loudly: HTTPS from the environment, and no process on the public key."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django_q.brokers import get_broker
from django_q.tasks import async_task

from tests.conftest import AsgiServer, database_url_for_children
from videocreation.settings import DEVELOPMENT_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent

# The environment README.md documents for production ("Production settings").
PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "HTTPS": "1",
    "ALLOWED_HOSTS": "video.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://video.example.com",
    "SECURE_PROXY_SSL_HEADER": "1",
}

SECURITY_SETTINGS = [
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_REFERRER_POLICY",
]


def clean_env(**env: str) -> dict[str, str]:
    """This environment without the tests' own key, DEBUG or HTTPS settings, plus `env`.

    Also without DJANGO_ALLOW_ASYNC_UNSAFE, which the browser tests set for their
    own process (tests/e2e/conftest.py) and no deployment may.
    """
    dropped = {"SECRET_KEY", "DEBUG", "HTTPS", *SECURITY_SETTINGS, "ALLOWED_HOSTS"}
    dropped.add("DJANGO_ALLOW_ASYNC_UNSAFE")
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **env}


def run(command: list[str], timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )


def settings_under(**env: str) -> dict[str, Any]:
    """The security settings a process started with this environment ends up with."""
    script = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name) for name in {SECURITY_SETTINGS!r}}}))"
    )
    done = run(
        [sys.executable, "-c", script], DJANGO_SETTINGS_MODULE="videocreation.settings", **env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --- HTTPS from the environment ----------------------------------------------------


def test_without_https_nothing_forces_tls_so_make_run_works_on_plain_http() -> None:
    assert settings_under() == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_REFERRER_POLICY": "same-origin",
    }


def test_https_turns_on_the_redirect_hsts_and_secure_cookies() -> None:
    assert settings_under(HTTPS="1") == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_REFERRER_POLICY": "same-origin",
    }


def test_each_protection_can_be_set_on_its_own() -> None:
    chosen = settings_under(
        HTTPS="1",
        SECURE_HSTS_SECONDS="300",
        SECURE_HSTS_PRELOAD="0",
        SECURE_SSL_REDIRECT="0",
        SECURE_REFERRER_POLICY="strict-origin-when-cross-origin",
    )

    assert chosen["SECURE_HSTS_SECONDS"] == 300
    assert chosen["SECURE_HSTS_PRELOAD"] is False
    assert chosen["SECURE_SSL_REDIRECT"] is False
    assert chosen["SESSION_COOKIE_SECURE"] is True
    assert chosen["SECURE_REFERRER_POLICY"] == "strict-origin-when-cross-origin"


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("1", ["HTTP_X_FORWARDED_PROTO", "https"]),
        ("X-Forwarded-Proto", ["HTTP_X_FORWARDED_PROTO", "https"]),
        ("X-Forwarded-Ssl: on", ["HTTP_X_FORWARDED_SSL", "on"]),
        ("off", None),
    ],
)
def test_the_proxy_ssl_header_comes_from_the_environment(value: str, header: Any) -> None:
    assert settings_under(SECURE_PROXY_SSL_HEADER=value)["SECURE_PROXY_SSL_HEADER"] == header


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("SECURE_PROXY_SSL_HEADER", "X Forwarded Proto", "SECURE_PROXY_SSL_HEADER must be 1"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Ssl:", "SECURE_PROXY_SSL_HEADER must be 1"),
        ("HTTPS", "sometimes", "HTTPS must be a boolean"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS must be a whole number"),
    ],
)
def test_a_bad_production_setting_is_refused_with_a_clear_message(
    name: str, value: str, complaint: str
) -> None:
    refused = run([sys.executable, "-c", "import videocreation.asgi"], **{name: value})

    assert refused.returncode != 0
    assert complaint in refused.stderr


def test_check_deploy_passes_with_the_documented_production_environment(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    deploy = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DATABASE_URL=database,
        **PRODUCTION_ENV,
    )

    assert deploy.returncode == 0, deploy.stderr
    assert "System check identified no issues (0 silenced)." in deploy.stdout


def test_check_deploy_names_what_is_missing_without_https(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {**PRODUCTION_ENV, "DATABASE_URL": database}
    del env["HTTPS"]
    deploy = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], **env
    )

    assert deploy.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):  # HSTS, redirect, the two cookies
        assert f"(security.{check})" in deploy.stderr


class ProxiedServer(AsgiServer):
    """A web server whose every page redirects plain HTTP: it serves once /healthz answers."""

    def serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                return True
        except (OSError, urllib.error.HTTPError):
            return False


def get(server: AsgiServer, path: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", path, headers={"Host": "video.example.com", **headers})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.django_db(transaction=True)
def test_behind_a_tls_proxy_plain_http_is_redirected_and_https_is_pinned(
    tmp_path: Path, media_root: Path
) -> None:
    env = clean_env(
        **PRODUCTION_ENV, DATABASE_URL=database_url_for_children(), MEDIA_ROOT=str(media_root)
    )
    server = ProxiedServer(tmp_path / "uvicorn.log", env).start()
    try:
        plain = get(server, "/accounts/login/")
        assert plain.status == 301
        assert plain.getheader("Location") == "https://video.example.com/accounts/login/"

        # What the proxy forwards after ending TLS.
        secure = get(server, "/accounts/login/", **{"X-Forwarded-Proto": "https"})
        assert secure.status == 200
        hsts = secure.getheader("Strict-Transport-Security")
        assert hsts == "max-age=31536000; includeSubDomains; preload"
        csrf_cookie = secure.getheader("Set-Cookie")
        assert "csrftoken=" in csrf_cookie
        assert "Secure" in csrf_cookie

        # A load balancer's probe: plain HTTP, by address.
        assert get(server, "/healthz", Host="10.1.2.3").status == 200
    finally:
        server.stop()


# --- no process on the development secret -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],
        ["qcluster"],
        ["web", "--port", "0"],
        ["serve", "--port", "0"],
        ["runserver", "--noreload", "127.0.0.1:0"],
    ],
)
def test_a_process_that_runs_or_sends_tasks_refuses_the_development_secret(
    command: list[str], tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    refused = run([sys.executable, "manage.py", *command], DATABASE_URL=database)

    assert refused.returncode != 0
    assert (
        f"SECRET_KEY is not set, and `manage.py {command[0]}` refuses the development key "
        "outside DEBUG"
    ) in refused.stderr
    assert "Q Cluster" not in refused.stderr, "it stopped before starting anything"


def test_commands_that_send_no_tasks_keep_working_without_a_secret() -> None:
    checked = run([sys.executable, "manage.py", "check"])

    assert checked.returncode == 0, checked.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "env",
    [{"SECRET_KEY": "a-long-random-production-secret-0123456789"}, {"DEBUG": "1"}],
    ids=["own-secret", "debug"],
)
def test_a_cluster_starts_with_a_secret_of_its_own_or_in_debug(env: dict[str, str]) -> None:
    started = run(
        [sys.executable, "manage.py", "qcluster", "--run-once"],
        DATABASE_URL=database_url_for_children(),
        **env,
    )

    assert started.returncode == 0, started.stderr
    assert "running." in started.stderr


@pytest.mark.django_db
def test_no_task_is_sent_signed_with_the_development_secret(settings: Any) -> None:
    settings.SECRET_KEY = DEVELOPMENT_SECRET_KEY
    broker = get_broker()
    queued = broker.queue_size()

    with pytest.raises(ImproperlyConfigured, match="sending a task refuses the development key"):
        async_task("math.floor", 1.5)

    assert broker.queue_size() == queued
