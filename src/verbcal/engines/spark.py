"""Calibration on Spark: ``mapInArrow`` over Arrow batches, the calibrator broadcast once.

The fitted calibrator travels as one broadcast variable (sent once to each executor); each
Python worker rebuilds it once and calibrates every Arrow batch of its partitions with
:func:`verbcal.engines.arrow.calibrate_table`, the same step as the local engine.
``mapInArrow`` is the Arrow-batch form of ``mapInPandas``: it hands the batches over as
Arrow record batches, so struct and map columns arrive without a detour through pandas.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verbcal.calibrate import Calibrator
from verbcal.engines.arrow import (
    CalibratorSpec,
    calibrate_table,
    calibrator_labels,
    check_input,
    count_rows,
    input_error,
    load_calibrator,
    out_kind,
    output_schema,
)
from verbcal.predictions import parquet_paths

_FILE, _ROW = "_verbcal_file", "_verbcal_row"
"""Input position columns, for output in input order (dropped before writing)."""

ARROW_BATCH_ROWS = 131_072
"""Rows per Arrow batch for ``apply`` (Spark's default, 10,000, pays the per-batch cost 13 times as often)."""

_CALIBRATORS: dict[str, Calibrator] = {}
"""Calibrators rebuilt in this Python worker, by a key per broadcast (once per worker process)."""


def require_spark() -> Any:
    """Import pyspark, or say which extra installs it."""
    try:
        import pyspark.sql
    except ImportError as exc:
        raise ImportError(
            "the Spark engine needs PySpark 4 and Java 17+: pip install 'verbcal[spark]'"
        ) from exc
    return pyspark.sql


@contextmanager
def spark_session(master: str | None = None) -> Iterator[Any]:
    """The active Spark session, or a new one on ``master`` (default ``local[*]``), stopped on exit."""
    sql = require_spark()
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = sql.SparkSession.builder.master(master or "local[*]").appName("verbcal")
    if (master or "local").startswith("local"):  # workers run this very Python
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = builder.config("spark.ui.enabled", "false").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def calibrate_dataframe(frame: Any, calibrator: CalibratorSpec) -> Any:
    """A Spark DataFrame with calibrated probabilities, ``top_label`` and ``confidence``.

    Columns and layouts as in :mod:`verbcal.engines.arrow`; rows keep their partitions.
    """
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    fitted = load_calibrator(calibrator)
    schema = output_schema(to_arrow_schema(frame.schema), calibrator_labels(fitted))
    shipped = frame.sparkSession.sparkContext.broadcast(fitted.to_dict())
    key = uuid.uuid4().hex

    def calibrate(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        if key not in _CALIBRATORS:
            _CALIBRATORS[key] = Calibrator.from_dict(shipped.value)
        for batch in batches:
            yield from calibrate_table(
                pa.Table.from_batches([batch]), _CALIBRATORS[key]
            ).to_batches()

    return frame.mapInArrow(calibrate, from_arrow_schema(schema))


def apply_spark(
    calibrator: CalibratorSpec,
    data: str | Path,
    out: str | Path,
    out_format: str | None = None,
    master: str | None = None,
) -> int:
    """Calibrate Parquet ``data`` on Spark; one file in input order, or shards in a directory."""
    kind = out_kind(out, out_format)
    fitted = load_calibrator(calibrator)
    paths = [str(path) for path in parquet_paths(data)]
    check_input(paths, fitted)
    with spark_session(master) as spark:
        batch = "spark.sql.execution.arrow.maxRecordsPerBatch"
        was = spark.conf.get(batch)
        spark.conf.set(batch, str(ARROW_BATCH_ROWS))
        try:
            return _apply(spark, fitted, paths, out, kind, out_format)
        except Exception as exc:
            raise (input_error(exc) or exc) from None
        finally:
            spark.conf.set(batch, was)


def _apply(
    spark: Any,
    fitted: Calibrator,
    paths: list[str],
    out: str | Path,
    kind: str,
    out_format: str | None,
) -> int:
    from pyspark.sql import functions as F

    frame = spark.read.parquet(*paths)
    if kind == "dir":
        _write(calibrate_dataframe(frame, fitted), str(out), out_format or "parquet")
        return count_rows(paths)
    # input order: files in name order (as parquet_paths lists them), rows in file order
    frame = frame.select(
        "*",
        F.col("_metadata.file_path").alias(_FILE),
        F.col("_metadata.row_index").alias(_ROW),
    )
    ordered = calibrate_dataframe(frame, fitted).orderBy(_FILE, _ROW).drop(_FILE, _ROW)
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".spark-") as temp:
        _write(ordered.coalesce(1), temp + "/out", kind)
        (part,) = Path(temp, "out").glob("part-*")
        os.replace(part, out)
    return count_rows(paths)


def _write(frame: Any, where: str, out_format: str) -> None:
    writer = frame.write.mode("overwrite")
    if out_format == "parquet":
        writer.parquet(where)
    else:
        writer.option("ignoreNullFields", "false").json(where)
