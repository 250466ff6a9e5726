"""Where a live ``verbcal serve`` (or the bare app of ``bench_serve.py``) spends its time under load.

Starts the server as ``bench_serve.py`` does, drives it with the same client and workload
(1-item or 100-item ``/v1/calibrate`` bodies from the recorded replies, concurrency 32),
records it with py-spy (``pip install py-spy``; not a verbcal dependency) and prints the
share of samples per part: HTTP (uvicorn/h11), event loop, FastAPI, JSON validation, the
row cache, input checks, rendering, the gate, the log line, metrics, the calibrator.
Each sample goes to the first part found walking from the innermost frame outwards.

Usage: python benchmarks/spy_serve.py {single,batch100} {verbcal,bare} [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_serve as bench

PARTS = [  # (part, text in a frame), matched from the innermost frame outwards
    ("JSON parsing and validation (pydantic-core)", "model_validate_json"),
    ("calibrator predict_proba (cache misses)", "predict_proba"),
    ("rows read from new texts (msgspec)", "serve/wire.py"),
    ("row cache keys and lookups", "serve/cache.py"),
    ("body decoding and checks (msgspec), row texts", "fast_calibrate"),
    ("input checks (label order, zero rows)", "checked_rows"),
    ("answer rendering", "calibrate_json"),
    ("log line (logging, JSON formatter)", "logging/__init__"),
    ("log line (logging, JSON formatter)", "serve/observe.py"),
    ("metrics (prometheus_client)", "prometheus_client"),
    ("gate: keys, request id, body read", "serve/gate.py"),
    ("bare route (body read, constant answer)", "calibrate (<string>"),
    ("FastAPI / Starlette routing and middleware", "starlette"),
    ("FastAPI / Starlette routing and middleware", "fastapi"),
    ("HTTP (uvicorn, h11)", "h11"),
    ("HTTP (uvicorn, h11)", "uvicorn"),
    ("asyncio event loop, sockets", "asyncio"),
    ("asyncio event loop, sockets", "selectors"),
]


def split(raw: Path) -> tuple[int, collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        part = "other"
        for frame in reversed(stack.split(";")):
            found = next((p for p, text in PARTS if text in frame), None)
            if found:
                part = found
                break
        counts[part] += int(n)
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("single", "batch100"))
    parser.add_argument("side", choices=("verbcal", "bare"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workload = bench.Workload.recorded(0)
    bodies = workload.bodies(100, 300) if args.kind == "batch100" else workload.bodies(1, 3000)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench.fit_calibrator(Path(tmp))
        port = bench.free_port()
        command = [sys.executable, "-c", "from verbcal.cli import main; main()", "serve"]
        for name, path in paths.items():
            command += ["--calibrator", f"{name}={path}"]
        command += ["--port", str(port), "--rate-limit", "", "--max-items", "1000"]
        env = {**os.environ, "VERBCAL_API_KEYS": bench.KEY}
        try:
            processes.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            bench.wait_ready(port, processes[0])
            if args.side == "bare":
                replies = Path(tmp) / "replies"
                replies.mkdir()
                for kind, some in (("single", workload.bodies(1, 3)), ("batch", bodies[:3])):
                    for body in some:
                        model = json.loads(body)["model"]
                        answer = bench.post(port, "/v1/calibrate", body)
                        (replies / f"{kind}-{model}").write_bytes(answer)
                port = bench.free_port()
                bare = [sys.executable, "-c", bench.BARE_SERVER, str(port), str(replies)]
                processes.append(bench.start(bare, port))
            raw = Path(tmp) / "spy.txt"
            record = [spy, "record", "-p", str(processes[-1].pid), "-d", str(int(args.seconds))]
            record += ["-r", "200", "-f", "raw", "-o", str(raw)]
            recorder = subprocess.Popen(
                record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            url = f"http://127.0.0.1:{port}/v1/calibrate"
            load = asyncio.run(bench.drive(url, bodies, args.seconds + 1, 32))
            recorder.wait(60)
            total, counts = split(raw)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    per_request = 1e6 / load["rps"]
    print(
        f"{args.side} {args.kind}: {load['rps']:.0f} requests/s ({per_request:.0f} µs per request"
        f" if the server's core is saturated), {load['errors']} errors, {total} samples"
    )
    for part, n in counts.most_common():
        print(f"  {n / total:6.1%}  ≈{n / total * per_request:5.0f} µs  {part}")


if __name__ == "__main__":
    main()
