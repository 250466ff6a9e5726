"""LLM judges: raw vs calibrated, numbers and words, on the bundled judge sets.

For each bundled judge set (``recorded:mt-quality``, ``recorded:halueval``) and each reply
(``probs``: the numbers; ``verbal``: the phrase read through the bundled lexicon), every
method is fitted on a stratified half (n // 2) and scored on the other half, over R seeded
splits (:func:`verbcal.compare.compare`). Per method: the mean over the splits of top-label
ECE (verbcal's default 15 equal-width bins) and NLL, with the 2.5 and 97.5 percentiles over the splits; and,
against ``uncalibrated``, the mean paired difference with its 95 % percentile interval over
the splits and the share of splits where the method is better. ``auto`` gets ``words`` among
its candidates on words (as the CLI does for ``--source verbal``).

    python benchmarks/bench_judges.py [--repeats 50] [--auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from verbcal import datasets
from verbcal.calibration import VERBAL_CANDIDATES
from verbcal.compare import compare
from verbcal.predictions import ReadOptions, reading

METHODS = {
    "probs": ("uncalibrated", "temperature", "platt"),
    "verbal": ("uncalibrated", "words", "temperature"),
}
"""What is scored per reply (``--auto`` adds ``auto``, slower: cross-validation in every split)."""


def run(name: str, source: str, repeats: int, seed: int = 0, auto: bool = False) -> dict[str, Any]:
    """Scores of every method of ``source`` on ``recorded:<name>``."""
    with reading(ReadOptions(source=source)):
        preds = datasets.load(f"recorded:{name}").labelled()
    options = {"auto": {"candidates": list(VERBAL_CANDIDATES)}} if source == "verbal" else None
    methods = (*METHODS[source], "auto") if auto else METHODS[source]
    results = compare(
        preds.probs,
        preds.y,
        preds.labels,
        methods,
        calib=len(preds) // 2,
        repeats=repeats,
        seed=seed,
        options=options,
    )
    by = {
        m: {
            metric: np.array([r.metrics[metric] for r in results if r.method == m])
            for metric in ("ece", "nll")
        }
        for m in methods
    }
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for metric in ("ece", "nll"):
            values = by[m][metric]
            diff = values - by["uncalibrated"][metric]
            row[metric] = float(values.mean())
            row[f"{metric}_interval"] = [float(np.percentile(values, q)) for q in (2.5, 97.5)]
            row[f"{metric}_diff"] = float(diff.mean())
            row[f"{metric}_diff_interval"] = [float(np.percentile(diff, q)) for q in (2.5, 97.5)]
            row[f"{metric}_better_share"] = float(np.mean(diff < 0))
        rows.append(row)
    return {
        "set": name,
        "source": source,
        "n": len(preds),
        "calib": len(preds) // 2,
        "repeats": repeats,
        "rows": rows,
    }


def markdown(tables: list[dict[str, Any]]) -> str:
    """One table: set, reply, method, ECE and NLL with intervals, paired gains."""
    lines = [
        "| set | reply | method | ECE [2.5, 97.5 %] | NLL [2.5, 97.5 %] | ΔNLL vs raw [95 %] | splits better (NLL) |",
        "|---|---|---|---|---|---|---|",
    ]
    for table in tables:
        for row in table["rows"]:
            e, n = row["ece_interval"], row["nll_interval"]
            d = row["nll_diff_interval"]
            delta = (
                "—"
                if row["method"] == "uncalibrated"
                else f"{row['nll_diff']:+.3f} [{d[0]:+.3f}, {d[1]:+.3f}]"
            )
            better = "—" if row["method"] == "uncalibrated" else f"{row['nll_better_share']:.0%}"
            lines.append(
                f"| {table['set']} | {table['source']} | {row['method']} | "
                f"{row['ece']:.3f} [{e[0]:.3f}, {e[1]:.3f}] | {row['nll']:.3f} [{n[0]:.3f}, {n[1]:.3f}] | "
                f"{delta} | {better} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", help="write the tables as JSON to this file")
    parser.add_argument("--auto", action="store_true", help="score auto too (slower)")
    args = parser.parse_args(argv)
    tables = []
    for name in datasets.JUDGES:
        for source in ("probs", "verbal"):
            tables.append(run(name, source, args.repeats, auto=args.auto))
            print(markdown(tables[-1:]), file=sys.stderr, flush=True)
    print(markdown(tables))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(tables, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
