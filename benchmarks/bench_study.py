"""Time of the default ``verbcal study`` grid: an older verbcal against this one, in one run.

Both versions run the same grid (default: the default grid, 3 datasets x 21 variants x 4
sizes x 50 repeats = 550 splits, 2 workers) in fresh subprocesses, one after the other.
The old version is the ``src`` tree of a git revision (``--old``, default ``fc880d8``: main
with the evaluation core, before the study speed-ups; its numbers are those of the
speed-ups bit for bit), exported with ``git archive`` into a temporary folder, or a saved
copy of a ``src`` folder (``--old-src``). A revision whose numbers differ for other reasons
(a fixed metric, say) makes the row check fail, as it should.

For each version it reports the wall time and the CPU time (user + system of the process
and its worker processes): on a shared machine the wall time depends on the load, the
CPU time much less. It also checks that both versions give the same numbers: the SHA-256
of every tidy row and every threshold row, written with ``repr`` of each float (bit-exact).

Usage: python benchmarks/bench_study.py [--repeats R] [--workers W] [--datasets a,b] [--old REV | --old-src DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OLD = "fc880d8"

RUNNER = r"""
import hashlib, json, resource, sys, time
from verbcal.study import StudyConfig, run_study

repeats, workers, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
config = StudyConfig() if repeats <= 0 else StudyConfig(repeats=repeats)
if names:
    config.datasets = {n: config.datasets[n] for n in names.split(",")}
start = time.perf_counter()
result = run_study(config, workers=workers)
wall = time.perf_counter() - start
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

def digest(rows):
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(row)).encode())
    return h.hexdigest()

print(json.dumps({
    "wall_s": wall, "cpu_s": cpu, "splits": sum(len(i.sizes) for i in result.info.values()) * config.repeats,
    "tidy_rows": len(result.rows), "tidy_sha256": digest(result.rows),
    "threshold_rows": len(result.thresholds), "thresholds_sha256": digest(result.thresholds),
}))
"""


def export_revision(revision: str, target: Path) -> Path:
    """``src`` of a git revision of this repository, extracted under ``target``."""
    archive = target / "src.tar"
    with archive.open("wb") as handle:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"],
            check=True,
            stdout=handle,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def run_version(src: Path, repeats: int, workers: int, datasets: str = "") -> dict[str, Any]:
    """One grid in a fresh interpreter importing verbcal from ``src``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(repeats), str(workers), datasets],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the study run from {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=0, help="0: the default grid's 50")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--old", default=DEFAULT_OLD, help="git revision of the old version")
    parser.add_argument("--old-src", type=Path, help="a saved src folder of the old version")
    parser.add_argument(
        "--datasets",
        default="",
        help="comma-separated names of the default grid's datasets (default: all of them)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        old_src = args.old_src or export_revision(args.old, Path(tmp))
        old = run_version(old_src, args.repeats, args.workers, args.datasets)
        new = run_version(ROOT / "src", args.repeats, args.workers, args.datasets)
    same = all(old[k] == new[k] for k in ("tidy_sha256", "thresholds_sha256"))
    report = {
        "old": {**old, "source": str(args.old_src or args.old)},
        "new": new,
        "workers": args.workers,
        "identical_rows": same,
        "speedup_wall": old["wall_s"] / new["wall_s"],
        "speedup_cpu": old["cpu_s"] / new["cpu_s"],
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"study grid: {new['splits']} splits, {args.workers} workers, {os.cpu_count()} cores")
        for name in ("old", "new"):
            r = report[name]
            print(
                f"  {name}: {r['wall_s']:7.1f} s wall  {r['cpu_s']:7.1f} s CPU  ({r['tidy_rows']} tidy rows)"
            )
        print(
            f"  speed-up: {report['speedup_wall']:.2f}x wall, {report['speedup_cpu']:.2f}x CPU; "
            f"rows {'bit-identical' if same else 'DIFFER'}"
        )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
