"""The admin's operator page: the last day of the queue, throughput, durations and failures.

Everything is drawn on the server as inline SVG (no script, no CDN: the page
works offline), and every chart has a table of the numbers it draws.

Where each figure comes from, all in bounded queries:

* queue length: `QueueSample`, one a minute (projects/metrics.py): at most
  1,440 rows a day, drawn as the peak of each 5 minutes;
* throughput and durations: `JobTiming`, one row per finished job
  (durations are nearest-rank p50/p90, picked by the database's sort);
* failures: the `error` events of the last day, read only among projects
  changed in that day (a failure changes its project), so old history costs
  nothing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import TruncHour
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from credits.models import EntryKind
from projects.metrics import JobCounts, credits_moved, job_counts, sample_queue, stream_clients
from projects.models import EventKind, JobTiming, ProgressEvent, QueueSample, Step, VideoProject

HOURS = 24
QUEUE_RESOLUTION = timedelta(minutes=5)


# --- the numbers ---------------------------------------------------------------


@dataclass(frozen=True)
class Hour:
    start: datetime
    waiting_peak: int | None  # None: no sample in this hour
    running_peak: int | None
    finished: dict[str, int]  # by step
    failed: int

    @property
    def finished_total(self) -> int:
        return sum(self.finished.values())


@dataclass(frozen=True)
class Durations:
    step: str
    engine: str
    count: int
    p50: float
    p90: float


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    jobs: JobCounts
    streams: dict[str, int]
    charged: int
    refunded: int
    hours: list[Hour]
    queue: list[tuple[datetime, int, int]]  # (minute, waiting, running)
    durations: list[Durations]
    failure_codes: list[tuple[str, int]]

    @property
    def finished_total(self) -> int:
        return sum(hour.finished_total for hour in self.hours)

    @property
    def failed_total(self) -> int:
        return sum(hour.failed for hour in self.hours)

    @property
    def streams_total(self) -> int:
        return sum(self.streams.values())


def build_report(now: datetime | None = None) -> Report:
    """The last 24 hours, whole hours from the one 23 hours ago to the current one."""
    now = now or timezone.now()
    start = (now - timedelta(hours=HOURS - 1)).replace(minute=0, second=0, microsecond=0)
    jobs = job_counts()
    sample_queue(jobs)
    queue = list(
        QueueSample.objects.filter(minute__gte=start)
        .order_by("minute")
        .values_list("minute", "waiting", "running")
    )
    credits = credits_moved(since=start)
    return Report(
        start=start,
        end=start + timedelta(hours=HOURS),
        jobs=jobs,
        streams=stream_clients(),
        charged=sum(credits[EntryKind.CHARGE].values()),
        refunded=sum(credits[EntryKind.REFUND].values()),
        hours=_hours(start, queue),
        queue=queue,
        durations=_durations(start),
        failure_codes=list(
            _failures(start)
            .annotate(code=KT("payload__error__code"))
            .values_list("code")
            .annotate(count=Count("pk"))
            .order_by("-count", "code")
        ),
    )


def _hours(start: datetime, queue: list[tuple[datetime, int, int]]) -> list[Hour]:
    waiting: dict[datetime, int] = {}
    running: dict[datetime, int] = {}
    for minute, waiting_now, running_now in queue:
        hour = minute.replace(minute=0)
        waiting[hour] = max(waiting.get(hour, 0), waiting_now)
        running[hour] = max(running.get(hour, 0), running_now)
    finished: dict[datetime, dict[str, int]] = defaultdict(lambda: dict.fromkeys(Step.values, 0))
    finished_rows = (
        JobTiming.objects.filter(finished_at__gte=start)
        .annotate(hour=TruncHour("finished_at"))
        .order_by()
        .values_list("hour", "step")
        .annotate(count=Count("pk"))
    )
    for hour, step, count in finished_rows:
        finished[hour][step] = count
    failed = dict(
        _failures(start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(count=Count("pk"))
    )
    hours = [start + timedelta(hours=index) for index in range(HOURS)]
    return [
        Hour(
            start=hour,
            waiting_peak=waiting.get(hour),
            running_peak=running.get(hour),
            finished=finished[hour],
            failed=failed.get(hour, 0),
        )
        for hour in hours
    ]


def _failures(start: datetime) -> QuerySet[ProgressEvent]:
    """The `error` events (one per failed job) since `start`."""
    changed = VideoProject.objects.filter(updated_at__gte=start).order_by().values("pk")
    return ProgressEvent.objects.filter(
        kind=EventKind.ERROR, created_at__gte=start, project__in=changed
    ).order_by()


def _durations(start: datetime) -> list[Durations]:
    finished = JobTiming.objects.filter(finished_at__gte=start)
    groups = (
        finished.order_by()
        .values_list("step", "engine")
        .annotate(count=Count("pk"))
        .order_by("step", "engine")
    )
    durations = []
    for step, engine, count in groups:
        ordered = finished.filter(step=step, engine=engine).order_by("seconds")
        seconds = ordered.values_list("seconds", flat=True)
        p50, p90 = (seconds[_rank(share, count) - 1] for share in (0.5, 0.9))
        durations.append(Durations(step, engine, count, p50, p90))
    return durations


def _rank(share: float, count: int) -> int:
    """The nearest-rank percentile's place (1-based) among `count` sorted values."""
    return max(1, math.ceil(share * count))


