"""What `/metrics` tells Prometheus, and the queue's history for the operator page.

A scrape reaches one web process of many (`uvicorn --workers N`, on several
machines), so whatever describes the installation is read from the shared
database at scrape time by `InstallationCollector`, and every process answers
the same: jobs waiting and running (the projects' statuses and dispatch
state), projects by status, open stream clients per transport (`LiveClient`
rows), job durations per step and engine (`JobTiming`, counted per bucket in
SQL), credits charged and refunded (ledger sums). Each is one aggregate query:
the database counts and sums, and no rows are loaded here.

The bus wake-up lag alone belongs to one process: the time from an event's
write (its `createdAt`) to the moment this process's bus hands it to its
subscribers. It is an ordinary prometheus_client histogram labelled with the
process (`host:pid`, as `LiveClient.process`). With `PROMETHEUS_MULTIPROC_DIR`
set (one folder per machine, emptied when the service starts), prometheus_client's
multiprocess mode keeps it in files that every process of the machine reads
at a scrape, so any process answers for all of them; without it a scrape
shows the lag of the process that answered.

The operator page charts the queue over a day: a `QueueSample` a minute,
written by whichever of a scrape, the page or a django-q2 schedule comes first
(README: "Metrics and the operator page").
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Case, Count, Q, Sum, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from credits.models import EntryKind, LedgerEntry
from projects.models import (
    JobTiming,
    LiveClient,
    QueueSample,
    Status,
    Step,
    Transport,
    VideoProject,
)

logger = logging.getLogger(__name__)

# From a one-second script to an hour-long render.
JOB_SECONDS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# From a NOTIFY delivered at once to a poll that came late.
WAKE_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A day's chart with a week to spare; older samples are deleted as new ones come.
SAMPLE_RETENTION = timedelta(days=8)

STEP_OF_STATUS = {Status.GENERATING_SCRIPT: Step.SCRIPT, Status.RENDERING: Step.RENDER}
HOST = socket.gethostname()

WAKE_LAG = Histogram(
    "videocreation_bus_wake_lag_seconds",
    "From an event's write to this web process's bus handing it to its subscribers.",
    labelnames=["process"],
    buckets=WAKE_LAG_BUCKETS,
    registry=None,  # put in each scrape's registry, unless multiprocess files hold it
)


# --- jobs now --------------------------------------------------------------


@dataclass(frozen=True)
class JobCounts:
    """Running-status jobs by step, as dispatch sees them (projects/dispatch.py)."""

    # Queued, not yet handed to the broker: the owner's places are taken, or the broker was down.
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Step.values, 0))
    # Handed to the broker, waiting for a free worker.
    admitted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Step.values, 0))
    # Claimed by a worker (its lease may have run out: the sweeper puts it back).
    running: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Step.values, 0))

    @property
    def held_total(self) -> int:
        return sum(self.held.values())

    @property
    def admitted_total(self) -> int:
        return sum(self.admitted.values())

    @property
    def waiting_total(self) -> int:
        return self.held_total + self.admitted_total

    @property
    def running_total(self) -> int:
        return sum(self.running.values())


def job_counts() -> JobCounts:
    """One query: the running-status projects counted by step and dispatch state."""
    state = Case(
        When(~Q(lease_owner=""), then=Value("running")),
        When(task_sent_at__isnull=False, then=Value("admitted")),
        default=Value("held"),
    )
    rows = (
        VideoProject.objects.running()
        .order_by()
        .annotate(state=state)
        .values_list("status", "state")
        .annotate(count=Count("pk"))
    )
    counts = JobCounts()
    for status, dispatch_state, count in rows:
        getattr(counts, dispatch_state)[STEP_OF_STATUS[status]] += count
    return counts


def stream_clients() -> dict[str, int]:
    """Open SSE, WebSocket and OpenAI streams in all web processes, by transport."""
    rows = LiveClient.objects.connected().order_by().values_list("transport").annotate(Count("pk"))
    return dict.fromkeys(Transport.values, 0) | dict(rows)


def credits_moved(since: datetime | None = None) -> dict[str, dict[str, int]]:
    """Credits charged and refunded (positive numbers), by step; all time unless `since`."""
    entries = LedgerEntry.objects.filter(kind__in=[EntryKind.CHARGE, EntryKind.REFUND])
    if since is not None:
        entries = entries.filter(created_at__gte=since)
    moved = {kind: dict.fromkeys(Step.values, 0) for kind in (EntryKind.CHARGE, EntryKind.REFUND)}
    # The ledger's default ordering (by id) would split the groups: cleared.
    rows = entries.order_by().values_list("kind", "step").annotate(total=Sum("amount"))
    for kind, step, total in rows:
        moved[kind][step] = moved[kind].get(step, 0) + abs(total)
    return moved


# --- the queue's history -----------------------------------------------------

# The minute this process last sampled: it skips the database until the next one.
_last_sampled: datetime | None = None


def sample_queue(counts: JobCounts | None = None) -> bool:
    """Record this minute's queue unless this process or another did; True if this one did.

    Also a django-q2 schedule's task (projects/migrations/0011_queue_samples.py).
    """
    global _last_sampled
    minute = timezone.now().replace(second=0, microsecond=0)
    if minute == _last_sampled:
        return False
    counts = counts or job_counts()
    sample = QueueSample(minute=minute, waiting=counts.waiting_total, running=counts.running_total)
    # The first writer of the minute wins; the others' inserts are ignored.
    created = QueueSample.objects.bulk_create([sample], ignore_conflicts=True)
    QueueSample.objects.filter(minute__lt=minute - SAMPLE_RETENTION).delete()
    _last_sampled = minute
    return bool(created and created[0].pk)


# --- the scrape ----------------------------------------------------------------


class InstallationCollector:
    """The installation as the shared database tells it: the same from every process."""

    def collect(self) -> Iterator[Metric]:
        counts = job_counts()
        try:
            sample_queue(counts)
        except DatabaseError:
            # The page's history misses a minute; the scrape itself must not fail for it.
            logger.warning("Could not sample the queue", exc_info=True)
        yield from _job_gauges(counts)
        yield _projects_gauge()
        yield _job_duration_histogram()
        yield _stream_clients_gauge()
        yield from _credit_counters()


def _job_gauges(counts: JobCounts) -> Iterator[Metric]:
    waiting = GaugeMetricFamily(
        "videocreation_jobs_waiting",
        "Jobs started and not yet claimed by a worker; admitted: handed to the broker "
        "(else held by the fair queue, or the broker was down).",
        labels=["step", "admitted"],
    )
    running = GaugeMetricFamily(
        "videocreation_jobs_running", "Jobs claimed by a worker.", labels=["step"]
    )
    for step in Step.values:
        waiting.add_metric([step, "false"], counts.held[step])
        waiting.add_metric([step, "true"], counts.admitted[step])
        running.add_metric([step], counts.running[step])
    yield waiting
    yield running


def _projects_gauge() -> Metric:
    gauge = GaugeMetricFamily("videocreation_projects", "Projects by status.", labels=["status"])
    for status, count in VideoProject.objects.count_by_status().items():
        gauge.add_metric([status], count)
    return gauge


def _job_duration_histogram() -> Metric:
    """Every finished job's run, from its claim to its result, bucketed by the database."""
    histogram = HistogramMetricFamily(
        "videocreation_job_duration_seconds",
        "How long finished jobs ran, from a worker's claim to the saved result.",
        labels=["step", "engine"],
    )
    per_bucket = {
        f"le_{index}": Count("pk", filter=Q(seconds__lte=bound))
        for index, bound in enumerate(JOB_SECONDS_BUCKETS)
    }
    rows = (
        JobTiming.objects.order_by()
        .values("step", "engine")
        .annotate(count=Count("pk"), total=Sum("seconds"), **per_bucket)
        .order_by("step", "engine")
    )
    for row in rows:
        buckets = [
            (floatToGoString(bound), row[f"le_{index}"])
            for index, bound in enumerate(JOB_SECONDS_BUCKETS)
        ]
        histogram.add_metric(
            [row["step"], row["engine"]], [*buckets, ("+Inf", row["count"])], row["total"] or 0.0
        )
    return histogram


