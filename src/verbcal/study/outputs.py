"""The files ``verbcal study`` writes: tidy and summary tables, thresholds, well-formedness,
plots and ``findings.md``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verbcal.jsonio import json_ready
from verbcal.study.grid import StudyResult, cross_fit
from verbcal.study.rows import THRESHOLD_COLUMNS, TIDY_COLUMNS
from verbcal.study.summary import summarise


def write_outputs(result: StudyResult, out: Path) -> dict[str, Path]:
    """Tidy and summary tables, thresholds, well-formedness, plots and findings.md in ``out``."""
    from verbcal.study.report import (
        findings_markdown,
        reliability_methods,
        reliability_size,
        write_plots,
    )

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    tidy = out / "tidy.csv"
    _write_csv(tidy, TIDY_COLUMNS, result.rows)
    files["tidy"] = tidy
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: list[Sequence[Any]] = (
            [list(c) for c in zip(*result.rows, strict=True)] if result.rows else [[]] * 6
        )
        pq.write_table(
            pa.table(dict(zip(TIDY_COLUMNS, columns, strict=True))), out / "tidy.parquet"
        )
        files["parquet"] = out / "tidy.parquet"
    except ImportError:
        pass
    rows = summarise(result.rows)
    keys = ("dataset", "method", "size", "metric", "mean", "lo", "hi", "n")
    _write_csv(out / "summary.csv", keys, [tuple(r[k] for k in keys) for r in rows])
    (out / "summary.json").write_text(json.dumps(json_ready(rows), indent=1) + "\n", "utf-8")
    files["summary"] = out / "summary.csv"
    _write_csv(out / "thresholds.csv", THRESHOLD_COLUMNS, result.thresholds)
    files["thresholds"] = out / "thresholds.csv"
    wellformed = {name: i.wellformed for name, i in result.info.items()}
    (out / "wellformedness.json").write_text(json.dumps(wellformed, indent=1) + "\n", "utf-8")
    files["wellformedness"] = out / "wellformedness.json"
    meta = {
        "config": result.config.to_dict(),
        "sizes": {name: i.sizes for name, i in result.info.items()},
        "notes": {name: i.notes for name, i in result.info.items()},
        "interval": "2.5th and 97.5th percentiles of the per-repeat values",
    }
    (out / "study.json").write_text(json.dumps(meta, indent=1) + "\n", "utf-8")
    index = {(r["dataset"], r["method"], r["size"], r["metric"]): r for r in rows}
    cross_fitted = {
        name: cross_fit(
            result,
            name,
            reliability_methods(result, index, name),
            reliability_size(result, name),
        )
        for name in result.info
    }
    files.update(write_plots(result, rows, out, cross_fitted))
    (out / "findings.md").write_text(findings_markdown(result, rows, out), "utf-8")
    files["findings"] = out / "findings.md"
    return files


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
