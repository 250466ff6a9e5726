"""Throughput of verbcal on the engines it scales out on, one run, ratios against local.

Apply: ROWS Parquet rows (default 10,000,000; K = 4, the 0.05-grid data of
``bench_calibrate.make_data``, a ``probs`` struct and an int ``row`` column passed through,
in 10 files) calibrated by a temperature calibrator into a directory of Parquet shards with

* the local engine (``verbcal.engines.apply("local", ...)``: pyarrow, one process);
* Ray on a local cluster of 2 CPUs (``ray.init(num_cpus=2)``);
* Spark ``local[2]``.

Cluster and session start-up is timed apart and left out of rows/s, and verbcal's engine
modules are imported before any timing; the timed span is the ``apply`` call (read,
calibrate, write; for Ray and Spark also their workers' first imports and task start-up).
The reference is the local engine in the same run.

Elicit: ITEMS (default 2,000) items through ``elicit --engine ray`` (2 actors, total
concurrency 32) against a local aiohttp server (its own process) answering every chat
completion after 50 ms. Ideal = 32 / 0.05 s = 640 requests/s. The timed span is the whole
``elicit_ray`` call after ``ray.init``: actor start-up, batches, part files, the output file.
Actor start-up (until every actor has its engine built) is also reported apart, with the
ratio to ideal of the time after it. ``--http lean|sdk`` picks the elicit HTTP path.

Usage: python benchmarks/bench_scale.py [--json] [--rows N] [--items N] [--http sdk|lean]
    [--batch-size N] [--skip-apply] [--skip-elicit]
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibrate import make_data
from bench_elicit import LATENCY, serve

LABELS = ("a", "b", "c", "d")
CONCURRENCY = 32
ACTORS = 2


def write_input(folder: Path, rows: int, files: int = 10) -> None:
    """``rows`` gridded rows in ``files`` Parquet files (generated a file at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    per_file = -(-rows // files)
    for index in range(files):
        n = min(per_file, rows - index * per_file)
        p, _ = make_data(n, seed=index)
        probs = pa.StructArray.from_arrays([pa.array(p[:, k]) for k in range(4)], list(LABELS))
        start = index * per_file
        table = pa.table({"row": np.arange(start, start + n), "probs": probs})
        pq.write_table(table, folder / f"part-{index:02d}.parquet")


def fit_calibrator(path: Path) -> None:
    from verbcal.calibration import make_calibrator

    p, y = make_data(200_000, seed=99)
    make_calibrator("temperature").fit(p, y, labels=LABELS).save(path)


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def bench_apply(rows: int, tmp: Path) -> dict[str, Any]:
    for engine in ("arrow", "ray", "spark"):  # imported up front: import time is not throughput
        importlib.import_module(f"verbcal.engines.{engine}")
    from verbcal.engines import apply

    data, calibrator = tmp / "in", tmp / "ts.json"
    write_input(data, rows)
    fit_calibrator(calibrator)
    seconds: dict[str, float] = {}
    seconds["local"] = timed(lambda: apply("local", calibrator, data, tmp / "local", "parquet"))
    import ray

    startup = {
        "ray": timed(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False))
    }
    seconds["ray"] = timed(lambda: apply("ray", calibrator, data, tmp / "ray", "parquet"))
    ray.shutdown()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
    )
    spark: Any = None

    def start_spark() -> None:
        nonlocal spark
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")

    startup["spark"] = timed(start_spark)
    seconds["spark"] = timed(lambda: apply("spark", calibrator, data, tmp / "spark", "parquet"))
    spark.stop()
    rate = {engine: rows / s for engine, s in seconds.items()}
    return {
        "rows": rows,
        "rows_per_s": {k: round(v) for k, v in rate.items()},
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "startup_seconds": {k: round(v, 2) for k, v in startup.items()},
        "ratio_to_local": {k: round(rate[k] / rate["local"], 3) for k in ("ray", "spark")},
    }


