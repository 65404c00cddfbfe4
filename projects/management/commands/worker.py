"""`manage.py worker`: a django-q2 cluster, and beside it the sweeper that keeps jobs moving.

django-q2 runs schedules at most once a minute, and a dead worker's job must
be taken up again within seconds; so every worker's own main process sweeps,
once every `JOB_SWEEP_SECONDS`: it puts back jobs whose lease ran out (their
worker died) and relays queued jobs whose task never reached the broker or was
lost with it, admits jobs waiting for a place and numbers the line (see
`projects/dispatch.py`). Sweeping is a conditional update,
so any number of workers may sweep at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from django_q.cluster import Cluster
from redis.exceptions import RedisError

from projects import dispatch, lifecycle

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a django-q2 cluster and, in its main process, the sweeper of lost jobs."

    def handle(self, *args: Any, **options: Any) -> None:
        # django-q2 signs every task with it: fail here, not in the first task.
        settings.SECRET_KEY  # noqa: B018
        cluster = Cluster()
        # Forks first: the cluster's processes must not share this process's connection.
        cluster.start()
        while cluster.sentinel is not None and cluster.sentinel.is_alive():
            sweep_once()
            time.sleep(settings.JOB_SWEEP_SECONDS)


def sweep_once() -> None:
    try:
        lifecycle.sweep_lost_jobs()
        dispatch.relay()
    except (DatabaseError, RedisError) as error:
        # The database or the broker is restarting or unreachable: try again next
        # tick. (An error escaping here would end the sweeper for good, while the
        # cluster's processes lived on: no lost job would ever be put back.)
        logger.warning("The sweeper could not reach the database or the broker: %s", error)
    except Exception:
        logger.exception("The sweeper failed; trying again")
    finally:
        close_old_connections()
