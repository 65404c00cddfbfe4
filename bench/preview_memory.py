"""A worker's memory while it draws a scene's preview, by the scene's length.

    .venv/bin/python bench/preview_memory.py               # 1:1 scenes of 2, 5 and 10 s
    .venv/bin/python bench/preview_memory.py --seconds 10 20 --aspect 16:9

Each preview is drawn by the local engine in a fresh Python process (so each
peak is its own), which prints its peak resident memory (ru_maxrss, with
ffmpeg's children counted apart) and the time it took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from projects.engines.base import ProjectSpec, Scene
from projects.engines.local import LocalEngine

class Quiet:
    def update(self, fraction, message=None): pass
    def log(self, line): pass
    def check(self): pass

seconds, aspect = float(sys.argv[1]), sys.argv[2]
spec = ProjectSpec(project_id="bench", title="Bench", brief="A long look at the sea at dusk.",
                   aspect_ratio=aspect, scene_count=1, seconds_per_scene=int(seconds), style="")
scene = Scene(index=0, narration="The sea at dusk.", visual="Waves", seconds=seconds)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
with tempfile.TemporaryDirectory() as folder:
    target = Path(folder) / "preview.webp"
    LocalEngine().draw_preview(spec, scene, target, Quiet())
    size = target.stat().st_size
print(json.dumps({
    "before_mib": before / 1024,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "children_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "seconds": time.monotonic() - started,
    "kib": size / 1024,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[2, 5, 10])
    parser.add_argument("--aspect", default="1:1")
    args = parser.parse_args()
    print(f"{'scene':>8} {'worker peak':>12} {'ffmpeg peak':>12} {'took':>8} {'preview':>9}")
    for seconds in args.seconds:
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(seconds), args.aspect, str(TREE)],
            cwd=TREE,
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{seconds:>6g} s {row['peak_mib']:>8.0f} MiB {row['children_peak_mib']:>8.0f} MiB"
            f" {row['seconds']:>6.1f} s {row['kib']:>6.0f} KiB"
        )


if __name__ == "__main__":
    main()
