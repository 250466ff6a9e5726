"""The one calibration step every engine runs: an Arrow table in, the same table calibrated out.

Input layouts (found from the schema): a ``probs`` struct ``{label: p}``, a ``probs``
``map<string, double>``, or one ``p_<label>`` column per class. Output: every input column,
the probabilities replaced by the calibrated ones in the same place (a map becomes a struct),
the input kept as ``verbalized_probs`` (or ``verbalized_p_<label>``), and ``top_label`` and
``confidence`` added. A row whose distribution is null stays null (it was not answered).
An applied table (``verbalized_`` columns beside the calibrated ones) is calibrated from
its ``verbalized_`` columns, so applying twice gives the same table as applying once.

The local engine (:func:`apply_local`) streams Parquet files batch by batch through
:func:`calibrate_table`; the Ray and Spark engines call the same function on their batches,
so the three agree to the last bit.
"""

from __future__ import annotations

import contextlib
import json
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration import Calibrator
from verbcal.predictions import (
    PARQUET_SUFFIXES,
    PROB_PREFIX,
    PROBS_COLUMN,
    PredictionsError,
    atomic_folder,
    atomic_output,
    check_output,
    check_unique_ids,
    parquet_paths,
    require_pyarrow,
)

VERBALIZED = "verbalized_"
TOP_LABEL = "top_label"
CONFIDENCE = "confidence"
ID_COLUMN = "id"
OUT_FORMATS = ("parquet", "jsonl")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

CalibratorSpec = Calibrator | str | Path | dict[str, Any]


def load_calibrator(spec: CalibratorSpec) -> Calibrator:
    """A fitted calibrator from itself, a file written by ``verbcal fit``, or its dict."""
    if isinstance(spec, Calibrator):
        return spec
    if isinstance(spec, dict):
        return Calibrator.from_dict(spec)
    return Calibrator.load(spec)


_SHIPPED: dict[str, Calibrator] = {}
"""Calibrators rebuilt in this (worker) process, by the key they were shipped under."""


def shipped_calibrator(key: str, fetch: Callable[[], dict[str, Any]]) -> Calibrator:
    """The calibrator shipped under ``key`` (a broadcast, an object reference), rebuilt from
    ``fetch()`` once per worker process and reused by every later task and batch."""
    if key not in _SHIPPED:
        _SHIPPED[key] = Calibrator.from_dict(fetch())
    return _SHIPPED[key]


def calibrator_labels(calibrator: Calibrator) -> tuple[str, ...]:
    """The label order of a fitted calibrator (its columns)."""
    labels = tuple(calibrator.labels or ())
    if not labels:
        raise PredictionsError(
            "<calibrator>",
            None,
            "labels",
            "the calibrator has no label names",
            "Fit it with labels (verbcal fit does) so columns can be matched by name",
        )
    return labels


@dataclass(frozen=True)
class Layout:
    """Where a table keeps its distributions: a ``probs`` struct or map, or ``p_<label>`` columns."""

    kind: Literal["struct", "map", "columns"]
    labels: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns that hold the distribution."""
        if self.kind == "columns":
            return tuple(PROB_PREFIX + label for label in self.labels)
        return (PROBS_COLUMN,)


def find_layout(schema: Any, labels: tuple[str, ...]) -> Layout:
    """The layout of ``schema``, checked against the calibrator's ``labels``."""
    pa = require_pyarrow()
    names = schema.names
    if PROBS_COLUMN in names:
        kind = schema.field(PROBS_COLUMN).type
        if pa.types.is_struct(kind):
            found = [kind.field(i).name for i in range(kind.num_fields)]
            _check_labels(found, labels, "probs.")
            return Layout("struct", labels)
        if pa.types.is_map(kind):
            return Layout("map", labels)
        raise PredictionsError(
            "<table>",
            None,
            PROBS_COLUMN,
            f"'probs' has type {kind}, not a struct or a map",
            "Store probs as a struct {label: p} or a map<string, double>",
        )
    found = [name[len(PROB_PREFIX) :] for name in names if name.startswith(PROB_PREFIX)]
    if not found:
        raise PredictionsError(
            "<table>",
            None,
            None,
            "no 'probs' column and no p_<label> columns",
            "Store the distribution as a 'probs' struct, or one column p_<label> per class",
        )
    _check_labels(found, labels, PROB_PREFIX)
    return Layout("columns", labels)