def duration_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


# --- the drawings ----------------------------------------------------------------

WIDTH = 720
TIME_CHART_HEIGHT = 190
LEFT, RIGHT, TOP, BOTTOM = 44, 20, 12, 26


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    label: str


@dataclass(frozen=True)
class Line:
    points: str
    css: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    css: str


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "middle"
    css: str = "axis"


@dataclass
class Chart:
    id: str
    title: str
    description: str
    height: float
    width: float = WIDTH
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    rules: list[Line] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)


def axis(maximum: float, *, whole: bool = False) -> tuple[float, list[float]]:
    """A round top for a value axis, and its ticks: at most five steps of 1, 2 or 5 (x 10^n)."""
    if maximum <= 0:
        return 1.0, [0.0, 1.0]
    base = 10 ** math.floor(math.log10(maximum / 5))
    step = next(base * m for m in (1, 2, 5, 10) if maximum / (base * m) <= 5)
    if whole:
        step = max(step, 1.0)
    steps = math.ceil(maximum / step - 1e-9)
    return steps * step, [index * step for index in range(steps + 1)]


class TimeFrame:
    """Maps the report's day and a value range onto a chart's plot area."""

    def __init__(self, report: Report, top: float, height: float = TIME_CHART_HEIGHT) -> None:
        self.start, self.end = report.start, report.end
        self.top = top
        self.bottom_y = height - BOTTOM
        self.hour_width = (WIDTH - LEFT - RIGHT) / HOURS

    def x(self, moment: datetime) -> float:
        share = (moment - self.start) / (self.end - self.start)
        return round(LEFT + share * (WIDTH - LEFT - RIGHT), 1)

    def y(self, value: float) -> float:
        return round(self.bottom_y - value / self.top * (self.bottom_y - TOP), 1)


def _time_axes(chart: Chart, frame: TimeFrame, ticks: list[float], label: Any) -> None:
    for tick in ticks:
        y = frame.y(tick)
        chart.rules.append(Line(f"{LEFT},{y} {WIDTH - RIGHT},{y}", "grid"))
        chart.texts.append(Text(LEFT - 6, y + 4, label(tick), "end"))
    for index in range(0, HOURS + 1, 3):
        moment = frame.start + timedelta(hours=index)
        x = frame.x(moment)
        chart.rules.append(Line(f"{x},{frame.bottom_y} {x},{frame.bottom_y + 4}", "grid"))
        chart.texts.append(Text(x, frame.bottom_y + 17, f"{moment:%H:%M}"))


def _count_label(value: float) -> str:
    return f"{value:g}"


def queue_chart(report: Report) -> Chart:
    peaks: dict[datetime, tuple[int, int]] = {}
    for minute, waiting, running in report.queue:
        slot = report.start + (minute - report.start) // QUEUE_RESOLUTION * QUEUE_RESOLUTION
        known = peaks.get(slot, (0, 0))
        peaks[slot] = (max(known[0], waiting), max(known[1], running))
    top, ticks = axis(max((max(pair) for pair in peaks.values()), default=0), whole=True)
    frame = TimeFrame(report, top)
    chart = Chart(
        "queue-chart",
        "Queue length",
        "Jobs waiting for a worker and jobs running, the peak of every 5 minutes "
        "over the last 24 hours; a gap is a time without a sample.",
        TIME_CHART_HEIGHT,
        legend=[("waiting", "waiting"), ("running", "running")],
    )
    _time_axes(chart, frame, ticks, _count_label)
    for index, css in ((0, "waiting"), (1, "running")):
        for segment in _segments(sorted(peaks), QUEUE_RESOLUTION):
            half = QUEUE_RESOLUTION / 2
            points = [(frame.x(slot + half), frame.y(peaks[slot][index])) for slot in segment]
            if len(points) == 1:  # a lone sample: a dot, where a line would be invisible
                chart.dots.append(Dot(*points[0], css))
            else:
                chart.lines.append(Line(" ".join(f"{x},{y}" for x, y in points), css))
    return chart


def _segments(slots: list[datetime], resolution: timedelta) -> list[list[datetime]]:
    """Runs of consecutive slots: a line is not drawn across a time without samples."""
    segments: list[list[datetime]] = []
    for slot in slots:
        if segments and slot - segments[-1][-1] <= resolution:
            segments[-1].append(slot)
        else:
            segments.append([slot])
    return segments


