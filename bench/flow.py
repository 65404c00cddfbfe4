"""The whole API flow against a running server, polling /status every 0.2 s as a client would.

    python bench/flow.py --url http://127.0.0.1:8000 --token <token> [--scenes 4 --seconds 4]

Prints, for each job, how long it took and the distinct progress values the
poller saw; downloads the video and prints its duration as ffmpeg reads it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import imageio_ffmpeg


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{args.url}/api/video-creation/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {args.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def follow(args: argparse.Namespace, project_id: str, done: str) -> dict[str, Any]:
    started = time.monotonic()
    seen: list[tuple[int, str, str]] = []
    while True:
        status = call(args, "GET", f"projects/{project_id}/status")
        step = f"{status['completedSteps']}/{status['totalSteps']}"
        point = (status["progress"], status["progressMessage"], step)
        if not seen or seen[-1] != point:
            seen.append(point)
        if status["status"] in (done, "FAILED"):
            break
        time.sleep(0.2)
    between = [value for value, _, _ in seen if 0 < value < 100]
    print(
        f"  {status['status']} in {time.monotonic() - started:.1f} s; "
        f"{len(set(between))} distinct values strictly between 0 and 100:"
    )
    for value, message, step in seen:
        print(f"    {value:3d}%  step {step:5s}  {message}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    brief = {
        "title": "Night trains of Europe",
        "brief": "Sleepers leave Vienna at dusk. Passengers share stories in the dining car. "
        "By morning the train reaches the sea.",
        "sceneCount": args.scenes,
        "secondsPerScene": args.seconds,
        "style": "warm, calm",
    }
    project = call(args, "POST", "projects", brief)
    print(f"project {project['id']}\nscript job:")
    call(args, "POST", f"projects/{project['id']}/script")
    if follow(args, project["id"], "DRAFT")["status"] != "DRAFT":
        return 1
    print("render job:")
    call(args, "POST", f"projects/{project['id']}/render")
    if follow(args, project["id"], "COMPLETED")["status"] != "COMPLETED":
        return 1
    with tempfile.NamedTemporaryFile(suffix=".mp4") as video:
        request = urllib.request.Request(
            f"{args.url}/api/video-creation/projects/{project['id']}/video",
            headers={"Authorization": f"Token {args.token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            video.write(response.read())
        video.flush()
        info = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", video.name],
            capture_output=True,
            text=True,
        ).stderr
    duration = re.search(r"Duration: ([\d:.]+)", info)
    stream = re.search(r"Video: .*", info)
    print(f"video: {duration.group(1) if duration else '?'}; {stream.group(0) if stream else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