def _check_labels(found: list[str], labels: tuple[str, ...], prefix: str) -> None:
    missing = [label for label in labels if label not in found]
    unknown = [label for label in found if label not in labels]
    if missing or unknown:
        field = prefix + (missing or unknown)[0]
        problem = (
            f"label {missing[0]!r} is missing"
            if missing
            else f"unknown label {unknown[0]!r} (the calibrator's labels are {list(labels)})"
        )
        raise PredictionsError(
            "<table>", None, field, problem, "Use the label set the calibrator was fitted on"
        )


def _input_names(names: list[str]) -> dict[str, str] | None:
    """For an applied table (``verbalized_X`` beside every calibrated ``X``): the input
    column by each name of the original table; None for a table never applied."""
    originals = [n[len(VERBALIZED) :] for n in names if n.startswith(VERBALIZED)]
    holds_probs = any(n == PROBS_COLUMN or n.startswith(PROB_PREFIX) for n in originals)
    if not holds_probs or not all(name in names for name in originals):
        return None
    out = {}
    for name in names:
        if name.startswith(VERBALIZED):
            out[name[len(VERBALIZED) :]] = name
        elif name not in originals and name not in (TOP_LABEL, CONFIDENCE):
            out[name] = name
    return out


def verbalized_schema(schema: Any) -> Any:
    """The schema of the table that was applied, for an applied ``schema`` (else itself):
    ``verbalized_X`` back in ``X``'s place, the calibrated columns dropped."""
    pa = require_pyarrow()
    names = _input_names(schema.names)
    if names is None:
        return schema
    return pa.schema([pa.field(name, schema.field(src).type) for name, src in names.items()])


def verbalized_table(table: Any) -> Any:
    """The table that was applied, for an applied ``table`` (else itself): where a row
    carries ``verbalized_probs`` (or ``verbalized_p_<label>``), those are the input, so
    applying twice gives the same table as applying once."""
    pa = require_pyarrow()
    names = _input_names(table.column_names)
    if names is None:
        return table
    schema = verbalized_schema(table.schema)
    return pa.Table.from_arrays([table.column(src) for src in names.values()], schema=schema)


def output_schema(schema: Any, labels: tuple[str, ...]) -> Any:
    """The schema :func:`calibrate_table` returns for input ``schema`` (Spark needs it first)."""
    pa = require_pyarrow()
    schema = verbalized_schema(schema)
    layout = find_layout(schema, labels)
    calibrated = pa.struct([(label, pa.float64()) for label in labels])
    fields = []
    for field in schema:
        if field.name in layout.columns:
            fields.append(pa.field(VERBALIZED + field.name, field.type))
            if layout.kind != "columns":
                fields.append(pa.field(PROBS_COLUMN, calibrated))
            else:
                fields.append(pa.field(field.name, pa.float64()))
        elif field.name not in (TOP_LABEL, CONFIDENCE):
            _check_free(field.name)
            fields.append(field)
    fields += [pa.field(TOP_LABEL, pa.string()), pa.field(CONFIDENCE, pa.float64())]
    return pa.schema(fields)


def _check_free(name: str) -> None:
    if name.startswith(VERBALIZED):
        raise PredictionsError(
            "<table>",
            None,
            name,
            "the input already has a verbalized_ column: it looks calibrated already",
            "Apply the calibrator to the verbalized distributions, not to calibrated output",
        )