def throughput_chart(report: Report) -> Chart:
    top, ticks = axis(max(hour.finished_total for hour in report.hours), whole=True)
    frame = TimeFrame(report, top)
    chart = Chart(
        "throughput-chart",
        "Throughput",
        "Jobs finished in each hour of the last 24 hours, scripts and renders stacked.",
        TIME_CHART_HEIGHT,
        legend=[("script", "scripts"), ("render", "renders")],
    )
    _time_axes(chart, frame, ticks, _count_label)
    for hour in report.hours:
        scripts = _counted(hour.finished[Step.SCRIPT], "script")
        renders = _counted(hour.finished[Step.RENDER], "render")
        label = f"{hour.start:%H:%M}: {scripts}, {renders} finished"
        below = 0
        for step in Step.values:
            count = hour.finished[step]
            if count:
                chart.rects.append(_bar(frame, hour.start, below, below + count, step, label))
            below += count
    return chart


def failures_chart(report: Report) -> Chart:
    top, ticks = axis(max(hour.failed for hour in report.hours), whole=True)
    frame = TimeFrame(report, top)
    chart = Chart(
        "failures-chart",
        "Failures",
        "Jobs that failed in each hour of the last 24 hours.",
        TIME_CHART_HEIGHT,
        legend=[("failed", "failed")],
    )
    _time_axes(chart, frame, ticks, _count_label)
    for hour in report.hours:
        if hour.failed:
            label = f"{hour.start:%H:%M}: {_counted(hour.failed, 'job')} failed"
            chart.rects.append(_bar(frame, hour.start, 0, hour.failed, "failed", label))
    return chart


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _bar(frame: TimeFrame, hour: datetime, low: float, high: float, css: str, label: str) -> Rect:
    x = frame.x(hour) + 2
    return Rect(
        x, frame.y(high), round(frame.hour_width - 4, 1), frame.y(low) - frame.y(high), css, label
    )


DURATION_ROW = 56
DURATION_LEFT = 12
DURATION_RIGHT = 80


def _duration_axis(maximum: float) -> tuple[float, list[float]]:
    """Seconds up to two minutes; beyond, whole or half minutes."""
    if maximum <= 120:
        return axis(maximum)
    top, ticks = axis(maximum / 60)
    return top * 60, [tick * 60 for tick in ticks]


def _tick_text(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return duration_text(seconds)


def durations_chart(report: Report) -> Chart:
    rows = report.durations
    height = TOP + max(len(rows), 1) * DURATION_ROW + BOTTOM
    chart = Chart(
        "durations-chart",
        "Job durations",
        "The median (p50) and 90th percentile (p90) time of jobs finished in the last "
        "24 hours, per step and engine, from a worker's claim to the saved result.",
        height,
        legend=[("p50", "p50"), ("p90", "p90")],
    )
    top, ticks = _duration_axis(max((row.p90 for row in rows), default=0))
    span = WIDTH - DURATION_LEFT - DURATION_RIGHT

    def x(seconds: float) -> float:
        return round(DURATION_LEFT + seconds / top * span, 1)

    bottom = height - BOTTOM
    for tick in ticks:
        chart.rules.append(Line(f"{x(tick)},{TOP} {x(tick)},{bottom}", "grid"))
        chart.texts.append(Text(x(tick), bottom + 17, _tick_text(tick)))
    for index, row in enumerate(rows):
        y = TOP + index * DURATION_ROW
        chart.texts.append(
            Text(DURATION_LEFT, y + 13, f"{row.step} · {row.engine}", "start", "label")
        )
        for offset, css, value in ((20, "p50", row.p50), (35, "p90", row.p90)):
            width = max(x(value) - DURATION_LEFT, 1.0)
            jobs = _counted(row.count, "job")
            label = f"{row.step} by {row.engine}: {css} {duration_text(value)} ({jobs})"
            chart.rects.append(Rect(DURATION_LEFT, y + offset, width, 12, css, label))
            chart.texts.append(
                Text(DURATION_LEFT + width + 5, y + offset + 11, duration_text(value), "start")
            )
    if not rows:
        chart.texts.append(Text(WIDTH / 2, TOP + 24, "No job finished in the last 24 hours."))
    return chart


# --- the page ------------------------------------------------------------------------


def operator_page(request: HttpRequest) -> TemplateResponse:
    """Staff only: `admin.site.admin_view` wraps it (videocreation/urls.py)."""
    report = build_report()
    context = {
        **admin.site.each_context(request),
        "title": "Operator",
        "report": report,
        "charts": {
            "queue": queue_chart(report),
            "throughput": throughput_chart(report),
            "failures": failures_chart(report),
            "durations": durations_chart(report),
        },
        "durations": [
            {**vars(row), "p50_text": duration_text(row.p50), "p90_text": duration_text(row.p90)}
            for row in report.durations
        ],
    }
    return TemplateResponse(request, "admin/operator.html", context)
