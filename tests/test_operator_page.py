"""The admin's operator page: staff only, linked from the admin index, and it shows the
numbers it charts — queue length, throughput, job durations and failures of the last day."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from projects import estimates, lifecycle, metrics
from projects.models import EventKind, JobTiming, QueueSample, Step, VideoProject
from projects.operator_page import axis, duration_text

pytestmark = pytest.mark.django_db

PAGE = "/admin/operator/"


@pytest.fixture(autouse=True)
def fresh_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler remembers its minute per process; each test's database starts empty."""
    monkeypatch.setattr(metrics, "_last_sampled", None)


@pytest.fixture
def operator(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("olga", password="olga-password-1", is_staff=True)


@pytest.fixture
def operator_client(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


class Tables(HTMLParser):
    """The text of every cell of every table with an id, row by row."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def by_first_cell(self, table: str) -> dict[str, list[str]]:
        return {row[0]: row[1:] for row in self.tables[table][1:]}


@dataclass
class BusyDay:
    """What `a_busy_day` made: the hour most things happened in, three hours ago."""

    hour: datetime
    earlier: datetime

    @property
    def label(self) -> str:
        return f"{self.hour:%H:%M}"

    @property
    def earlier_label(self) -> str:
        return f"{self.earlier:%H:%M}"


def finished_at(moment: datetime, step: Step, engine: str, seconds: float) -> None:
    """A finished job's timing, recorded as the pipeline records it, at `moment`."""
    estimates.record(step, engine, 4.0, seconds)
    JobTiming.objects.filter(pk=JobTiming.objects.latest("pk").pk).update(finished_at=moment)


def failed_at(moment: datetime, project: VideoProject, code: str) -> None:
    """A job that starts and fails through the lifecycle, its failure dated `moment`."""
    started = lifecycle.start_job(project, Step.SCRIPT)
    assert lifecycle.fail(started.pk, None, code, f"It failed: {code}")
    failure = started.events.filter(kind=EventKind.ERROR).latest("seq")
    started.events.filter(pk=failure.pk).update(created_at=moment)


def a_busy_day(make_project: Callable[..., VideoProject]) -> BusyDay:
    now = timezone.now()
    hour = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    earlier = hour - timedelta(hours=2)
    QueueSample.objects.create(minute=hour + timedelta(minutes=10), waiting=4, running=2)
    QueueSample.objects.create(minute=hour + timedelta(minutes=15), waiting=7, running=1)
    QueueSample.objects.create(minute=earlier + timedelta(minutes=5), waiting=1, running=1)
    for seconds in (10, 20, 30, 40, 50, 60, 70, 80, 90, 100):
        finished_at(hour + timedelta(minutes=15), Step.RENDER, "local", seconds)
    finished_at(hour + timedelta(minutes=40), Step.SCRIPT, "local", 2.0)
    finished_at(earlier + timedelta(minutes=40), Step.SCRIPT, "local", 2.4)
    finished_at(now - timedelta(days=2), Step.RENDER, "local", 5000)  # not in the last day
    failed_at(hour + timedelta(minutes=30), make_project(), "worker_lost")
    failed_at(hour + timedelta(minutes=31), make_project(), "worker_lost")
    failed_at(hour + timedelta(minutes=32), make_project(), "engine_error")
    failed_at(now - timedelta(days=2), make_project(), "engine_error")  # not in the last day
    lifecycle.start_job(make_project(), Step.SCRIPT)  # waiting for a worker now
    return BusyDay(hour, earlier)


def test_staff_find_the_operator_page_on_the_admin_index(operator_client: Client) -> None:
    index = operator_client.get("/admin/")

    assert index.status_code == 200
    assert f'href="{PAGE}"' in index.content.decode()
    page = operator_client.get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    for chart in ("queue-chart", "throughput-chart", "durations-chart", "failures-chart"):
        assert f'<svg id="{chart}"' in html
    assert "<script" not in html.split('<div id="content-main">')[1], "the charts need no script"
    assert not re.search(r'(src|href)="(https?:)?//', html), "nothing is fetched from elsewhere"


def test_everyone_else_is_sent_to_the_admin_sign_in(alice: User) -> None:
    anonymous = Client().get(PAGE)
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/admin/login/?next={PAGE}"

    customer = Client()
    customer.force_login(alice)  # signed in, not staff
    refused = customer.get(PAGE)
    assert refused.status_code == 302
    assert refused["Location"] == f"/admin/login/?next={PAGE}"


def test_the_page_shows_the_numbers_it_charts(
    operator_client: Client, make_project: Callable[..., VideoProject]
) -> None:
    day = a_busy_day(make_project)

    html = operator_client.get(PAGE).content.decode()
    tables = Tables(html)

    queue = tables.by_first_cell("queue-table")
    assert len(queue) == 24
    assert queue[day.label] == ["7", "2"]  # the peaks of the hour
    assert queue[day.earlier_label] == ["1", "1"]
    throughput = tables.by_first_cell("throughput-table")
    assert throughput[day.label] == ["1", "10", "11"]
    assert throughput[day.earlier_label] == ["1", "0", "1"]
    assert sum(int(row[2]) for row in throughput.values()) == 12, "the job of 2 days ago is out"
    failures = tables.by_first_cell("failures-table")
    assert failures[day.label] == ["3"]
    assert sum(int(row[0]) for row in failures.values()) == 3
    assert tables.by_first_cell("failure-codes-table") == {
        "worker_lost": ["2"],
        "engine_error": ["1"],
    }
    assert tables.tables["durations-table"][1:] == [
        ["render", "local", "10", "50 s", "90 s"],  # nearest rank: the 5th and the 9th of 10
        ["script", "local", "2", "2.0 s", "2.4 s"],
    ]

    # The charts draw those numbers: a red bar in the hour of the failures, titled with them.
    failure_bars = re.findall(r'<rect class="failed"[^>]*><title>([^<]*)</title>', html)
    assert failure_bars == [f"{day.label}: 3 jobs failed"]
    render_bars = re.findall(r'<rect class="render"[^>]*><title>([^<]*)</title>', html)
    assert render_bars == [f"{day.label}: 1 script, 10 renders finished"]
    # Samples 5 minutes apart make a line; a lone one a dot: hours before, and the page's own.
    assert html.count('class="line waiting"') == 1
    assert html.count('class="dot waiting"') == 2
    durations = html.split('<svg id="durations-chart"')[1].split("</svg>")[0]
    assert ">50 s</text>" in durations and ">90 s</text>" in durations


def test_the_page_says_what_happens_now(
    operator_client: Client, make_project: Callable[..., VideoProject]
) -> None:
    a_busy_day(make_project)

    html = operator_client.get(PAGE).content.decode()

    def figure(card: str) -> str:
        found = re.search(rf'<li id="{card}"><span class="figure">(\d+)</span>', html)
        assert found, f"no {card} card"
        return found.group(1)

    assert figure("now-waiting") == "1"
    assert figure("now-running") == "0"
    assert figure("now-streams") == "0"
    assert figure("day-finished") == "12"
    assert figure("day-failed") == "3"
    # Looking at the page samples the queue: the chart goes on from now.
    assert QueueSample.objects.filter(minute__gte=timezone.now() - timedelta(minutes=2)).exists()


def test_an_empty_installation_draws_empty_charts(operator_client: Client) -> None:
    response = operator_client.get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert "No job finished in the last 24 hours." in html
    assert "No job failed in the last 24 hours." in html


@pytest.mark.parametrize(
    ("maximum", "whole", "top", "ticks"),
    [
        (0, True, 1, [0, 1]),
        (1, True, 1, [0, 1]),
        (3, True, 3, [0, 1, 2, 3]),
        (7, True, 8, [0, 2, 4, 6, 8]),
        (23, True, 25, [0, 5, 10, 15, 20, 25]),
        (90, False, 100, [0, 20, 40, 60, 80, 100]),
        (0.3, False, 0.3, [0, 0.1, 0.2, 0.3]),
    ],
)
def test_value_axes_end_on_round_numbers(
    maximum: float, whole: bool, top: float, ticks: list[float]
) -> None:
    got_top, got_ticks = axis(maximum, whole=whole)
    assert got_top == pytest.approx(top)
    assert got_ticks == pytest.approx(ticks)


@pytest.mark.parametrize(
    ("seconds", "text"), [(2.04, "2.0 s"), (45, "45 s"), (119.4, "119 s"), (725, "12 min 05 s")]
)
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
