"""What calibrators accept: arrays or pandas / polars DataFrames, labels as names or indices.

pandas and polars are optional: a frame is recognised by its type's module, never by
importing either library here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from verbcal.calibration.rows import Array, CalibratorError

FRAME_LIBRARIES = ("pandas", "polars")


def frame_library(data: Any) -> str | None:
    """``"pandas"`` or ``"polars"`` when ``data`` is a DataFrame or Series of either, else ``None``."""
    root = type(data).__module__.split(".")[0]
    return root if root in FRAME_LIBRARIES else None


def is_frame(data: Any) -> bool:
    return frame_library(data) is not None and hasattr(data, "columns")


def frame_columns(data: Any) -> tuple[str, ...]:
    return tuple(str(c) for c in data.columns)


def as_matrix(data: Any, labels: Sequence[str] | None) -> tuple[Any, tuple[str, ...] | None]:
    """The probabilities as an array-like, with columns in ``labels`` order for a DataFrame.

    Returns the matrix and the column names a frame carried (``None`` for arrays). A frame
    missing a label column, or holding a column that is not a label, is a clear error.
    """
    if not is_frame(data):
        return data, None
    columns = frame_columns(data)
    if labels is None:
        return _to_numpy(data), columns
    missing = [label for label in labels if label not in columns]
    extra = [c for c in columns if c not in labels]
    if missing or extra:
        problem = []
        if missing:
            problem.append(f"no column for label(s) {', '.join(map(repr, missing))}")
        if extra:
            problem.append(f"column(s) {', '.join(map(repr, extra))} are not labels")
        raise CalibratorError(
            f"DataFrame columns {list(columns)} do not match the labels {list(labels)}: "
            f"{'; '.join(problem)}. Give one column per label, named as the label"
        )
    return _to_numpy(
        data.select(list(labels)) if frame_library(data) == "polars" else data[list(labels)]
    ), columns


def _to_numpy(frame: Any) -> Array:
    return np.asarray(frame.to_numpy(), dtype=np.float64)


def as_targets(y: Any, labels: Sequence[str]) -> NDArray[np.int64]:
    """Gold labels as indices into ``labels``: label names or integer indices, nothing else."""
    if frame_library(y) is not None:
        y = y.to_numpy()
    values = np.asarray(y)
    if values.ndim != 1:
        values = values.reshape(-1)
    k = len(labels)
    if values.dtype.kind in "US" or values.dtype == object:
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({str(v) for v in values.tolist() if not _known(v, index)})
        if unknown:
            raise CalibratorError(
                f"unknown label(s) {', '.join(map(repr, unknown[:5]))} in y; known labels: "
                f"{', '.join(labels)}"
            )
        return np.array([_index_of(v, index) for v in values.tolist()], dtype=np.int64)
    if values.dtype.kind == "b":
        raise CalibratorError("y holds booleans: give label names or integer label indices")
    if values.dtype.kind == "f":
        fractional = values[values != np.round(values)]
        shown = f" (e.g. {float(fractional[0])!r})" if len(fractional) else ""
        raise CalibratorError(
            f"y holds floats{shown}: give label names or integer label indices in [0, {k})"
        )
    if values.dtype.kind not in "iu":
        raise CalibratorError(
            f"y must hold label names or integer indices, got dtype {values.dtype}"
        )
    gold = values.astype(np.int64)
    bad = np.flatnonzero((gold < 0) | (gold >= k))
    if len(bad):
        raise CalibratorError(
            f"label index {int(gold[bad[0]])} at position {int(bad[0])} is out of range: "
            f"indices must lie in [0, {k}) for the labels {', '.join(labels)}"
        )
    return gold


def _known(value: Any, index: dict[str, int]) -> bool:
    return (isinstance(value, str) and value in index) or (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and 0 <= int(value) < len(index)
    )


def _index_of(value: Any, index: dict[str, int]) -> int:
    return index[value] if isinstance(value, str) else int(value)


def targets_are_names(y: Any) -> bool:
    """True when ``y`` holds label names (strings) rather than indices."""
    if frame_library(y) is not None:
        y = y.to_numpy()
    values = np.asarray(y)
    return values.dtype.kind in "US" or (
        values.dtype == object and len(values) > 0 and isinstance(values.reshape(-1)[0], str)
    )


def to_frame(matrix: Array, labels: Sequence[str], library: str | None = None) -> Any:
    """``matrix`` as a DataFrame with one column per label (pandas unless ``library="polars"``)."""
    library = library or "pandas"
    try:
        if library == "polars":
            import polars as pl

            return pl.DataFrame({label: matrix[:, i] for i, label in enumerate(labels)})
        import pandas as pd

        return pd.DataFrame(matrix, columns=list(labels))
    except ImportError as exc:
        raise CalibratorError(
            f"as_frame needs {library}: pip install {library} (or ask for a numpy array)"
        ) from exc


__all__ = ["as_matrix", "as_targets", "frame_library", "is_frame", "to_frame"]
