"""Predictions files: the one contract between verbcal's stages.

JSON Lines, one record per item::

    {"id": "t1", "probs": {"negative": 0.1, "positive": 0.9}, "label": "positive"}

``label`` (the gold label) may be absent or null; any other key is kept and passed
through. A record whose ``probs`` is null (an unparsable or failed LLM reply) is kept
but not scored. CSV files hold the columns ``id``, ``label`` and one ``p_<label>``
per class. Parquet input (a file, a directory of ``*.parquet`` files or a glob, read
with pyarrow, extra ``verbcal[parquet]``) holds ``probs`` as a struct or a
``map<string, double>`` column, or one ``p_<label>`` column per class; every other column
is passed through. Rows that do not sum to 1 are normalised and counted.

Confidence in words: a record may hold ``verbal`` (the phrase a judge wrote) and ``about``
(the label of a binary task the phrase speaks of)::

    {"id": "mt1", "verbal": "very likely", "about": "acceptable", "label": "acceptable",
     "probs": {"acceptable": 0.9, "unacceptable": 0.1}}

Which reply is read is set by :class:`ReadOptions` (``source="probs"``, the default, or
``"verbal"``; ``about`` for files that do not say; ``lexicon`` for a user lexicon), given to
:func:`read_predictions` or set for a whole block with :func:`reading` (the CLI's
``--source``, ``--about`` and ``--lexicon`` do that for every command). A verbal record
becomes the distribution P(about) = lexicon value of the phrase, 1 - that on the other
label; the record gains ``verbal_probs`` with it, and the phrase stays beside it. A phrase
the lexicon cannot map makes its record unusable (skipped, counted, named in ``notes``).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

GOLD_NAMES = frozenset(
    {"gold", "gold_label", "target", "y", "truth", "ground_truth", "answer", "class", "category"}
)
"""Field names that often hold the gold label under another name (suggested in errors)."""
SUM_TOLERANCE = 1e-6
"""A row whose sum differs from 1 by more than this is counted as renormalised."""


SOURCES = ("probs", "verbal")
"""Which reply of a record is read: the numeric distribution or the phrase in words."""


@dataclass(frozen=True)
class ReadOptions:
    """How records become distributions: ``source`` (``probs`` or ``verbal``), the default
    ``about`` label of verbal records that do not name one, and a user ``lexicon`` file
    (extending the bundled one unless it says ``mode: replace``)."""

    source: str = "probs"
    about: str | None = None
    lexicon: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    @property
    def verbal(self) -> bool:
        return self.source == "verbal"


_READING: ContextVar[ReadOptions] = ContextVar(
    "verbcal_reading",
    default=ReadOptions(),  # noqa: B039 (a frozen dataclass: never mutated)
)


def reading_options() -> ReadOptions:
    """The :class:`ReadOptions` in force (set by :func:`reading`; default: numeric replies)."""
    return _READING.get()


@contextmanager
def reading(options: ReadOptions) -> Iterator[ReadOptions]:
    """Read every predictions file in this block with ``options`` (e.g. verbal replies)."""
    token = _READING.set(options)
    try:
        yield options
    finally:
        _READING.reset(token)


def set_reading(options: ReadOptions) -> None:
    """Set the :class:`ReadOptions` for the rest of this context (a CLI command's run)."""
    _READING.set(options)


class PredictionsError(ValueError):
    """A predictions file that cannot be used as it is: says where and what to do."""

    def __init__(
        self,
        path: str | Path,
        line: int | None,
        field: str | None,
        problem: str,
        fix: str,
        unit: str = "line",
    ):
        self.path, self.line, self.field, self.problem, self.fix = (
            str(path),
            line,
            field,
            problem,
            fix,
        )
        where = str(path) + (f", {unit} {line}" if line is not None else "")
        where += f", field {field!r}" if field else ""
        super().__init__(f"{where}: {problem}. {fix}")


@dataclass
class Predictions:
    """Verbalized distributions with their gold labels, aligned with the records they came from.

    ``probs`` has one row per usable record (normalised to sum 1, in ``labels`` order);
    ``y`` holds the gold label index per row, or -1 where the record has none.
    ``records`` holds every record read, usable or not, for pass-through on output.
    """

    labels: tuple[str, ...]
    probs: NDArray[np.float64]
    y: NDArray[np.int64]
    ids: list[str]
    records: list[dict[str, Any]]
    rows: NDArray[np.int64]
    """Index into ``records`` of each row of ``probs``."""
    source: str = "<memory>"
    n_renormalised: int = 0
    max_sum_error: float = 0.0
    n_unusable: int = 0
    notes: list[str] = field(default_factory=list)
    reply: str = "probs"
    """Which reply the rows were read from: ``probs`` or ``verbal`` (see :class:`ReadOptions`)."""
    n_verbalized: int = 0
    """Rows read from ``verbalized_probs`` rather than ``probs`` (``verbalized=True``)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_gold(self) -> bool:
        return bool(len(self.y)) and bool(np.all(self.y >= 0))

    def labelled(self) -> Predictions:
        """The rows that carry a gold label."""
        return self.subset(np.flatnonzero(self.y >= 0))

    def subset(self, index: NDArray[np.int64] | Sequence[int]) -> Predictions:
        """The rows at ``index`` (the records are shared, not copied)."""
        idx = np.asarray(index, dtype=np.int64)
        return Predictions(
            labels=self.labels,
            probs=self.probs[idx],
            y=self.y[idx],
            ids=[self.ids[i] for i in idx],
            records=self.records,
            rows=self.rows[idx],
            source=self.source,
            reply=self.reply,
            n_verbalized=self.n_verbalized,
        )

    def phrases(self) -> list[str | None]:
        """The verbal phrase of each row (None where its record has none)."""
        return [self.records[r].get("verbal") for r in self.rows]

    def require_gold(self, action: str) -> None:
        """Raise a clear error unless every usable row has a gold label."""
        missing = int(np.sum(self.y < 0))
        if not missing:
            return
        seen = dict.fromkeys(
            key
            for record in self.records[:100]
            for key, value in record.items()
            if value not in (None, "") and key not in ("probs", "label", "id")
        )
        if seen and not any(record.get("label") not in (None, "") for record in self.records):
            likely = [k for k in seen if k.lower() in GOLD_NAMES] or ["<that column>"]
            raise PredictionsError(
                self.source,
                None,
                "label",
                f"no record has a gold label in a 'label' field, which {action} needs "
                f"(the other fields are {', '.join(repr(k) for k in seen)})",
                f"Name the gold-label column or key 'label' (e.g. rename {likely[0]!r} to 'label')",
            )
        raise PredictionsError(
            self.source,
            None,
            "label",
            f"{missing} of {len(self.y)} records have no gold label, which {action} needs",
            "Add a 'label' to every record, or filter the unlabelled ones out first",
        )

    @classmethod
    def from_frame(
        cls,
        frame: Any,
        labels: Sequence[str] | None = None,
        *,
        label_column: str | None = "label",
        id_column: str | None = "id",
    ) -> Predictions:
        """Predictions from a pandas or polars DataFrame: one column per label.

        ``labels`` names the probability columns (default: every column but the id and
        gold-label columns). The gold column holds label names (missing values: no gold).
        """
        from verbcal.calibration.inputs import as_matrix, frame_library

        if frame_library(frame) is None or not hasattr(frame, "columns"):
            raise PredictionsError(
                "<frame>",
                None,
                None,
                f"not a DataFrame ({type(frame).__name__})",
                "Pass a pandas or polars DataFrame",
            )
        columns = [str(c) for c in frame.columns]
        extra = {c for c in (label_column, id_column) if c and c in columns}
        names = tuple(labels) if labels is not None else tuple(c for c in columns if c not in extra)
        missing = [n for n in names if n not in columns]
        if missing or not names:
            raise PredictionsError(
                "<frame>",
                None,
                ", ".join(missing) or None,
                f"no probability column for label(s) {missing or 'any'}",
                "Give one column per label, named as the label",
            )
        picked = (
            frame.select(list(names)) if frame_library(frame) == "polars" else frame[list(names)]
        )
        matrix, _ = as_matrix(picked, names)
        ids = _column(frame, id_column) if id_column in columns else None
        gold = _column(frame, label_column) if label_column in columns else None
        y = None
        if gold is not None:
            index = {n: i for i, n in enumerate(names)}
            bad = sorted({str(g) for g in gold if g is not None and str(g) not in index})
            if bad:
                raise PredictionsError(
                    "<frame>",
                    None,
                    label_column,
                    f"gold label(s) {', '.join(map(repr, bad[:5]))} are not among {list(names)}",
                    "Fix the labels or pass labels= with every class",
                )
            y = [index[str(g)] if g is not None else -1 for g in gold]
        return from_arrays(matrix, y, names, ids)

    def to_frame(self, library: str = "pandas") -> Any:
        """A DataFrame (pandas or polars): ``id``, ``label`` (None without gold), one column per label."""
        data: dict[str, Any] = {
            "id": list(self.ids),
            "label": [self.labels[i] if i >= 0 else None for i in self.y.tolist()],
        }
        data |= {label: self.probs[:, k] for k, label in enumerate(self.labels)}
        if library == "polars":
            import polars as pl

            return pl.DataFrame(data)
        import pandas as pd

        return pd.DataFrame(data)

    def describe(self) -> str:
        """One line on what was read and what was adjusted."""
        text = f"{len(self)} predictions over {len(self.labels)} labels from {self.source}"
        if self.n_renormalised:
            text += (
                f"; {self.n_renormalised} rows did not sum to 1 and were normalised"
                f" (largest deviation {self.max_sum_error:.3g})"
            )
        if self.reply == "verbal":
            text += " (confidence in words, read through the lexicon)"
        if self.n_unusable:
            text += f"; {self.n_unusable} records without a distribution were skipped"
        for note in self.notes:
            text += f"; {note}"
        if self.n_verbalized:
            text += (
                f"; {self.n_verbalized} records carry verbalized_probs (the LLM's own numbers):"
                " those are the input, not their probs, so applying twice equals applying once"
            )
        return text


def _column(frame: Any, name: str | None) -> list[Any]:
    """A column as a list, missing values (NaN / None) as None."""
    values = frame[name].to_list() if hasattr(frame[name], "to_list") else list(frame[name])
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def from_arrays(
    probs: NDArray[np.float64] | Sequence[Sequence[float]],
    y: NDArray[np.int64] | Sequence[int] | None,
    labels: Sequence[str],
    ids: Sequence[str] | None = None,
) -> Predictions:
    """Build predictions from arrays (rows are normalised like file input)."""
    labels = tuple(labels)
    matrix = np.asarray(probs, dtype=np.float64)
    n = matrix.shape[0]
    ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    gold = np.full(n, -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
    records: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {
            "id": ids[i],
            "probs": dict(zip(labels, map(float, matrix[i]), strict=True)),
        }
        if gold[i] >= 0:
            record["label"] = labels[gold[i]]
        records.append(record)
    normalised, n_off, max_err = _normalise(matrix)
    return Predictions(
        labels, normalised, gold, ids, records, np.arange(n), "<arrays>", n_off, max_err
    )


def read_predictions(
    path: str | Path,
    labels: Sequence[str] | None = None,
    verbalized: bool = False,
    options: ReadOptions | None = None,
) -> Predictions:
    """Read JSONL, CSV or Parquet predictions (by extension); errors name file, line and field.

    Parquet may be a file, a directory or a glob; its errors name the row (from 1).
    ``verbalized=True`` (what ``apply`` and ``evaluate --calibrator`` read): a record that
    carries ``verbalized_probs`` (written by ``apply``) is read from those, the LLM's own
    numbers, not from its already calibrated ``probs``.
    ``options`` (default: those set by :func:`reading`) says which reply to read.
    """
    options = options if options is not None else reading_options()
    starts: list[tuple[int, Path]] = []  # Parquet: (rows before the file, file)
    if is_parquet(path):
        check_unique_ids(parquet_paths(path))
        records = list(_read_parquet(path, starts))
        path = Path(path)
    else:
        path = Path(path)
        if not path.exists():
            raise PredictionsError(path, None, None, "file not found", "Check the path")
        if path.is_dir():
            inside = path / "predictions.jsonl"
            fix = (
                f"Give the file inside it: {inside}"
                if inside.is_file()
                else "Give a predictions file (JSONL, CSV or Parquet), not a directory"
            )
            raise PredictionsError(path, None, None, "is a directory, not a file", fix)
        reader = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
        records = list(reader(path))
    if not records:
        raise PredictionsError(
            path, None, None, "the file holds no records", "Write one record per line"
        )
    try:
        return _assemble(path, records, tuple(labels) if labels else None, verbalized, options)
    except PredictionsError as exc:
        if not is_parquet(path) or exc.line is None:
            raise
        before, source = max((s for s in starts if s[0] < exc.line), key=lambda s: s[0])
        line = exc.line - before
        raise PredictionsError(source, line, exc.field, exc.problem, exc.fix, "row") from None


def _decoded(path: Path, content: bytes) -> str:
    """``content`` as UTF-8 text (a leading BOM dropped); binary or other encodings are
    refused naming the file and the line of the first bad byte."""
    if b"\x00" in content[:8192]:
        line = content[: content.index(b"\x00")].count(b"\n") + 1
        raise PredictionsError(
            path, line, None, "a binary file, not text (a NUL byte)", "Give a JSONL or CSV file"
        )
    try:
        return content.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise PredictionsError(
            path,
            line,
            None,
            f"not UTF-8 text (byte 0x{content[exc.start]:02x}: {exc.reason})",
            "Save the file as UTF-8",
        ) from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as handle:
        content = handle.read()
    text = _decoded(path, content)
    lines = text.split("\n")
    last = len(lines) - (1 if lines[-1] == "" else 0)
    for number, line in enumerate(lines[:last], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == last and not text.endswith("\n"):
                raise PredictionsError(
                    path,
                    number,
                    None,
                    f"the last line is truncated ({exc.msg})",
                    "The file was probably cut off mid-write: delete that line, or re-run the step that wrote it",
                ) from exc
            raise PredictionsError(
                path,
                number,
                None,
                f"not valid JSON ({exc.msg} at column {exc.colno})",
                "Fix or delete the line",
            ) from exc
        if not isinstance(record, dict):
            raise PredictionsError(
                path, number, None, "a record must be a JSON object", "Write one object per line"
            )
        yield number, record


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _decoded(path, path.read_bytes())
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        prob_columns = [c for c in columns if c.startswith("p_")]
        if not prob_columns:
            raise PredictionsError(
                path, 1, None, "no p_<label> columns", "Name one column p_<label> per class"
            )
        for number, row in enumerate(reader, start=2):
            probs: dict[str, Any] = {}
            for column in prob_columns:
                cell = (row.get(column) or "").strip()
                try:
                    probs[column[2:]] = float(cell) if cell else None
                except ValueError as exc:
                    raise PredictionsError(
                        path,
                        number,
                        column,
                        f"{cell!r} is not a number",
                        "Write a probability in [0, 1]",
                    ) from exc
            record: dict[str, Any] = {
                k: v for k, v in row.items() if k not in prob_columns and k is not None
            }
            record["probs"] = probs
            record["label"] = record.get("label") or None
            yield number, record


def _assemble(
    path: Path,
    records: list[tuple[int, dict[str, Any]]],
    labels: tuple[str, ...] | None,
    verbalized: bool = False,
    options: ReadOptions | None = None,
) -> Predictions:
    options = options or ReadOptions()
    kept: list[dict[str, Any]] = [record for _, record in records]
    first_seen: dict[str, int] | None = None if is_parquet(path) else {}  # Parquet: checked
    rows: list[list[float]] = []
    gold: list[int] = []
    ids: list[str] = []
    row_index: list[int] = []
    unknown: dict[str, int] = {}
    lexicon = _lexicon(options) if options.verbal else None
    n_verbalized = 0
    for position, (number, record) in enumerate(records):
        if first_seen is not None:
            _check_new_id(path, number, record.get("id"), first_seen)
        source = "probs"
        if lexicon is not None:
            source = "verbal"
            probs, labels = _verbal_probs(path, number, record, labels, options, lexicon, unknown)
        else:
            if verbalized and record.get(VERBALIZED_PROBS) is not None:
                source = VERBALIZED_PROBS
                n_verbalized += 1
            probs = record.get(source)
            if isinstance(probs, list) and source == VERBALIZED_PROBS:  # a Parquet map column
                probs = dict(probs)
        if probs is None:
            continue
        if not isinstance(probs, dict):
            raise PredictionsError(
                path, number, source, "must be an object {label: probability}", "Fix the record"
            )
        if labels is None:
            labels = tuple(str(k) for k in probs)
            if len(labels) < 2:
                raise PredictionsError(
                    path, number, "probs", "needs at least two labels", "List every class"
                )
        index = {label: k for k, label in enumerate(labels)}
        rows.append(_parse_row(path, number, probs, labels, index, source))
        gold.append(_parse_gold(path, number, record.get("label"), index, path.suffix))
        ids.append(str(record.get("id", number)))
        row_index.append(position)
    if labels is None or not rows:
        if options.verbal:
            raise PredictionsError(
                path,
                None,
                "verbal",
                "no record has a phrase the lexicon can read"
                + (f" (unknown: {', '.join(map(repr, list(unknown)[:5]))})" if unknown else ""),
                "Add the phrases to a lexicon file (--lexicon my.yaml), or read the numbers "
                "with --source probs",
            )
        has_verbal = any("verbal" in record for record in kept)
        raise PredictionsError(
            path,
            None,
            "probs",
            "no record has a distribution",
            "The records hold confidence in words: pass --source verbal"
            if has_verbal
            else "Check the input",
        )
    matrix = np.asarray(rows, dtype=np.float64)
    normalised, n_off, max_err = _normalise(matrix)
    notes = []
    if unknown:
        listed = ", ".join(f"{phrase!r} ({n})" for phrase, n in list(unknown.items())[:10])
        notes.append(f"phrases the lexicon does not know were skipped: {listed}")
    return Predictions(
        labels=labels,
        probs=normalised,
        y=np.asarray(gold, dtype=np.int64),
        ids=ids,
        records=kept,
        rows=np.asarray(row_index, dtype=np.int64),
        source=str(path),
        n_renormalised=n_off,
        max_sum_error=max_err,
        n_unusable=len(records) - len(rows),
        notes=notes,
        reply=options.source,
        n_verbalized=n_verbalized,
    )


def _check_new_id(path: str | Path, number: int, item: Any, first: dict[str, int]) -> None:
    """Refuse a repeated ``id`` (records without one are numbered by line, never clash):
    the error names the id and both lines (Parquet: :func:`check_unique_ids`)."""
    if item is None:
        return
    key = str(item)
    if key in first:
        raise PredictionsError(
            path,
            number,
            "id",
            f"duplicate id {key!r} (first on line {first[key]}, again on line {number})",
            "Give every record its own id, or drop the repeated record",
        )
    first[key] = number


def _lexicon(options: ReadOptions) -> Any:
    from verbcal.lexicon import LexiconError, load_lexicon

    try:
        return load_lexicon(options.lexicon)
    except LexiconError as exc:
        raise PredictionsError(
            options.lexicon or "<lexicon>", None, None, str(exc), "Fix the lexicon file"
        ) from None


def _verbal_probs(
    path: Path,
    number: int,
    record: dict[str, Any],
    labels: tuple[str, ...] | None,
    options: ReadOptions,
    lexicon: Any,
    unknown: dict[str, int],
) -> tuple[dict[str, float] | None, tuple[str, ...] | None]:
    """The binary distribution a record's phrase states (None if it has none or it is unknown),
    and the label set (from ``labels``, else the record's ``probs`` keys)."""
    from verbcal.lexicon import parse_verbal

    phrase = record.get("verbal")
    if phrase is None or phrase == "":
        return None, labels
    about = record.get("about") or options.about
    if not about:
        raise PredictionsError(
            path,
            number,
            "about",
            "a verbal record must say which label its phrase speaks of",
            "Add 'about' to the records, or pass --about LABEL",
        )
    if labels is None:
        probs = record.get("probs")
        if isinstance(probs, dict) and len(probs) >= 2:
            labels = tuple(str(k) for k in probs)
        else:
            raise PredictionsError(
                path,
                number,
                "verbal",
                "cannot tell the two labels from a phrase alone",
                "Pass --labels A,B (the label the phrase speaks of, and the other)",
            )
    if len(labels) != 2 or str(about) not in labels:
        raise PredictionsError(
            path,
            number,
            "about",
            f"{about!r} must be one of exactly two labels (labels are {list(labels)})",
            "Confidence in words is read for binary tasks: fix 'about' or --about",
        )
    reply = parse_verbal(phrase, lexicon, str(about), labels)
    if reply.p is None:
        key = str(phrase).strip()
        unknown[key] = unknown.get(key, 0) + 1
        return None, labels
    probs = reply.probs(labels, str(about))
    record["verbal_probs"] = probs
    return probs, labels


def _parse_row(
    path: Path,
    number: int,
    probs: dict[str, Any],
    labels: tuple[str, ...],
    index: dict[str, int],
    source: str = "probs",
) -> list[float]:
    unknown = [key for key in probs if key not in index]
    if unknown:
        raise PredictionsError(
            path,
            number,
            f"{source}.{unknown[0]}",
            f"unknown label {unknown[0]!r} (labels are {list(labels)})",
            "Pass the full label set with --labels, or fix the record",
        )
    missing = [label for label in labels if label not in probs]
    if missing:
        raise PredictionsError(
            path,
            number,
            f"{source}.{missing[0]}",
            f"label {missing[0]!r} is missing",
            "Give every label a probability (0 is allowed)",
        )
    row: list[float] = []
    for label in labels:
        value = probs[label]
        field_name = f"{source}.{label}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PredictionsError(
                path, number, field_name, f"{value!r} is not a number", "Write a number"
            )
        if not math.isfinite(value):
            raise PredictionsError(
                path, number, field_name, f"{value} is not finite", "Write a number in [0, 1]"
            )
        if value < 0:
            raise PredictionsError(
                path, number, field_name, f"{value} is negative", "Write a number in [0, 1]"
            )
        row.append(float(value))
    if not math.isfinite(sum(row)):
        raise PredictionsError(
            path,
            number,
            "probs",
            "the probabilities sum past the largest float (overflow), so they cannot be normalised",
            "Write probabilities in [0, 1] (or percentages in [0, 100])",
        )
    if sum(row) <= 0:
        raise PredictionsError(
            path,
            number,
            source,
            "every probability is 0",
            "Drop the record or set probs to null to skip it",
        )
    return row


def _parse_gold(
    path: Path, number: int, label: Any, index: dict[str, int], suffix: str = ".jsonl"
) -> int:
    if label is None or label == "":
        return -1
    if str(label) not in index:
        where = (
            f"add a column p_{label}"
            if suffix.lower() == ".csv"
            else "give it a probability in 'probs' (0 is allowed)"
        )
        raise PredictionsError(
            path,
            number,
            "label",
            f"gold label {label!r} is not one of the labels with a probability {list(index)}",
            f"If {label!r} is a class, {where}; otherwise fix the label",
        )
    return index[str(label)]


def _normalise(matrix: NDArray[np.float64]) -> tuple[NDArray[np.float64], int, float]:
    sums = matrix.sum(axis=1)
    deviation = np.abs(sums - 1.0)
    off = deviation > SUM_TOLERANCE
    return matrix / sums[:, None], int(off.sum()), float(deviation.max(initial=0.0))


def field_values(predictions: Predictions, name: str) -> list[Any]:
    """The value of the record field ``name`` for each row (None where a record lacks it).

    Raises ValueError, naming the fields there are, when no record has it."""
    records = [predictions.records[r] for r in predictions.rows]
    if not any(name in record for record in records):
        fields = sorted({k for record in records[:100] for k in record})
        raise ValueError(
            f"no record of {predictions.source} has the field {name!r}; the records have "
            f"{', '.join(fields)}"
        )
    return [record.get(name) for record in records]


@contextmanager
def atomic_output(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file handle whose contents replace ``path`` atomically when the block ends.

    The one atomic writer of verbcal: the data goes to a uniquely named temporary
    file in the target's directory, which is flushed and fsynced, then renamed over
    the target with :func:`os.replace`; if the block raises, the temporary file is
    removed and the target is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, then renamed)
        "wb" if binary else "w",
        encoding=None if binary else "utf-8",
        dir=target.parent,
        prefix=f".{target.name}.",
        suffix=".tmp",
        delete=False,
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)  # temporary files are created private (0600)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | Path, replaces: str = "part-*") -> Iterator[Path]:
    """A temporary folder whose files move into ``path`` only when the block ends well.

    The folder is created next to ``path`` (same file system, so moves are renames). On
    success the entries of ``path`` matching ``replaces`` (the old shards) are removed and
    the new files moved in, or the whole folder is renamed to ``path`` if it does not
    exist; if the block raises, the temporary folder is removed and ``path`` is left as it
    was: no half-written output, and a retry finds nothing in its way.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise PredictionsError(
            target, None, None, "is a file; shards need a folder", "Give a folder path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield temp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o777 & ~umask)  # mkdtemp creates a private (0700) folder
        if not target.exists():
            os.replace(temp, target)
            return
        for old in target.glob(replaces):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        for new in sorted(temp.iterdir()):
            os.replace(new, target / new.name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSON Lines atomically: a crash never leaves a half-written file."""
    path = check_output(path)
    with atomic_output(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def check_output(path: str | Path, overwrite: bool = True) -> Path:
    """``path`` as a file to write: refuse a directory, and an existing file unless ``overwrite``."""
    target = Path(path)
    if target.is_dir():
        raise PredictionsError(
            target,
            None,
            None,
            "is a directory, not a file to write",
            f"Give a file path, e.g. {target / 'out.jsonl'}",
        )
    if target.exists() and not overwrite:
        raise PredictionsError(
            target, None, None, "already exists", "Pass --overwrite to replace it, or another path"
        )
    return target


VERBALIZED_PROBS = "verbalized_probs"


def with_probs(predictions: Predictions, probs: NDArray[np.float64]) -> list[dict[str, Any]]:
    """The input records with ``probs`` replaced by ``probs``, the LLM's own distribution kept
    as ``verbalized_probs`` (a record that carries one already keeps it: it was the input)."""
    out = [dict(record) for record in predictions.records]
    for row, position in enumerate(predictions.rows):
        record = out[position]
        if predictions.reply == "verbal":  # the input was the phrase, read as verbal_probs
            record[VERBALIZED_PROBS] = record.get("verbal_probs")
        elif record.get(VERBALIZED_PROBS) is None:
            record[VERBALIZED_PROBS] = record.get("probs")
        record["probs"] = {
            label: float(p) for label, p in zip(predictions.labels, probs[row], strict=True)
        }
    return out


# ---------------------------------------------------------------------------- Parquet

PARQUET_SUFFIXES = (".parquet", ".pq")
PROBS_COLUMN = "probs"
PROB_PREFIX = "p_"


def is_parquet(spec: str | Path) -> bool:
    """Whether ``spec`` names Parquet: a ``.parquet`` file or glob, or a directory of them."""
    text = str(spec)
    if text.lower().endswith(PARQUET_SUFFIXES):
        return True
    directory = Path(text)
    return directory.is_dir() and any(
        p.suffix.lower() in PARQUET_SUFFIXES for p in directory.rglob("*")
    )


def parquet_paths(spec: str | Path) -> list[Path]:
    """The Parquet files of a file, a directory (recursively, in name order) or a glob."""
    text = str(spec)
    if Path(text).is_dir():
        found = sorted(
            path
            for path in Path(text).rglob("*")
            if path.suffix.lower() in PARQUET_SUFFIXES
            and not any(part.startswith((".", "_")) for part in path.relative_to(text).parts)
        )
    elif glob.has_magic(text):
        found = sorted(Path(path) for path in glob.glob(text, recursive=True))
    else:
        found = [Path(text)] if Path(text).exists() else []
    if not found:
        raise PredictionsError(
            text, None, None, "no Parquet file found", "Check the path, directory or glob"
        )
    return found


def require_pyarrow() -> Any:
    """Import pyarrow, or say which extra installs it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError("Parquet needs pyarrow: pip install 'verbcal[parquet]'") from exc
    return pyarrow


def _read_table(path: Path) -> Any:
    pa = require_pyarrow()
    try:
        return pa.parquet.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise PredictionsError(
            path, None, None, f"not readable as Parquet ({exc})", "Check the file"
        ) from exc


def read_parquet_table(spec: str | Path) -> Any:
    """Every Parquet file of ``spec`` as one ``pyarrow.Table``, in file order."""
    pa = require_pyarrow()
    tables = [_read_table(path) for path in parquet_paths(spec)]
    return pa.concat_tables(tables, promote_options="default")


def check_unique_ids(paths: Iterable[str | Path]) -> None:
    """Refuse an ``id`` that repeats across Parquet files (only the id column is read),
    naming the id and both places: file and row (from 1 in each file)."""
    pa = require_pyarrow()
    first: dict[str, tuple[str, int]] = {}
    for path in paths:
        if "id" not in pa.parquet.read_schema(path).names:
            continue
        ids = pa.parquet.read_table(path, columns=["id"]).column("id").to_pylist()
        for row, item in enumerate(ids, start=1):
            if item is None:
                continue
            key = str(item)
            if key in first:
                where, at = first[key]
                again = "row" if where == str(path) else f"{path} row"
                raise PredictionsError(
                    path,
                    row,
                    "id",
                    f"duplicate id {key!r} (first in {where} row {at}, again in {again} {row})",
                    "Give every row its own id, or drop the repeated row",
                    "row",
                )
            first[key] = (str(path), row)


def _read_parquet(
    spec: str | Path, starts: list[tuple[int, Path]] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of every file of ``spec``, numbered by row from 1, with ``probs`` as a dict.

    Each file is read on its own, so files may differ in layout (struct, map, p_<label>).
    ``starts`` gets (rows before the file, file) per file, to name the file of a row.
    """
    number = 0
    for path in parquet_paths(spec):
        if starts is not None:
            starts.append((number, path))
        table = _read_table(path)
        prob_columns = [c for c in table.column_names if c.startswith(PROB_PREFIX)]
        if PROBS_COLUMN not in table.column_names and not prob_columns:
            raise PredictionsError(
                path,
                None,
                None,
                "no 'probs' column (struct or map) and no p_<label> columns",
                "Store the distribution as a 'probs' struct {label: p}, or one column p_<label> per class",
            )
        for row in table.to_pylist():
            number += 1
            if PROBS_COLUMN in row:
                probs = row[PROBS_COLUMN]
                if isinstance(probs, list):  # a map column arrives as [(key, value), ...]
                    probs = dict(probs)
                row[PROBS_COLUMN] = probs
            else:
                probs = {column[len(PROB_PREFIX) :]: row.pop(column) for column in prob_columns}
                none = all(value is None for value in probs.values())
                row[PROBS_COLUMN] = None if none else probs
            yield number, row


def write_parquet(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as one Parquet file atomically (``probs`` becomes a struct column)."""
    pa = require_pyarrow()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        table = pa.Table.from_pylist(list(records))
    except (pa.ArrowException, TypeError) as exc:
        raise PredictionsError(
            path,
            None,
            None,
            f"these records do not fit one Parquet schema ({exc})",
            "Give every record the same fields and types, or write JSONL",
        ) from exc
    temp = path.with_name(f".{path.name}.tmp")
    pa.parquet.write_table(table, temp)
    os.replace(temp, path)


def write_records(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as Parquet (``.parquet``/``.pq``) or else as JSON Lines."""
    if str(path).lower().endswith(PARQUET_SUFFIXES):
        write_parquet(path, records)
    else:
        write_jsonl(path, records)


__all__ = [
    "SOURCES",
    "SUM_TOLERANCE",
    "Predictions",
    "PredictionsError",
    "ReadOptions",
    "atomic_folder",
    "atomic_output",
    "from_arrays",
    "is_parquet",
    "read_parquet_table",
    "read_predictions",
    "reading",
    "reading_options",
    "with_probs",
    "write_jsonl",
    "write_parquet",
    "write_records",
]