def _stream_clients_gauge() -> Metric:
    gauge = GaugeMetricFamily(
        "videocreation_stream_clients",
        "Open streams in all web processes (SSE, WebSocket, OpenAI-compatible).",
        labels=["transport"],
    )
    for transport, count in stream_clients().items():
        gauge.add_metric([transport], count)
    return gauge


def _credit_counters() -> Iterator[Metric]:
    moved = credits_moved()
    for kind, name, help_text in (
        (EntryKind.CHARGE, "videocreation_credits_charged", "Credits charged for jobs."),
        (EntryKind.REFUND, "videocreation_credits_refunded", "Credits given back for jobs."),
    ):
        counter = CounterMetricFamily(name, help_text, labels=["step"])
        for step, total in moved[kind].items():
            counter.add_metric([step], total)
        yield counter


def scrape_registry() -> CollectorRegistry:
    """What one scrape reports: the installation, and the bus lag of this process (or machine)."""
    registry = CollectorRegistry()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        MultiProcessCollector(registry, path=folder)
    else:
        registry.register(WAKE_LAG)
    registry.register(InstallationCollector())
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus's scrape, in the text format: for the METRICS_TOKEN bearer or staff, else 404."""
    if not may_scrape(request):
        raise Http404("There is nothing at this address.")
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    # The text format every Prometheus reads (0.0.4; our names need none of 1.0.0's escaping).
    exposition = generate_latest(scrape_registry())
    response = HttpResponse(exposition, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    add_never_cache_headers(response)
    return response


def may_scrape(request: HttpRequest) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    token = settings.METRICS_TOKEN
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(given.strip().encode(), token.encode())
    user = request.user
    return bool(user.is_active and user.is_staff)


# --- the bus's hook --------------------------------------------------------------


def observe_wake_lag(events: Iterable[dict[str, Any]]) -> None:
    """The bus hands these events to its subscribers now: how long after its write each came.

    Measured between two clocks when the writer (a worker) is another machine:
    keep them synchronised (NTP); a writer's clock ahead of ours counts as 0.
    """
    now = datetime.now(UTC)
    lag = WAKE_LAG.labels(f"{HOST}:{os.getpid()}")
    for event in events:
        written = event.get("createdAt")
        if written:
            lag.observe(max(0.0, (now - datetime.fromisoformat(written)).total_seconds()))
