"""Throughput of ``verbcal serve`` against a bare FastAPI app on the same uvicorn settings.

Both servers run in their own process, one uvicorn worker each, with the same settings
(loopback, access log off, the same JSON log configuration). ``verbcal serve`` runs as the
command users start (API keys on, rate limit off, a JSON log line per request to /dev/null);
the bare app has one POST route that reads the body and returns a constant response of the
same size as verbcal's answer. The load generator is one aiohttp client with ``concurrency``
connections that sends the same request for a fixed time; single-item and 100-item
``/v1/calibrate`` bodies are timed, servers alternating, and each figure is the median of
``--rounds`` rounds. Goal: >= 0.8 of the bare app's requests/s, zero errors.

Usage: python benchmarks/bench_serve.py [--json] [--seconds S] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY = "vk-bench-0123456789abcdef"
BARE_SERVER = """
import sys
from pathlib import Path
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from verbcal.serve.observe import log_config

port, replies = int(sys.argv[1]), Path(sys.argv[2])
answers = {name: replies.joinpath(name).read_bytes() for name in ("single", "batch")}
app = FastAPI()

@app.post("/v1/calibrate")
async def calibrate(request: Request) -> Response:
    body = await request.body()
    answer = answers["batch" if body.count(b'"probs"') > 1 else "single"]
    return Response(answer, media_type="application/json")

uvicorn.run(app, host="127.0.0.1", port=port, log_config=log_config("info"), access_log=False)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, process)
    return process


DATASETS = ("tweets", "drug-reviews", "bbc-news")
"""One calibrator per bundled recorded set; requests rotate between them."""


def fit_calibrator(folder: Path) -> dict[str, Path]:
    """Temperature scaling fitted on each bundled recorded set, saved under ``folder``."""
    from verbcal import datasets
    from verbcal.calibrate import make_calibrator

    paths = {}
    for name in DATASETS:
        predictions = datasets.load(f"recorded:{name}").labelled()
        calibrator = make_calibrator("temperature")
        calibrator.fit(predictions.probs, predictions.y, labels=predictions.labels)
        paths[name] = folder / f"{name}.json"
        calibrator.save(paths[name])
    return paths


class Workload:
    """Request bodies built from the recorded replies: rows drawn at random, never one row repeated.

    Each body names one model (the datasets take turns) and carries rows of that dataset,
    drawn with replacement from its recorded verbalized distributions (with their ids), so
    the rows repeat as often as they do in the recorded replies.
    """

    def __init__(self, rows: dict[str, tuple[list[str], list[dict[str, float]]]], seed: int):
        import random

        self.rows = rows
        self.random = random.Random(seed)

    @classmethod
    def recorded(cls, seed: int = 0) -> Workload:
        from verbcal import datasets

        rows = {}
        for name in DATASETS:
            data = datasets.load(f"recorded:{name}")
            probs = [dict(zip(data.labels, map(float, row), strict=True)) for row in data.probs]
            rows[name] = (list(data.ids), probs)
        return cls(rows, seed)

    def bodies(self, items: int, count: int) -> list[bytes]:
        """``count`` bodies of ``items`` rows each, models in turn."""
        out = []
        for b in range(count):
            model = DATASETS[b % len(DATASETS)]
            ids, probs = self.rows[model]
            picks = [self.random.randrange(len(ids)) for _ in range(items)]
            body = {"model": model, "items": [{"id": ids[i], "probs": probs[i]} for i in picks]}
            out.append(json.dumps(body).encode())
        return out


async def drive(url: str, body: bytes, seconds: float, concurrency: int) -> dict[str, Any]:
    """Send ``body`` from ``concurrency`` connections for ``seconds``; count and time answers."""
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if record:
                    latencies.append(time.perf_counter() - sent)
                    errors += not ok

        warm = time.perf_counter() + min(1.0, seconds / 5)
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "errors": errors,
        "requests": len(latencies),
    }