def calibrate_table(table: Any, calibrator: Calibrator) -> Any:
    """``table`` with calibrated probabilities, ``top_label`` and ``confidence`` (see module doc)."""
    pa = require_pyarrow()
    labels = calibrator_labels(calibrator)
    table = verbalized_table(table)
    schema = output_schema(table.schema, labels)
    layout = find_layout(table.schema, labels)
    matrix, usable = _matrix(table, layout)
    _check_values(table, layout, matrix, usable)
    q = np.full_like(matrix, np.nan)
    if usable.any():
        q[usable] = calibrator.predict_proba(matrix[usable])
    mask = ~usable
    top = np.argmax(np.where(usable[:, None], q, 0.0), axis=1)
    columns: dict[str, Any] = {}
    for name in table.column_names:
        if name in layout.columns:
            columns[VERBALIZED + name] = table.column(name)
    calibrated = [pa.array(q[:, k], pa.float64(), mask=mask) for k in range(len(labels))]
    if layout.kind == "columns":
        columns.update(zip(layout.columns, calibrated, strict=True))
    else:
        columns[PROBS_COLUMN] = pa.StructArray.from_arrays(calibrated, labels, mask=pa.array(mask))
    columns[TOP_LABEL] = pa.array(np.asarray(labels, dtype=object)[top], pa.string(), mask=mask)
    columns[CONFIDENCE] = pa.array(q.max(axis=1, initial=-np.inf), pa.float64(), mask=mask)
    arrays = [
        columns[field.name] if field.name in columns else table.column(field.name)
        for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _matrix(table: Any, layout: Layout) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The (n, K) input in label order (NaN where absent) and which rows carry a distribution."""
    n, k = table.num_rows, len(layout.labels)
    if layout.kind == "columns":
        cols = [table.column(name) for name in layout.columns]
        matrix = np.column_stack([_floats(col) for col in cols]) if n else np.empty((0, k))
        present = np.asarray((~np.isnan(matrix)).any(axis=1), dtype=bool)
        return matrix, present
    column = table.column(PROBS_COLUMN).combine_chunks()
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if layout.kind == "struct":
        matrix = np.column_stack([_floats(column.field(label)) for label in layout.labels])
        return matrix.reshape(n, k), valid
    matrix = np.full((n, k), np.nan)
    offsets = np.asarray(column.offsets, dtype=np.int64)  # into the unsliced children
    first, last = int(offsets[0]), int(offsets[-1])
    rows = np.repeat(np.arange(n), np.diff(offsets))
    keys = np.asarray(column.keys[first:last].to_numpy(zero_copy_only=False), dtype=object)
    values = _floats(column.items[first:last])
    for index, label in enumerate(layout.labels):
        hit = keys == label
        matrix[rows[hit], index] = values[hit]
    known = np.isin(keys, np.asarray(layout.labels, dtype=object))
    if not known.all():
        first = int(np.flatnonzero(~known)[0])
        _raise(table, int(rows[first]), f"probs.{keys[first]}", f"unknown label {keys[first]!r}")
    return matrix, valid


def _floats(column: Any) -> NDArray[np.float64]:
    """A numeric Arrow column as float64 with NaN for nulls."""
    pa = require_pyarrow()
    cast = column.cast(pa.float64())
    return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)


def _check_values(
    table: Any, layout: Layout, matrix: NDArray[np.float64], usable: NDArray[np.bool_]
) -> None:
    """Raise on the first bad value of a usable row, naming its row, id and field."""
    rows = matrix[usable]
    where = np.flatnonzero(usable)
    checks = (
        (np.isnan(rows), "is missing", "Give every label a probability (0 is allowed)"),
        (np.isinf(rows), "is not finite", "Write a number in [0, 1]"),
        (rows < 0, "is negative", "Write a number in [0, 1]"),
    )
    for bad, problem, fix in checks:
        if bad.any():
            row, col = np.argwhere(bad)[0]
            field = (
                layout.columns[col] if layout.kind == "columns" else f"probs.{layout.labels[col]}"
            )
            _raise(table, int(where[row]), field, f"the value {problem}", fix)
    with np.errstate(over="ignore"):
        sums = rows.sum(axis=1)
    over = ~np.isfinite(sums)
    if over.any():
        _raise(
            table,
            int(where[np.flatnonzero(over)[0]]),
            PROBS_COLUMN,
            "the probabilities sum past the largest float (overflow)",
            "Write probabilities in [0, 1]",
        )
    zero = sums <= 0
    if zero.any():
        _raise(
            table,
            int(where[np.flatnonzero(zero)[0]]),
            PROBS_COLUMN,
            "every probability is 0",
            "Drop the row or set its distribution to null",
        )


def _raise(table: Any, row: int, field: str, problem: str, fix: str = "Fix the row") -> None:
    """Raise for row ``row`` of this batch, named by its id where the table has one.

    The error carries ``batch_row`` (from 0) so that a caller that knows the file and the
    batch's first row can name them (:func:`_in_file`)."""
    if ID_COLUMN in table.column_names:
        item = table.column(ID_COLUMN)[row].as_py()
        error = PredictionsError(f"item id {item!r}", None, field, problem, fix)
    else:
        error = PredictionsError("<batch>", row + 1, field, problem, fix, "row")
    error.batch_row = row  # type: ignore[attr-defined]
    raise error


def _in_file(exc: PredictionsError, path: str | Path, first_row: int) -> PredictionsError:
    """``exc`` (raised by :func:`_raise`) naming the file and the row in it (from 1)."""
    row = getattr(exc, "batch_row", None)
    if row is None:
        return exc
    where = f"{path}, row {first_row + row + 1}"
    if exc.path.startswith("item id "):
        where += f" ({exc.path})"
    return PredictionsError(where, None, exc.field, exc.problem, exc.fix)


def calibrated_batches(
    spec: str | Path, calibrator: Calibrator, batch_rows: int = 262_144
) -> Iterator[Any]:
    """Every Parquet file of ``spec`` calibrated batch by batch, in file and row order;
    an error names the file and the row in it (from 1)."""
    pa = require_pyarrow()
    for path in parquet_paths(spec):
        first = 0
        for batch in pa.parquet.ParquetFile(path).iter_batches(batch_size=batch_rows):
            try:
                yield calibrate_table(pa.Table.from_batches([batch]), calibrator)
            except PredictionsError as exc:
                raise _in_file(exc, path, first) from None
            first += batch.num_rows


_INPUT_ERROR = re.compile(r"verbcal\.predictions\.PredictionsError: (.+)")


def input_error(exc: BaseException) -> ValueError | None:
    """The verbcal input error a distributed task failed with (engines wrap it), if any."""
    found = _INPUT_ERROR.findall("".join(traceback.format_exception(exc)))
    return ValueError(found[-1]) if found else None


def check_input(paths: Iterable[str | Path], calibrator: Calibrator) -> None:
    """Fail before any engine starts when the first file's schema cannot be calibrated,
    or when an id repeats anywhere in the input
    (:func:`~verbcal.predictions.check_unique_ids`)."""
    pa = require_pyarrow()
    paths = list(paths)
    first = paths[0]
    try:
        output_schema(pa.parquet.read_schema(first), calibrator_labels(calibrator))
    except PredictionsError as exc:
        raise PredictionsError(first, None, exc.field, exc.problem, exc.fix) from None
    check_unique_ids(paths)


# ------------------------------------------------------------------------------- output


def out_kind(out: str | Path, out_format: str | None) -> str:
    """``jsonl`` or ``parquet`` for a single file (by extension), ``dir`` for shards."""
    text = str(out).lower()
    if text.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if text.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if out_format not in OUT_FORMATS:
        raise ValueError(
            f"{out}: a directory of shards needs --out-format {' or '.join(OUT_FORMATS)}"
            " (or name a .jsonl or .parquet file to get one file in input order)"
        )
    return "dir"


def write_ordered(tables: Iterable[Any], out: str | Path, kind: str) -> int:
    """Write tables in order to one JSONL or Parquet file, atomically; return the row count."""
    pa = require_pyarrow()
    target = Path(out)
    rows = 0
    writer = None
    with atomic_output(target, binary=True) as handle:
        try:
            for table in tables:
                rows += table.num_rows
                if kind == "jsonl":
                    handle.write(_jsonl_bytes(table))
                    continue
                if writer is None:
                    writer = pa.parquet.ParquetWriter(handle, table.schema)
                writer.write_table(table)
        except BaseException:
            if writer is not None:  # closed while the file is open: no __del__ traceback later
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        if writer is not None:
            writer.close()
        elif kind == "parquet":
            raise PredictionsError(target, None, None, "no rows to write", "Check the input")
    return rows


def prepare_output(out: str | Path, out_format: str | None, overwrite: bool) -> None:
    """Refuse to write over earlier output unless ``overwrite``; with it, a shard folder's
    old ``part-*`` shards are replaced as a whole by :func:`atomic_folder` at the end (a
    shorter run must not leave stale ones behind, a failed one leaves them as they were)."""
    if out_kind(out, out_format) != "dir":
        check_output(out, overwrite)
        return
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{out}: is a file; shards need a folder (or name a .jsonl/.parquet file)")
    shards = sorted(folder.glob("part-*")) if folder.is_dir() else []
    if shards and not overwrite:
        raise ValueError(
            f"{out}: already holds {len(shards)} shard(s) (part-*); pass --overwrite to "
            "replace them, or give another folder"
        )
    # the old shards are replaced only once every new one is written (atomic_folder)


def shard_path(folder: str | Path, index: int, out_format: str) -> Path:
    """The ``index``-th shard of a directory output: ``part-NNNNN.parquet`` or ``.jsonl``."""
    return Path(folder) / f"part-{index:05d}.{'parquet' if out_format == 'parquet' else 'jsonl'}"


def _jsonl_bytes(table: Any) -> bytes:
    lines = (json.dumps(row, ensure_ascii=False) for row in table.to_pylist())
    return "".join(line + "\n" for line in lines).encode("utf-8")


def iter_parquet(spec: str | Path, batch_rows: int = 262_144) -> Iterator[Any]:
    """Record batches of every Parquet file of ``spec`` as tables, in file and row order."""
    pa = require_pyarrow()
    for path in parquet_paths(spec):
        source = pa.parquet.ParquetFile(path)
        for batch in source.iter_batches(batch_size=batch_rows):
            yield pa.Table.from_batches([batch])


def parquet_pieces(paths: Iterable[str | Path]) -> list[tuple[str, int]]:
    """Every (file, row group) of Parquet files, in input order: the distributed engines' task."""
    pa = require_pyarrow()
    return [
        (str(path), group)
        for path in paths
        for group in range(pa.parquet.ParquetFile(path).num_row_groups)
    ]


def calibrate_piece(
    path: str, group: int, calibrator: Calibrator, batch_rows: int = 131_072
) -> Iterator[Any]:
    """Row group ``group`` of the Parquet file ``path``, calibrated batch by batch, as tables."""
    pa = require_pyarrow()
    source = pa.parquet.ParquetFile(path)
    first = sum(source.metadata.row_group(g).num_rows for g in range(group))
    for batch in source.iter_batches(batch_size=batch_rows, row_groups=[group]):
        try:
            yield calibrate_table(pa.Table.from_batches([batch]), calibrator)
        except PredictionsError as exc:
            raise _in_file(exc, path, first) from None
        first += batch.num_rows


def count_rows(paths: Iterable[str | Path]) -> int:
    """Rows in Parquet files, from their footers (every engine maps rows one to one)."""
    pa = require_pyarrow()
    return sum(pa.parquet.ParquetFile(path).metadata.num_rows for path in paths)


def apply_local(
    calibrator: CalibratorSpec,
    data: str | Path,
    out: str | Path,
    out_format: str | None = None,
    batch_rows: int = 262_144,
) -> int:
    """Calibrate Parquet ``data`` batch by batch on this machine; return the rows written.

    ``out`` ending in ``.jsonl`` or ``.parquet`` gets one file in input order; any other
    path is a directory that gets one ``part-NNNNN.<format>`` shard per input batch.
    """
    fitted = load_calibrator(calibrator)
    kind = out_kind(out, out_format)
    check_unique_ids(parquet_paths(data))
    tables = calibrated_batches(data, fitted, batch_rows)
    if kind != "dir":
        return write_ordered(tables, out, kind)
    assert out_format is not None
    rows = 0
    with atomic_folder(out) as folder:
        for index, table in enumerate(tables):
            rows += write_ordered([table], shard_path(folder, index, out_format), out_format)
    return rows
