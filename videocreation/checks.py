"""No process that serves, runs or sends tasks uses the development SECRET_KEY outside DEBUG.

django-q2 signs every task with SECRET_KEY and unpickles what it verifies. The
development key is in this repository: a worker that trusted it would run
whatever anyone who can write to the broker (the database table or Redis)
put there. So, outside DEBUG:

- the web entry points refuse to load (`require_production_secret`, in
  videocreation/asgi.py and wsgi.py);
- the commands that run workers or web servers stop at their system checks
  (`check_production_secret`), before anything starts;
- any other process — a shell, a script — cannot send a task
  (`refuse_development_secret`, on django-q2's `pre_enqueue`).

Other commands (`migrate`, `makemigrations`, `createsuperuser`, …) sign
nothing and keep working without a key.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from videocreation.settings import DEVELOPMENT_SECRET_KEY

# The commands that run task workers, or web servers that send tasks.
PROCESS_COMMANDS = frozenset({"worker", "qcluster", "web", "serve", "runserver"})


def uses_development_secret() -> bool:
    return not settings.DEBUG and settings.SECRET_KEY == DEVELOPMENT_SECRET_KEY


def refusal(what: str) -> str:
    return (
        f"SECRET_KEY is not set, and {what} refuses the development key outside DEBUG: "
        "django-q2 signs every task with SECRET_KEY, and that key is public. Set SECRET_KEY "
        "to one long random value shared by every web and worker process "
        "(or DEBUG=1 for local development only)."
    )


def check_production_secret(**kwargs: Any) -> list[checks.CheckMessage]:
    """A system check: the commands in PROCESS_COMMANDS refuse the development key."""
    # Django's own choice of subcommand (ManagementUtility reads argv[1] too).
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in PROCESS_COMMANDS or not uses_development_secret():
        return []
    return [checks.Error(refusal(f"`manage.py {command}`"), id="videocreation.E001")]


def refuse_development_secret(**kwargs: Any) -> None:
    """django-q2's `pre_enqueue`: a task signed with the public key is never sent."""
    if uses_development_secret():
        raise ImproperlyConfigured(refusal("sending a task"))
