"""From a progress write to the `openai` client's chunk: latency, and how many writes arrive.

    .venv/bin/python bench/openai_stream.py              # SQLite (the bus polls the log)
    .venv/bin/python bench/openai_stream.py --postgres   # PostgreSQL (LISTEN/NOTIFY)
    .venv/bin/python bench/openai_stream.py --redis      # SQLite, wake-ups over Redis pub/sub

It migrates a throwaway database (SQLite, or a scratch PostgreSQL database
dropped afterwards), starts one uvicorn process, and asks for a video with the
official `openai` client (`stream=True`) in a thread of this process. No
worker runs: this process plays the worker, claiming the script job and
writing `--updates` progress changes through `progress.write` (1 %, 2 %, …
of the script job), a random 0-300 ms apart, as a reporter would.
It prints how many of the changes reached the client as chunks, and the
latency from the start of each write to its chunk's arrival, median and p99.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from pathlib import Path

from harness import bench_server

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
SCRATCH_DB = "videocreation_bench_openai"


def _read_stream(
    port: int, token: str, arrivals: dict[float, float], done: threading.Event
) -> None:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)
    stream = client.chat.completions.create(
        model="videocreation-16x9",
        messages=[{"role": "user", "content": "A benchmark of progress chunks, start to end."}],
        stream=True,
    )
    try:
        for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            value = delta.model_extra.get("progress") if delta else None
            if value is not None:
                arrivals[value] = time.perf_counter()
    except openai.APIError:
        pass  # how the benchmark ends the job
    finally:
        done.set()


def _measure(port: int, token: str, updates: int) -> None:
    from django.db.models import Q

    from projects import lifecycle, progress
    from projects.models import EventKind, Status, Step, VideoProject
    from projects.openai_api import overall_progress

    arrivals: dict[float, float] = {}
    done = threading.Event()
    reader = threading.Thread(target=_read_stream, args=(port, token, arrivals, done), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not (project := VideoProject.objects.filter(auto_render=True).first()):
        if time.monotonic() > deadline:
            raise SystemExit("the request made no project")
        time.sleep(0.01)
    lifecycle.claim(project.pk, Step.SCRIPT, "bench")
    began: dict[float, float] = {}
    for number in range(1, updates + 1):
        time.sleep(random.uniform(0, 0.3))
        percent = round(number * 99 / updates)
        expected, _ = overall_progress({"status": Status.GENERATING_SCRIPT, "progress": percent})
        began[expected] = time.perf_counter()
        progress.write(
            project.pk,
            expect=Q(),
            fields={"progress": percent},
            events=[(EventKind.PROGRESS, {})],
        )
    deadline = time.monotonic() + 10
    while not began.keys() <= arrivals.keys() and time.monotonic() < deadline:
        time.sleep(0.01)
    lifecycle.fail(project.pk, "bench", "bench_over", "The benchmark is over.")
    done.wait(30)
    latencies = sorted(arrivals[value] - began[value] for value in began if value in arrivals)
    print(f"writes: {len(began)}, chunks for them: {len(latencies)}")
    print(
        f"write -> chunk latency: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with LISTEN/NOTIFY")
    parser.add_argument("--redis", action="store_true", help="wake-ups over Redis pub/sub")
    parser.add_argument("--updates", type=int, default=99, help="progress writes (at most 99)")
    args = parser.parse_args()
    with bench_server(
        TREE,
        "videocreation.asgi:application",
        prefix="bench-openai-",
        postgres_db=SCRATCH_DB if args.postgres else None,
        redis=args.redis,
    ) as (port, token, _):
        _measure(port, token, min(args.updates, 99))


if __name__ == "__main__":
    main()
