"""What the tests of the live transports (SSE, WebSocket) check alike."""

from __future__ import annotations

from typing import Any

from projects import lifecycle
from projects.models import RUNNING_STATUSES, VideoProject


def job_over(project: VideoProject) -> bool:
    project.refresh_from_db()
    return project.status not in RUNNING_STATUSES


def assert_each_once(seqs: list[int], first: int, last: int) -> None:
    """The promise of every transport: each seq from `first` to `last`, in order, once."""
    assert seqs == list(range(first, last + 1)), f"gaps or repeats in {seqs}"


def long_render(make_project: Any) -> VideoProject:
    """A reviewed project whose render takes several seconds on this machine: long
    enough to still be running after a web server restart."""
    scenes = [
        {"index": i, "narration": f"Stop {i} of the night train.", "visual": "Rails", "seconds": 3}
        for i in range(6)
    ]
    return lifecycle.edit_script(make_project(), {"title": "Long night", "scenes": scenes})