def bench_elicit(
    n_items: int, tmp: Path, batch_size: int = 100, http: str = "sdk"
) -> dict[str, Any]:
    import aiohttp  # noqa: F401  (imported up front: import time is not throughput)
    import openai  # noqa: F401
    import ray

    from verbcal.elicit import ElicitOptions
    from verbcal.engines.ray_elicit import elicit_ray
    from verbcal.task import Task

    task = Task("bench", ("positive", "negative"), {}, "Classify the sentiment of the review.")
    items = [{"id": f"i{n}", "text": f"review number {n}", "label": None} for n in range(n_items)]
    queue: Any = mp.Queue()
    server = mp.Process(target=serve, args=(queue, LATENCY), daemon=True)
    server.start()
    key = "sk-bench-not-a-real-key"
    os.environ.setdefault("OPENAI_API_KEY", key)
    try:
        port = queue.get(timeout=30)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        opts = ElicitOptions(
            backend="openai",
            model="bench",
            base_url=f"http://127.0.0.1:{port}/v1",
            concurrency=CONCURRENCY,
            http=http,
        )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        result = elicit_ray(
            task,
            items,
            tmp / "out.jsonl",
            opts,
            actors=ACTORS,
            batch_size=batch_size,
            progress=False,
            timings=timings,
        )
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        server.kill()
        server.join(5)
    assert result.stats.requests == n_items and result.status_counts["ok"] == n_items
    rate = n_items / seconds
    steady = n_items / (seconds - timings["startup"])
    return {
        "items": n_items,
        "ray_elicit_batch_size": batch_size,
        "ray_elicit_http": http,
        "ray_elicit_requests_per_s": round(rate, 1),
        "ray_elicit_ideal_per_s": round(CONCURRENCY / LATENCY),
        "ray_elicit_ratio_to_ideal": round(rate / (CONCURRENCY / LATENCY), 3),
        "ray_elicit_seconds": round(seconds, 2),
        "ray_elicit_actor_startup_seconds": round(timings["startup"], 2),
        "ray_elicit_ratio_to_ideal_after_startup": round(steady / (CONCURRENCY / LATENCY), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100, help="items per Ray elicit batch")
    parser.add_argument("--http", default="sdk", help="elicit's HTTP path: sdk or lean")
    parser.add_argument("--skip-apply", action="store_true")
    parser.add_argument("--skip-elicit", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    numbers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        if not args.skip_apply:
            numbers.update(bench_apply(args.rows, Path(tmp) / "apply"))
        if not args.skip_elicit:
            (Path(tmp) / "elicit").mkdir()
            numbers.update(
                bench_elicit(args.items, Path(tmp) / "elicit", args.batch_size, args.http)
            )
    numbers["load_average_1min"] = round(os.getloadavg()[0], 2)
    numbers["cores"] = os.cpu_count()
    if args.json:
        print(json.dumps(numbers))
        return
    if "rows" in numbers:
        print(f"apply: {numbers['rows']:,} Parquet rows, K = 4, into Parquet shards")
        for engine, rate in numbers["rows_per_s"].items():
            ratio = numbers["ratio_to_local"].get(engine, 1.0)
            start = numbers["startup_seconds"].get(engine)
            extra = f" (+{start} s cluster start, not counted)" if start is not None else ""
            print(f"  {engine:>5}: {rate:>12,} rows/s  ratio to local {ratio:.3f}{extra}")
        print(
            "  goal: Ray and Spark >= 0.5 of local on 2 cores (their overhead buys many machines)"
        )
    if "items" in numbers:
        print(
            f"elicit --engine ray: {numbers['items']} items, {ACTORS} actors, total concurrency"
            f" {CONCURRENCY}, server latency {LATENCY * 1000:.0f} ms:"
            f" {numbers['ray_elicit_requests_per_s']} requests/s of an ideal"
            f" {numbers['ray_elicit_ideal_per_s']} ="
            f" {numbers['ray_elicit_ratio_to_ideal']} (goal >= 0.8; actor start-up included);"
            f" actors started in {numbers['ray_elicit_actor_startup_seconds']} s, ratio after"
            f" start-up {numbers['ray_elicit_ratio_to_ideal_after_startup']}"
        )
    print(
        f"machine: {numbers['cores']} cores, 1-min load average {numbers['load_average_1min']}"
        " at the end (shared with other work: ratios, not absolute rates, carry over)"
    )


if __name__ == "__main__":
    main()
