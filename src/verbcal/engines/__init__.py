"""Distributed engines: the calibration (and elicitation) stages on Ray Data and Spark.

The core never imports this package. :mod:`verbcal.engines.arrow` holds the one Arrow
batch step every engine runs (and the local engine); :mod:`verbcal.engines.ray` and
:mod:`verbcal.engines.spark` import their engine lazily (extras ``verbcal[ray]`` and
``verbcal[spark]``) and say which extra to install when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from verbcal.predictions import is_parquet

if TYPE_CHECKING:
    from verbcal.engines.arrow import CalibratorSpec

ENGINES = ("local", "ray", "spark")


def apply(
    engine: str,
    calibrator: CalibratorSpec,
    data: str | Path,
    out: str | Path,
    out_format: str | None = None,
    address: str | None = None,
    master: str | None = None,
    overwrite: bool = True,
) -> int:
    """Calibrate Parquet ``data`` into ``out`` on ``engine``; return the rows written.

    ``address`` is Ray's cluster address (None: start a local one), ``master`` Spark's
    (None: ``local[*]``). Without ``overwrite`` an existing output file, or a folder that
    already holds shards, is refused; with it, old shards are removed first.
    """
    if engine in ENGINES and not is_parquet(data):
        raise ValueError(
            f"{data}: --engine {engine} reads Parquet (a file, a directory or a glob);"
            " use --engine local for JSONL/CSV, or convert the file to Parquet first"
        )
    if engine in ENGINES:
        from verbcal.engines.arrow import prepare_output

        prepare_output(out, out_format, overwrite)
    if engine == "local":
        from verbcal.engines.arrow import apply_local

        return apply_local(calibrator, data, out, out_format)
    if engine == "ray":
        from verbcal.engines.ray import apply_ray

        return apply_ray(calibrator, data, out, out_format, address=address)
    if engine == "spark":
        from verbcal.engines.spark import apply_spark

        return apply_spark(calibrator, data, out, out_format, master=master)
    raise ValueError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "apply"]
