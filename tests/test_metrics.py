"""/metrics: what Prometheus reads, the same from any web process, for the token or staff only.

Each test makes jobs, ledger entries and streams through the product's own code
paths, scrapes /metrics as Prometheus would, parses the text with
prometheus_client's own parser and checks the numbers an operator would chart.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from projects import dispatch, estimates, lifecycle, metrics, progress, tasks
from projects.models import EventKind, LiveClient, QueueSample, Step, Transport, VideoProject
from tests.conftest import SCRIPT, AsgiServer
from tests.engines import RecordingEngine
from tests.waiting import wait_for

TOKEN = "scrape-token-0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


@pytest.fixture(autouse=True)
def fresh_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler remembers its minute per process; each test's database starts empty."""
    monkeypatch.setattr(metrics, "_last_sampled", None)


@pytest.fixture
def metrics_token(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    settings.METRICS_TOKEN = TOKEN
    monkeypatch.setenv("METRICS_TOKEN", TOKEN)  # for the servers a test starts
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    return TOKEN


def scrape(client: Client | None = None, token: str = TOKEN) -> Samples:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


# --- who may read it ------------------------------------------------------------


@pytest.mark.django_db
def test_without_the_token_or_a_staff_session_it_is_not_there(
    metrics_token: str, alice: User
) -> None:
    anonymous = Client()
    assert anonymous.get("/metrics").status_code == 404
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 404
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}").status_code == 404
    signed_in = Client()
    signed_in.force_login(alice)  # a customer, not staff
    assert signed_in.get("/metrics").status_code == 404


