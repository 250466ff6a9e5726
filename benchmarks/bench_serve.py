"""Throughput of ``verbcal serve`` against a bare FastAPI app on the same uvicorn settings.

All servers run in their own process, one uvicorn worker each, with the same settings
(loopback, access log off, the same JSON log configuration). ``verbcal serve`` runs as the
command users start (API keys on, rate limit off, a JSON log line per request to /dev/null),
serving one temperature-scaling calibrator per bundled recorded set (tweets, drug reviews,
BBC news); a second ``verbcal serve`` runs with the row cache off (``--cache-rows 0``) for the
worst case, and a third logs every served prediction (``--log-predictions``: SQLite in WAL
mode, committed and fsynced before each answer) for what durable monitoring costs; after the
run the log's rows are counted (at least every timed item must be there). The bare app has one POST route that reads the body and returns a constant
response: verbcal's own answer to a request of the same kind and model, so the same size.

Requests are built from the recorded replies: each names one model (the sets take turns) and
carries rows drawn at random from that set's recorded verbalized distributions, so rows repeat
as often as the recorded replies make them (3,000 distinct single-item bodies, 300 100-item
bodies, sent in turn). The row cache's hit rate over the timed requests is read from
``/metrics`` and reported. The load generator is one aiohttp client with ``concurrency``
connections for a fixed time; single-item and 100-item ``/v1/calibrate`` bodies are timed,
servers alternating, and each figure is the median of ``--rounds`` rounds. The server
process's CPU time per timed request (Linux ``/proc``) is reported too: on a machine shared
with other jobs it moves less than requests/s do.
Goal: >= 0.8 of the bare app's requests/s, zero errors.

Usage: python benchmarks/bench_serve.py [--json] [--seconds S] [--rounds R] [--concurrency C]
       [--no-uncached] [--no-logged]
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
answers = {path.name.encode(): path.read_bytes() for path in replies.iterdir()}
app = FastAPI()

@app.post("/v1/calibrate")
async def calibrate(request: Request) -> Response:
    body = await request.body()
    start = body.index(b'"model": "') + 10
    model = body[start : body.index(b'"', start)]
    kind = b"batch-" if body.count(b'"probs"') > 1 else b"single-"
    return Response(answers[kind + model], media_type="application/json")

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
    from verbcal.calibration import make_calibrator

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


async def drive(
    url: str, bodies: list[bytes], seconds: float, concurrency: int, pid: int | None = None
) -> dict[str, Any]:
    """Send ``bodies`` in turn from ``concurrency`` connections for ``seconds``; time answers
    (and the CPU time the server process ``pid`` used per timed request)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    turn = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(until: float, record: bool) -> None:
            nonlocal errors, turn
            while time.perf_counter() < until:
                body = bodies[turn % len(bodies)]
                turn += 1
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
        start, cpu = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "errors": errors,
        "requests": len(latencies),
        "cpu_us": 1e6 * cpu / max(1, len(latencies)),
        "sent": turn,
    }


def count_rows(log: Path) -> int:
    """Predictions in a ``--log-predictions`` file (read after its server stopped)."""
    import sqlite3

    with sqlite3.connect(log) as db:
        return int(db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])


def _p99(med: dict[str, dict[str, float]], key: str) -> float | None:
    return round(med[key]["p99_ms"], 2) if key in med else None


def _logged_pairs(
    results: dict[str, list[dict[str, Any]]], payloads: dict[str, list[bytes]]
) -> int:
    """Distinct (model, item id) pairs the logging server was sent: the log keeps one row per
    pair (a prediction served again replaces its row). Each measurement sends the bodies of its
    kind in order from the first, so those sent are a prefix of them."""
    pairs = set()
    for kind, bodies in payloads.items():
        sent = max(r["sent"] for r in results[f"verbcal_logged_{kind}"])
        for body in bodies[: min(sent, len(bodies))]:
            request = json.loads(body)
            pairs.update((request["model"], item["id"]) for item in request["items"])
    return len(pairs)


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(port: int, path: str, body: bytes | None = None) -> bytes:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return bytes(response.read())


def cache_counts(port: int) -> tuple[float, float] | None:
    """(hits, misses) summed over models from /metrics, or None where the server has no cache."""
    hits = misses = 0.0
    found = False
    for line in post(port, "/metrics").decode().splitlines():
        if line.startswith("verbcal_cache_hits_total{"):
            hits += float(line.rsplit(" ", 1)[1])
            found = True
        elif line.startswith("verbcal_cache_misses_total{"):
            misses += float(line.rsplit(" ", 1)[1])
    return (hits, misses) if found else None


