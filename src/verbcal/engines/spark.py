"""Calibration on Spark: the calibrator broadcast once, the rows calibrated in Arrow batches.

Two paths. :func:`calibrate_dataframe` (a Spark DataFrame in, one out) uses ``mapInArrow``.
:func:`apply_spark` (Parquet files in and out, ``verbcal apply --engine spark``) has Spark
schedule the input's pieces (file, row group) as tasks that read, calibrate and write with
pyarrow, so the rows never cross into the JVM and back (see :func:`_apply`).

In both, the fitted calibrator travels as one broadcast variable (sent once to each executor); each
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

from verbcal.calibration import Calibrator
from verbcal.engines.arrow import (
    CalibratorSpec,
    calibrate_piece,
    calibrate_table,
    calibrator_labels,
    check_input,
    count_rows,
    input_error,
    load_calibrator,
    out_kind,
    output_schema,
    parquet_pieces,
    shard_path,
    shipped_calibrator,
    write_ordered,
)
from verbcal.predictions import atomic_folder, parquet_paths

ARROW_BATCH_ROWS = 131_072
"""Rows per Arrow batch that ``apply``'s tasks calibrate at a time."""


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

        fitted = shipped_calibrator(key, lambda: shipped.value)
        for batch in batches:
            yield from calibrate_table(pa.Table.from_batches([batch]), fitted).to_batches()

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
        try:
            return _apply(spark, fitted, paths, out, kind, out_format)
        except Exception as exc:
            raise (input_error(exc) or exc) from None


def _apply(
    spark: Any,
    fitted: Calibrator,
    paths: list[str],
    out: str | Path,
    kind: str,
    out_format: str | None,
) -> int:
    """Spark schedules the pieces (file, row group); each task reads, calibrates and writes.

    The rows never enter the JVM: a task reads its piece with pyarrow, calibrates it batch
    by batch (:func:`calibrate_table`, as the local engine) and writes it with pyarrow, so
    the two Arrow conversions between the JVM and Python and Spark's own writer (three
    quarters of the time on 2 cores, see docs/scale.md) are not paid. Shards go straight
    into ``out``; one ordered file is assembled by the driver from the tasks' pieces, in
    input order (no sort). Workers and driver must see the same paths (as Spark's writer
    needs on a cluster: a shared or object-store file system).
    """
    pieces = list(enumerate(parquet_pieces(paths)))
    context = spark.sparkContext
    shipped = context.broadcast(fitted.to_dict())
    key = uuid.uuid4().hex
    if kind == "dir":
        with atomic_folder(Path(out).resolve()) as folder:
            task = _piece_task(shipped, key, str(folder), out_format or "parquet")
            context.parallelize(pieces, max(1, len(pieces))).mapPartitions(task).sum()
        return count_rows(paths)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".spark-") as temp:
        task = _piece_task(shipped, key, str(Path(temp).resolve()), "parquet")
        context.parallelize(pieces, max(1, len(pieces))).mapPartitions(task).sum()
        written = sorted(Path(temp).glob("part-*.parquet"))
        return write_ordered(_read_pieces(written), out, kind)


def _read_pieces(files: list[Path]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ARROW_BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def _piece_task(shipped: Any, key: str, folder: str, out_format: str) -> Any:
    """The task of one partition: calibrate its pieces, write ``part-<index>.<format>`` each."""

    def run(pieces: Iterator[tuple[int, tuple[str, int]]]) -> Iterator[int]:
        fitted = shipped_calibrator(key, lambda: shipped.value)
        for index, (path, group) in pieces:
            tables = calibrate_piece(path, group, fitted, ARROW_BATCH_ROWS)
            yield write_ordered(tables, shard_path(folder, index, out_format), out_format)

    return run
