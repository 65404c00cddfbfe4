"""`manage.py worker`: the django-q2 clusters, and beside them the sweeper that keeps jobs moving.

Two clusters: one runs jobs, the other webhook deliveries from their own queue
(`WEBHOOK_QUEUE`), so a message is sent while every job worker is busy.

django-q2 runs schedules at most once a minute, and a dead worker's job must
be taken up again within seconds; so every worker's own main process sweeps,
once every `JOB_SWEEP_SECONDS`: it puts back jobs whose lease ran out (their
worker died) and relays queued jobs whose task never reached the broker or was
lost with it, admits jobs waiting for a place and numbers the line (see
`projects/dispatch.py`), and sends the webhook messages whose attempt is due
(`webhooks/outbox.py`). Sweeping is a conditional update,
so any number of workers may sweep at once.

Each sweep also records the cluster's heartbeat (`WorkerHeartbeat`), which
`/healthz/workers` and `manage.py worker_status` read from any machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections
from django.db.models.functions import Now
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.cluster import Cluster
from django_q.conf import Conf
from redis.exceptions import RedisError

from projects import dispatch, lifecycle
from projects.models import WorkerHeartbeat
from videocreation.health import this_queue
from webhooks import outbox

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a django-q2 cluster and, in its main process, the sweeper of lost jobs."

    def handle(self, *args: Any, **options: Any) -> None:
        # django-q2 signs every task with it: fail here, not in the first task.
        settings.SECRET_KEY  # noqa: B018
        clusters = [Cluster(), Cluster(get_broker(settings.WEBHOOK_QUEUE))]
        # Each Cluster takes SIGTERM and SIGINT for itself; the last one made would win.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: _stop(clusters))
        # Forks first: the clusters' processes must not share this process's connection.
        jobs, deliveries = clusters
        jobs.start()
        _start_delivery_cluster(deliveries)
        heartbeat = Heartbeat()
        try:
            while all(_alive(cluster) for cluster in clusters):
                sweep_once(heartbeat)
                time.sleep(settings.JOB_SWEEP_SECONDS)
        finally:
            heartbeat.forget()
            _stop(clusters)


def _alive(cluster: Cluster) -> bool:
    return cluster.sentinel is not None and cluster.sentinel.is_alive()


def _stop(clusters: list[Cluster]) -> None:
    for cluster in clusters:
        if _alive(cluster):
            cluster.stop()


def _start_delivery_cluster(cluster: Cluster) -> None:
    """The cluster of webhook deliveries: its own queue and `WEBHOOK_WORKERS` processes.

    Deliveries are short and must not wait behind jobs that hold every job
    worker for minutes. django-q2 sizes a cluster from its global `Conf.WORKERS`,
    read in the forked sentinel as it starts: it is set for that moment only.
    """
    workers = Conf.WORKERS
    Conf.WORKERS = settings.WEBHOOK_WORKERS
    try:
        cluster.start()
    finally:
        Conf.WORKERS = workers


class Heartbeat:
    """This cluster's `WorkerHeartbeat` row: renewed every sweep, deleted when it stops."""

    # A row this old belongs to a cluster that was killed long ago.
    RETENTION = timedelta(days=1)

    def __init__(self) -> None:
        host, pid = socket.gethostname(), os.getpid()
        queue, broker = this_queue()
        self.name = f"{host[:100]}:{pid}:{uuid.uuid4().hex[:8]}"
        self.fields = {
            "host": host[:100],
            "pid": pid,
            "queue": queue,
            "broker": broker,
            "processes": Conf.WORKERS,
            "started_at": timezone.now(),
        }

    def beat(self) -> None:
        # The database's clock, as the readers' (see WorkerHeartbeat.objects.with_age).
        if WorkerHeartbeat.objects.filter(name=self.name).update(seen_at=Now()):
            return
        WorkerHeartbeat.objects.filter(seen_at__lt=Now() - self.RETENTION).delete()
        WorkerHeartbeat.objects.create(name=self.name, seen_at=Now(), **self.fields)

    def forget(self) -> None:
        """The cluster stopped: it is gone, not stale."""
        with contextlib.suppress(DatabaseError):
            WorkerHeartbeat.objects.filter(name=self.name).delete()
        close_old_connections()


def sweep_once(heartbeat: Heartbeat | None = None) -> None:
    if heartbeat is not None:
        try:
            heartbeat.beat()
        except DatabaseError as error:
            # Its own step: a heartbeat table not migrated yet must not stop the sweep.
            logger.warning("The worker could not record its heartbeat: %s", error)
        except Exception:
            logger.exception("The worker could not record its heartbeat")
    try:
        lifecycle.sweep_lost_jobs()
        dispatch.relay()
        outbox.relay()
    except (DatabaseError, RedisError) as error:
        # The database or the broker is restarting or unreachable: try again next
        # tick. (An error escaping here would end the sweeper for good, while the
        # cluster's processes lived on: no lost job would ever be put back.)
        logger.warning("The sweeper could not reach the database or the broker: %s", error)
    except Exception:
        logger.exception("The sweeper failed; trying again")
    finally:
        close_old_connections()