def run(seconds: float, rounds: int, concurrency: int) -> dict[str, Any]:
    from verbcal import datasets
    from verbcal.calibrate import make_calibrator

    payloads = bodies()
    with tempfile.TemporaryDirectory() as tmp:
        predictions = datasets.load("recorded:tweets").labelled()
        calibrator = make_calibrator("temperature")
        calibrator.fit(predictions.probs, predictions.y, labels=predictions.labels)
        calibrator.save(Path(tmp) / "ts.json")
        ours_port, bare_port = free_port(), free_port()
        env_keys = {**os.environ, "VERBCAL_API_KEYS": KEY}
        ours_cmd = [
            sys.executable,
            "-c",
            "from verbcal.cli import main; main()",
            "serve",
            "--calibrator",
            f"tweets={Path(tmp) / 'ts.json'}",
            "--port",
            str(ours_port),
            "--rate-limit",
            "",
            "--max-items",
            "1000",
        ]
        ours = subprocess.Popen(
            ours_cmd, env=env_keys, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        bare = None
        try:
            wait_ready(ours_port, ours)
            replies = Path(tmp) / "replies"
            replies.mkdir()
            import urllib.request

            for name, body in payloads.items():  # the bare app answers with verbcal's bytes
                request = urllib.request.Request(
                    f"http://127.0.0.1:{ours_port}/v1/calibrate",
                    data=body,
                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request) as response:
                    (replies / name).write_bytes(response.read())
            bare = start(
                [sys.executable, "-c", BARE_SERVER, str(bare_port), str(replies)], bare_port
            )
            results: dict[str, list[dict[str, Any]]] = {}
            for _ in range(rounds):
                for name, body in payloads.items():
                    for side, port in (("bare", bare_port), ("verbcal", ours_port)):
                        url = f"http://127.0.0.1:{port}/v1/calibrate"
                        outcome = asyncio.run(drive(url, body, seconds, concurrency))
                        results.setdefault(f"{side}_{name}", []).append(outcome)
        finally:
            for process in (ours, bare):
                if process is not None:
                    process.terminate()
                    process.wait(10)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    errors = sum(r["errors"] for v in results.values() for r in v)
    return {
        "ratio_single_vs_bare": round(med["verbcal_single"]["rps"] / med["bare_single"]["rps"], 3),
        "ratio_batch100_vs_bare": round(med["verbcal_batch"]["rps"] / med["bare_batch"]["rps"], 3),
        "rps_single": round(med["verbcal_single"]["rps"], 1),
        "rps_single_bare": round(med["bare_single"]["rps"], 1),
        "rps_batch100": round(med["verbcal_batch"]["rps"], 1),
        "rps_batch100_bare": round(med["bare_batch"]["rps"], 1),
        "items_per_s_batch100": round(100 * med["verbcal_batch"]["rps"], 1),
        "p50_ms_single": round(med["verbcal_single"]["p50_ms"], 2),
        "p99_ms_single": round(med["verbcal_single"]["p99_ms"], 2),
        "p99_ms_single_bare": round(med["bare_single"]["p99_ms"], 2),
        "p99_ms_batch100": round(med["verbcal_batch"]["p99_ms"], 2),
        "p99_ms_batch100_bare": round(med["bare_batch"]["p99_ms"], 2),
        "errors": errors,
        "requests": sum(r["requests"] for v in results.values() for r in v),
        "seconds": seconds,
        "rounds": rounds,
        "concurrency": concurrency,
        "cores": os.cpu_count(),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed span per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is kept)")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    numbers = run(args.seconds, args.rounds, args.concurrency)
    if args.json:
        print(json.dumps(numbers))
        return
    print(
        f"verbcal serve vs a bare FastAPI app, same uvicorn settings; aiohttp client, concurrency"
        f" {args.concurrency}, {args.seconds:g} s per measurement, median of {args.rounds} rounds"
    )
    for name, label in (("single", "1 item"), ("batch100", "100 items")):
        print(
            f"{label:>9}: verbcal {numbers[f'rps_{name}']:8.1f} req/s, bare"
            f" {numbers[f'rps_{name}_bare']:8.1f} req/s, ratio"
            f" {numbers[f'ratio_{name}_vs_bare']:.3f} (goal >= 0.8); p99 verbcal"
            f" {numbers[f'p99_ms_{name}']:.1f} ms, bare {numbers[f'p99_ms_{name}_bare']:.1f} ms"
        )
    print(f"errors: {numbers['errors']} of {numbers['requests']} requests")
    print(
        f"machine: {numbers['cores']} cores, 1-min load average {numbers['load_1min_at_end']:.2f}"
        " at the end (client and servers share the cores)"
    )


if __name__ == "__main__":
    main()
