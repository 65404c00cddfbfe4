"""`kill -9` the worker that renders a video: another worker takes the job within seconds,
goes on from the finished scenes, and the video is completed once."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from credits.models import EntryKind, LedgerEntry
from projects import lifecycle
from projects.models import Status, Step, VideoProject
from tests.conftest import database_url_for_children
from tests.faults.conftest import Product, product_env
from tests.media import probe
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TAKEOVER_LIMIT = 15.0  # seconds from the kill until another worker holds the job
RENDERED = re.compile(r"^Scene (\d+) rendered:")
LONG_SCRIPT = {
    "title": "Long enough to kill",
    "scenes": [
        {"index": index, "narration": f"Scene {index + 1}.", "visual": "Sea", "seconds": 4}
        for index in range(4)
    ],
}


def _holder_pid(project: VideoProject) -> int:
    """The pid in the lease owner's name (host:pid:nonce), or 0 when nobody holds the job."""
    owner = VideoProject.objects.get(pk=project.pk).lease_owner
    return int(owner.split(":")[-2]) if owner else 0


def test_a_worker_killed_mid_render_is_replaced_within_seconds(
    product: Product, report: Any, media_root: Path, make_project: Any
) -> None:
    project = lifecycle.edit_script(make_project(), LONG_SCRIPT)
    env = product_env(database_url_for_children(), settings.REDIS_URL or None, media_root)
    workers = [product.start_worker(env, "worker-a"), product.start_worker(env, "worker-b")]
    project = lifecycle.start_job(project, Step.RENDER)

    wait_for(
        lambda: VideoProject.objects.get(pk=project.pk).completed_steps >= 1,
        "the first scene to be rendered",
        timeout=60,
        every=0.05,
    )
    victim_pid = _holder_pid(project)
    victim = next(w for w in workers if os.getpgid(victim_pid) == w.pid)
    os.killpg(victim.pid, signal.SIGKILL)  # the cluster and its task process, at once
    killed_at = time.monotonic()
    victim.wait()

    wait_for(
        lambda: _holder_pid(project) not in (0, victim_pid),
        "another worker to take the job",
        timeout=TAKEOVER_LIMIT + 30,
        every=0.05,
    )
    takeover = time.monotonic() - killed_at
    done = wait_for(
        lambda: (p := VideoProject.objects.get(pk=project.pk)).status != Status.RENDERING and p,
        "the render to end",
        timeout=120,
        every=0.1,
    )
    finished_at = time.monotonic() - killed_at
    report(
        "worker killed (kill -9) mid-render, a second worker running",
        {"taken over after (s)": round(takeover, 2), "completed after (s)": round(finished_at, 2)},
    )

    assert done.status == Status.COMPLETED, done.error_message
    assert takeover <= TAKEOVER_LIMIT, f"taken over only after {takeover:.1f} s"
    assert done.attempt == 2
    lines = [
        line
        for event in done.events.filter(kind="log").order_by("seq")
        for line in event.payload.get("lines") or [event.payload.get("line", "")]
    ]
    rendered = Counter(m.group(1) for line in lines if (m := RENDERED.match(line)))
    assert all(count == 1 for count in rendered.values()), f"a scene rendered twice: {rendered}"
    assert "Scene 1 was rendered before; using that clip" in lines
    assert any(line.startswith("Worker lost — resuming from scene") for line in lines), lines
    charges = LedgerEntry.objects.filter(project=done, kind=EntryKind.CHARGE)
    assert [(entry.job, entry.amount) for entry in charges] == [(1, -16)], "charged once"
    video = Path(settings.MEDIA_ROOT) / done.video.name
    assert probe(video).seconds == pytest.approx(16, abs=0.3)