def run(
    seconds: float,
    rounds: int,
    concurrency: int,
    uncached: bool = True,
    seed: int = 0,
    logged: bool = True,
) -> dict[str, Any]:
    workload = Workload.recorded(seed)
    payloads = {"single": workload.bodies(1, 3000), "batch": workload.bodies(100, 300)}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = fit_calibrator(Path(tmp))
        env_keys = {**os.environ, "VERBCAL_API_KEYS": KEY}
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        try:
            log = Path(tmp) / "predictions.sqlite"
            for side, extra in (
                ("verbcal", []),
                ("verbcal_nocache", ["--cache-rows", "0"]),
                ("verbcal_logged", ["--log-predictions", str(log)]),
            ):
                if (side == "verbcal_nocache" and not uncached) or (
                    side == "verbcal_logged" and not logged
                ):
                    continue
                ports[side] = free_port()
                command = [sys.executable, "-c", "from verbcal.cli import main; main()", "serve"]
                for name, path in paths.items():
                    command += ["--calibrator", f"{name}={path}"]
                command += ["--port", str(ports[side]), "--rate-limit", "", "--max-items", "1000"]
                command += extra
                process = subprocess.Popen(
                    command, env=env_keys, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                processes.append(process)
                pids[side] = process.pid
                wait_ready(ports[side], process)
            replies = Path(tmp) / "replies"
            replies.mkdir()
            # the bare app answers with verbcal's bytes for the first body of each kind and model
            for kind, bodies in payloads.items():
                for body in bodies[: len(DATASETS)]:
                    model = json.loads(body)["model"]
                    answer = post(
                        ports["verbcal_nocache" if uncached else "verbcal"], "/v1/calibrate", body
                    )
                    (replies / f"{kind}-{model}").write_bytes(answer)
            ports["bare"] = free_port()
            processes.append(
                start(
                    [sys.executable, "-c", BARE_SERVER, str(ports["bare"]), str(replies)],
                    ports["bare"],
                )
            )
            pids["bare"] = processes[-1].pid
            results: dict[str, list[dict[str, Any]]] = {}
            counts: dict[str, list[float]] = {}
            for _ in range(rounds):
                for kind, bodies in payloads.items():
                    for side in ("bare", "verbcal", "verbcal_nocache", "verbcal_logged"):
                        if side not in ports:
                            continue
                        before = cache_counts(ports[side]) if side == "verbcal" else None
                        url = f"http://127.0.0.1:{ports[side]}/v1/calibrate"
                        outcome = asyncio.run(drive(url, bodies, seconds, concurrency, pids[side]))
                        results.setdefault(f"{side}_{kind}", []).append(outcome)
                        after = cache_counts(ports[side]) if side == "verbcal" else None
                        if before is not None and after is not None:
                            tally = counts.setdefault(kind, [0.0, 0.0])
                            tally[0] += after[0] - before[0]
                            tally[1] += after[1] - before[1]
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
        logged_rows = count_rows(log) if logged else None
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    errors = sum(r["errors"] for v in results.values() for r in v)

    def ratio(side: str, kind: str) -> float | None:
        if f"{side}_{kind}" not in med:
            return None
        return round(med[f"{side}_{kind}"]["rps"] / med[f"bare_{kind}"]["rps"], 3)

    def hit_rate(kind: str) -> float | None:
        if kind not in counts or sum(counts[kind]) == 0:
            return None
        return round(counts[kind][0] / sum(counts[kind]), 4)

    return {
        "ratio_single_vs_bare": ratio("verbcal", "single"),
        "ratio_batch100_vs_bare": ratio("verbcal", "batch"),
        "ratio_single_nocache_vs_bare": ratio("verbcal_nocache", "single"),
        "ratio_batch100_nocache_vs_bare": ratio("verbcal_nocache", "batch"),
        "ratio_single_logged_vs_bare": ratio("verbcal_logged", "single"),
        "ratio_batch100_logged_vs_bare": ratio("verbcal_logged", "batch"),
        "p99_ms_single_logged": _p99(med, "verbcal_logged_single"),
        "logged_rows": logged_rows,
        "logged_expected": _logged_pairs(results, payloads) if logged else None,
        "cache_hit_rate_single": hit_rate("single"),
        "cache_hit_rate_batch100": hit_rate("batch"),
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
        "server_cpu_us_single": round(med["verbcal_single"]["cpu_us"], 1),
        "server_cpu_us_single_bare": round(med["bare_single"]["cpu_us"], 1),
        "server_cpu_us_batch100": round(med["verbcal_batch"]["cpu_us"], 1),
        "server_cpu_us_batch100_bare": round(med["bare_batch"]["cpu_us"], 1),
        "errors": errors,
        "requests": sum(r["requests"] for v in results.values() for r in v),
        "distinct_bodies": {kind: len(set(bodies)) for kind, bodies in payloads.items()},
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
    parser.add_argument(
        "--no-uncached",
        action="store_true",
        help="skip the server with the row cache off (--cache-rows 0), e.g. for older versions",
    )
    parser.add_argument(
        "--no-logged",
        action="store_true",
        help="skip the server logging every prediction (--log-predictions)",
    )
    args = parser.parse_args()
    numbers = run(
        args.seconds,
        args.rounds,
        args.concurrency,
        uncached=not args.no_uncached,
        logged=not args.no_logged,
    )
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
            f" {numbers[f'p99_ms_{name}']:.1f} ms, bare {numbers[f'p99_ms_{name}_bare']:.1f} ms;"
            f" server CPU per request verbcal {numbers[f'server_cpu_us_{name}']:.0f} µs, bare"
            f" {numbers[f'server_cpu_us_{name}_bare']:.0f} µs"
        )
    for name, label in (("single", "1 item"), ("batch100", "100 items")):
        if numbers[f"ratio_{name}_nocache_vs_bare"] is not None:
            print(
                f"{label:>9}: row cache off (--cache-rows 0): ratio"
                f" {numbers[f'ratio_{name}_nocache_vs_bare']:.3f}; cache hit rate with it on:"
                f" {numbers[f'cache_hit_rate_{name}']}"
            )
    for name, label in (("single", "1 item"), ("batch100", "100 items")):
        if numbers[f"ratio_{name}_logged_vs_bare"] is not None:
            print(
                f"{label:>9}: every prediction logged (--log-predictions, fsynced): ratio"
                f" {numbers[f'ratio_{name}_logged_vs_bare']:.3f} (row cache on)"
            )
    if numbers["logged_rows"] is not None:
        print(
            f"log: {numbers['logged_rows']} rows, one per (model, item id) sent:"
            f" {numbers['logged_expected']}"
        )
    print(f"errors: {numbers['errors']} of {numbers['requests']} requests")
    print(
        f"machine: {numbers['cores']} cores, 1-min load average {numbers['load_1min_at_end']:.2f}"
        " at the end (client and servers share the cores)"
    )


if __name__ == "__main__":
    main()
