"""A big video through `GET …/video` under uvicorn: throughput and the server's memory.

    .venv/bin/python bench/download.py             # a 1 GiB video
    .venv/bin/python bench/download.py --mib 256

It migrates a throwaway SQLite database, gives the bench project a finished
video of `--mib` MiB (random bytes, written through the lifecycle's own
finish), starts one uvicorn process as `make run` serves the product, and
downloads the video whole and then its second half with a Range request, with
httpx, while a thread samples the server's resident memory (/proc/PID/status,
every 20 ms). For comparison it reads the same file straight from the disk in
this process (the page cache is warm for both: the file was just written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from harness import bench_django, free_port, serve, wait_until_serving

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
MIB = 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class MemoryWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, _rss_kib(self.pid))


def _finished_video(project_id: str, mib: int) -> Path:
    from django.conf import settings

    from projects import lifecycle
    from projects.models import Step, VideoProject

    scenes = [{"index": 0, "narration": "A long one.", "visual": "Sea", "seconds": 4}]
    project = lifecycle.edit_script(
        VideoProject.objects.get(pk=project_id), {"title": "Big", "scenes": scenes}
    )
    lifecycle.start_job(project, Step.RENDER)
    lifecycle.claim(project.pk, Step.RENDER, "bench")
    name = f"videos/{project.pk}/big.mp4"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    with path.open("wb") as file:
        for _ in range(mib):
            file.write(block)
    assert lifecycle.finish_render(project.pk, "bench", name)
    return path


def _drop_page_cache() -> bool:
    """Cold reads where this process may drop the page cache (root on Linux)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def _disk_read(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as file:
        while file.read(MIB):
            pass
    return path.stat().st_size / MIB / (time.perf_counter() - started)


def _download(port: int, token: str, project_id: str, server_pid: int, span: str | None) -> dict:
    import httpx

    headers = {"Authorization": f"Token {token}"} | ({"Range": span} if span else {})
    watch = MemoryWatch(server_pid)
    before = _rss_kib(server_pid)
    watch.start()
    received = 0
    started = time.perf_counter()
    url = f"http://127.0.0.1:{port}/api/video-creation/projects/{project_id}/video"
    with httpx.stream("GET", url, headers=headers, timeout=120) as response:
        first_byte = None
        for chunk in response.iter_raw(MIB):
            if first_byte is None:
                first_byte = time.perf_counter() - started
            received += len(chunk)
        status = response.status_code
    took = time.perf_counter() - started
    watch.stop.set()
    watch.join()
    return {
        "status": status,
        "MiB": received / MIB,
        "MiB/s": received / MIB / took,
        "first byte ms": (first_byte or 0) * 1000,
        "server RSS before MiB": before / 1024,
        "server RSS peak MiB": watch.peak / 1024,
    }


def _curl(port: int, token: str, project_id: str) -> float:
    url = f"http://127.0.0.1:{port}/api/video-creation/projects/{project_id}/video"
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{speed_download}",
            "-H",
            f"Authorization: Token {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    with bench_django(TREE, prefix="bench-download-") as (env, token, project_id):
        path = _finished_video(project_id, args.mib)
        port = free_port()
        server = serve(TREE, env, port, "videocreation.asgi:application")
        try:
            asyncio.run(wait_until_serving(port))
            warm = _disk_read(path)
            cold = _disk_read(path) if _drop_page_cache() else None
            print(
                f"video: {args.mib} MiB; read from the page cache {warm:,.0f} MiB/s, from "
                f"the disk {f'{cold:,.0f} MiB/s' if cold else '(cannot drop the cache here)'}"
            )
            half = path.stat().st_size // 2
            for label, span in (("whole", None), ("second half (Range)", f"bytes={half}-")):
                row = _download(port, token, project_id, server.pid, span)
                print(
                    f"{label:22} {row['status']} {row['MiB']:7.0f} MiB  {row['MiB/s']:7,.0f} MiB/s"
                    f"  first byte {row['first byte ms']:7.1f} ms  server RSS "
                    f"{row['server RSS before MiB']:.0f} → peak "
                    f"{row['server RSS peak MiB']:.0f} MiB"
                )
            if shutil.which("curl"):
                print(
                    f"whole, by curl (a client in C): {_curl(port, token, project_id):,.0f} MiB/s"
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