@pytest.mark.django_db
def test_without_a_token_set_no_bearer_gets_in(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 404


@pytest.mark.django_db
def test_the_token_or_a_staff_session_reads_the_text_format(
    metrics_token: str, django_user_model: type[User]
) -> None:
    samples = scrape()
    assert value(samples, "videocreation_jobs_running", step="render") == 0

    operator = django_user_model.objects.create_user("olga", password="x", is_staff=True)
    staff = Client()
    staff.force_login(operator)
    response = staff.get("/metrics")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert staff.post("/metrics").status_code == 405


def test_a_short_token_is_refused_at_startup() -> None:
    env = {**os.environ, "METRICS_TOKEN": "short"}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert "METRICS_TOKEN must be at least 16 characters" in checked.stderr


# --- what it says ------------------------------------------------------------------


@pytest.mark.django_db
def test_jobs_waiting_and_running_follow_the_fair_queue_and_the_workers(
    metrics_token: str,
    make_project: Callable[..., VideoProject],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.MAX_ACTIVE_JOBS_PER_USER = 2
    first, second, third = make_project(), make_project(), make_project()
    for project in (first, second, third):
        with django_capture_on_commit_callbacks(execute=True):  # dispatch, as after a commit
            lifecycle.start_job(project, Step.SCRIPT)
    render = lifecycle.edit_script(make_project(), SCRIPT)
    # Its owner's two places are taken: it waits in the fair queue, not in the broker.
    lifecycle.start_job(render, Step.RENDER)
    assert lifecycle.claim(first.pk, Step.SCRIPT, "worker-1") is not None

    samples = scrape()

    assert value(samples, "videocreation_jobs_running", step="script") == 1
    assert value(samples, "videocreation_jobs_running", step="render") == 0
    assert value(samples, "videocreation_jobs_waiting", step="script", admitted="true") == 1
    assert value(samples, "videocreation_jobs_waiting", step="script", admitted="false") == 1
    assert value(samples, "videocreation_jobs_waiting", step="render", admitted="false") == 1
    assert value(samples, "videocreation_jobs_waiting", step="render", admitted="true") == 0
    assert value(samples, "videocreation_projects", status="GENERATING_SCRIPT") == 3
    assert value(samples, "videocreation_projects", status="RENDERING") == 1

    lifecycle.cancel(render)
    dispatch.relay()  # the sweeper admits what waited as places free up
    after = scrape()
    assert value(after, "videocreation_jobs_waiting", step="render", admitted="false") == 0
    assert value(after, "videocreation_projects", status="DRAFT") == 1


@pytest.mark.django_db
def test_job_durations_are_histograms_per_step_and_engine(
    metrics_token: str, make_project: Callable[..., VideoProject], settings: Any
) -> None:
    settings.VIDEO_ENGINE = "tests.engines.RecordingEngine"
    RecordingEngine.reset()
    project = lifecycle.start_job(make_project(), Step.SCRIPT)
    tasks.generate_script(str(project.pk))  # a real job, which records its own timing
    for seconds in (3.0, 45.0, 700.0):  # renders as other workers recorded them
        estimates.record(Step.RENDER, "local", 4.0, seconds)

    samples = scrape()

    render = {"step": "render", "engine": "local"}
    name = "videocreation_job_duration_seconds"
    assert value(samples, f"{name}_count", **render) == 3
    assert value(samples, f"{name}_sum", **render) == pytest.approx(748.0)
    assert value(samples, f"{name}_bucket", le="2.5", **render) == 0
    assert value(samples, f"{name}_bucket", le="5.0", **render) == 1
    assert value(samples, f"{name}_bucket", le="60.0", **render) == 2
    assert value(samples, f"{name}_bucket", le="600.0", **render) == 2
    assert value(samples, f"{name}_bucket", le="1200.0", **render) == 3
    assert value(samples, f"{name}_bucket", le="+Inf", **render) == 3
    script = {"step": "script", "engine": "tests.engines.RecordingEngine"}
    assert value(samples, f"{name}_count", **script) == 1
    assert value(samples, f"{name}_sum", **script) < 60


@pytest.mark.django_db
def test_credits_charged_and_refunded_are_the_ledgers_sums(
    metrics_token: str, make_project: Callable[..., VideoProject], settings: Any
) -> None:
    settings.CREDITS_PER_SCRIPT = 2
    settings.CREDITS_PER_VIDEO_SECOND = 3
    scripted = lifecycle.edit_script(make_project(), SCRIPT)  # 4 s of video: 12 credits
    lifecycle.start_job(make_project(), Step.SCRIPT)
    lifecycle.start_job(make_project(), Step.SCRIPT)
    rendering = lifecycle.start_job(scripted, Step.RENDER)
    lifecycle.cancel(rendering)  # refunded in full
    failing = lifecycle.start_job(scripted, Step.RENDER)
    assert lifecycle.fail(failing.pk, None, "engine_error", "The renderer gave up")

    samples = scrape()

    assert value(samples, "videocreation_credits_charged_total", step="script") == 4
    assert value(samples, "videocreation_credits_charged_total", step="render") == 24
    assert value(samples, "videocreation_credits_refunded_total", step="script") == 0
    assert value(samples, "videocreation_credits_refunded_total", step="render") == 24


@pytest.mark.django_db
def test_stream_clients_count_every_process_and_forget_dead_ones(
    metrics_token: str, alice: User, make_project: Callable[..., VideoProject]
) -> None:
    project = make_project()
    now = timezone.now()
    for transport, process in [
        (Transport.SSE, "web-1:10"),
        (Transport.SSE, "web-2:20"),
        (Transport.WEBSOCKET, "web-2:20"),
    ]:
        LiveClient.objects.create(
            transport=transport, user=alice, project=project, process=process, seen_at=now
        )
    silent_for = timedelta(seconds=settings.LIVE_CLIENT_STALE_SECONDS + 5)
    LiveClient.objects.create(  # its process died: nobody vouches for it any more
        transport=Transport.SSE,
        user=alice,
        project=project,
        process="web-3:30",
        seen_at=now - silent_for,
    )

    samples = scrape()

    assert value(samples, "videocreation_stream_clients", transport="sse") == 2
    assert value(samples, "videocreation_stream_clients", transport="websocket") == 1
    assert value(samples, "videocreation_stream_clients", transport="openai") == 0


@pytest.mark.django_db
def test_a_scrape_samples_the_queue_once_a_minute_for_the_operator_page(
    metrics_token: str, make_project: Callable[..., VideoProject]
) -> None:
    lifecycle.start_job(make_project(), Step.SCRIPT)
    old = QueueSample.objects.create(
        minute=timezone.now() - metrics.SAMPLE_RETENTION - timedelta(hours=1), waiting=9, running=9
    )

    scrape()
    scrape()

    [sample] = QueueSample.objects.all()
    assert sample.pk != old.pk, "a sample older than the retention is deleted"
    assert (sample.waiting, sample.running) == (1, 0)
    assert timezone.now() - sample.minute < timedelta(minutes=2)


@pytest.mark.django_db
def test_a_scrape_costs_the_same_few_queries_however_many_jobs_there_are(
    metrics_token: str,
    make_project: Callable[..., VideoProject],
    django_assert_num_queries: Any,
) -> None:
    scrape()  # this minute's queue sample is written
    with django_assert_num_queries(5):
        scrape()

    for _ in range(5):
        lifecycle.start_job(make_project(), Step.SCRIPT)
        estimates.record(Step.RENDER, "local", 4.0, 10.0)
    with django_assert_num_queries(5):
        samples = scrape()
    assert value(samples, "videocreation_jobs_waiting", step="script", admitted="false") == 5


# --- the bus's wake-up lag ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_web_process_reports_its_streams_and_how_late_its_bus_delivered(
    metrics_token: str, asgi_server: AsgiServer, alice: User, make_project: Any
) -> None:
    project = make_project()
    token, _ = Token.objects.get_or_create(user=alice)
    url = f"{asgi_server.url}/api/video-creation/projects/{project.pk}/events"
    headers = {"Authorization": f"Token {token.key}", "Last-Event-ID": str(project.version)}

    def scraped() -> Samples:
        response = httpx.get(
            f"{asgi_server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200
        return parse(response.text)

    def lag_counts() -> dict[str, float]:
        return {
            dict(labels)["process"]: count
            for (name, labels), count in scraped().items()
            if name == "videocreation_bus_wake_lag_seconds_count"
        }

    with httpx.stream("GET", url, headers=headers, timeout=20):
        wait_for(
            lambda: value(scraped(), "videocreation_stream_clients", transport="sse") == 1,
            "the stream to be counted",
            every=0.1,
        )
        for index in range(3):
            progress.write(
                project.pk,
                expect=Q(),
                fields={"progress_message": f"Update {index}"},
                events=[(EventKind.PROGRESS, {})],
            )
        lag = wait_for(
            lambda: (counts := lag_counts()) and sum(counts.values()) >= 3 and counts,
            "the bus to deliver the three events",
            every=0.1,
        )

    assert list(lag.values()) == [3], lag
    [process] = lag
    assert process.endswith(f":{asgi_server.process.pid}" if asgi_server.process else "")
    # Polled on SQLite every EVENT_POLL_SECONDS: each event within a few polls.
    within_a_second = value(
        scraped(), "videocreation_bus_wake_lag_seconds_bucket", le="1.0", process=process
    )
    assert within_a_second == 3


@pytest.mark.django_db
def test_in_multiprocess_mode_any_process_answers_for_every_process_of_the_machine(
    metrics_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    observe = (  # `count` events written 0.3 s before this process's bus delivers them
        "import django, os, sys; django.setup(); "
        "from datetime import UTC, datetime, timedelta; "
        "from projects import metrics; "
        "written = (datetime.now(UTC) - timedelta(seconds=0.3)).isoformat(); "
        "metrics.observe_wake_lag([{'createdAt': written}] * int(sys.argv[1])); "
        "print(f'{metrics.HOST}:{os.getpid()}')"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "DJANGO_SETTINGS_MODULE": "videocreation.settings",
    }
    processes = {}
    for count in (1, 2):  # two web processes of one machine: one event, then two
        child = subprocess.run(
            [sys.executable, "-c", observe, str(count)],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        processes[child.stdout.strip()] = count
    # This process keeps its own, outside the folder: not shown in multiprocess mode.
    metrics.observe_wake_lag([{"createdAt": timezone.now().isoformat()}])
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))

    samples = scrape()  # answered by this process, which observed nothing in the folder

    name = "videocreation_bus_wake_lag_seconds"
    counts = {
        dict(labels)["process"]: count
        for (sample, labels), count in samples.items()
        if sample == f"{name}_count"
    }
    assert counts == processes
    for process, count in processes.items():
        assert value(samples, f"{name}_bucket", le="0.25", process=process) == 0
        assert value(samples, f"{name}_bucket", le="0.5", process=process) == count
    assert value(samples, "videocreation_jobs_running", step="script") == 0
