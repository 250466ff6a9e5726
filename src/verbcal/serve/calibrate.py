"""``/v1/calibrate`` and the OIP ``infer`` route share this: checked rows in, calibrated rows out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic_core import to_json

from verbcal.calibration import CalibratorError
from verbcal.decide import apply_threshold
from verbcal.serve.cache import Row, as_matrix
from verbcal.serve.registry import Served

Array = NDArray[np.float64]


class InputError(Exception):
    """Bad input: one entry per problem, each naming the item index and the field."""

    def __init__(
        self, errors: list[dict[str, Any]], status: int = 422, code: str = "invalid_input"
    ):
        super().__init__(errors[0]["message"] if errors else code)
        self.errors, self.status, self.code = errors, status, code


def field_error(item: int | None, field: str | None, message: str) -> dict[str, Any]:
    """One problem, located as ``items[i].field``."""
    loc = ".".join(p for p in (f"items[{item}]" if item is not None else None, field) if p)
    return {"loc": loc, "item": item, "field": field, "message": message}


def pick_model(models: Mapping[str, Served], name: str | None) -> Served:
    """The calibrator asked for, or the only one loaded."""
    if name is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise InputError(
            [field_error(None, "model", f"several models are loaded: name one of {sorted(models)}")]
        )
    if name not in models:
        raise InputError(
            [field_error(None, "model", f"unknown model {name!r}; loaded: {sorted(models)}")],
            code="unknown_model",
        )
    return models[name]


def checked_rows(served: Served, rows: Sequence[Mapping[str, float]]) -> Array:
    """Label-keyed rows as an (n, K) matrix in the model's label order; errors name item and label."""
    labels, k = served.labels, len(served.labels)
    try:  # the common case in one pass; any missing or extra label is explained below
        values = [[probs[label] for label in labels] for probs in rows]
        if any(len(probs) != k for probs in rows):
            raise KeyError
    except KeyError:
        raise InputError(_label_errors(served, rows)) from None
    return np.array(values, dtype=np.float64)


def item_rows(served: Served, items: Sequence[Any]) -> list[Mapping[str, float]]:
    """Each item's distribution: its ``probs``, or its ``verbal`` phrase read through the
    bundled lexicon as P(``about``) on a binary model; errors name the item and the field."""
    from verbcal.lexicon import parse_verbal

    rows: list[Mapping[str, float]] = []
    errors: list[dict[str, Any]] = []
    labels = served.labels
    for i, item in enumerate(items):
        if item.probs is not None:
            rows.append(item.probs)
            continue
        if len(labels) != 2 or item.about not in labels:
            errors.append(
                field_error(
                    i,
                    "about",
                    f"must be one of the model's two labels {list(labels)}"
                    if len(labels) == 2
                    else f"confidence in words needs a binary model; this one has {list(labels)}",
                )
            )
            continue
        reply = parse_verbal(item.verbal, about=item.about, labels=labels)
        probs = None if reply.p is None else reply.probs(labels, item.about)
        if probs is None:
            errors.append(field_error(i, "verbal", "; ".join(reply.issues)))
            continue
        rows.append(probs)
    if errors:
        raise InputError(errors[:20])
    return rows


def refused_rows(matrix: Array) -> list[tuple[int, str]]:
    """Rows of valid probabilities the calibrators refuse, as (index, why): all zeros, or a
    sum past the largest float (computed as the calibrators compute it)."""
    with np.errstate(over="ignore"):
        sums = matrix @ np.ones(matrix.shape[1])
    usable = (sums > 0) & (sums < np.inf)
    if usable.all():
        return []
    return [
        (i, "every probability is 0" if sums[i] == 0 else "the sum is too large: scale the row")
        for i in np.flatnonzero(~usable).tolist()
    ]


def calibrated(served: Served, matrix: Array) -> list[Row]:
    """Rows in label order through the model's row cache and calibrator; rows the calibrator
    refuses (all zeros, a sum past the largest float) are an InputError naming the items."""
    try:
        return served.cache.calibrate(matrix, served.calibrator.predict_proba)
    except CalibratorError:
        refused = refused_rows(matrix)
        if not refused:
            raise
        raise InputError([field_error(i, "probs", why) for i, why in refused[:20]]) from None


def _label_errors(served: Served, rows: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for i, probs in enumerate(rows):
        errors += [
            field_error(i, f"probs.{label}", f"unknown label; the labels are {list(served.labels)}")
            for label in probs
            if label not in served.index
        ]
        errors += [
            field_error(
                i, f"probs.{label}", "missing: give every label a probability (0 is allowed)"
            )
            for label in served.labels
            if label not in probs
        ]
        if len(errors) >= 20:
            break
    return errors[:20]


def add_decisions(
    items: list[dict[str, Any]],
    rows: Sequence[Row],
    labels: Sequence[str],
    accept_threshold: float | None,
    set_mass: float | None,
) -> None:
    """Add to each item the decisions the request asked for (threshold, prediction set)."""
    if accept_threshold is not None:  # the one rule that applies a threshold (ties at 1e-12)
        accepted = apply_threshold([item["confidence"] for item in items], accept_threshold)
        for item, accept in zip(items, accepted.tolist(), strict=True):
            item["decision"] = "accept" if accept else "abstain"
    if set_mass is not None:
        q = as_matrix(rows)
        order = np.argsort(-q, axis=1, kind="stable")
        mass = np.cumsum(np.take_along_axis(q, order, axis=1), axis=1)
        sizes = np.minimum((mass < set_mass - 1e-12).sum(axis=1) + 1, len(labels)).tolist()
        for item, ranked, size in zip(items, order.tolist(), sizes, strict=True):
            item["prediction_set"] = [labels[j] for j in ranked[:size]]


def calibrate_rows(
    served: Served,
    rows: Sequence[Mapping[str, float]],
    ids: Sequence[str | None],
    accept_threshold: float | None = None,
    set_mass: float | None = None,
) -> list[dict[str, Any]]:
    """Calibrated items (id, probs, top label, its confidence, decisions) for label-keyed rows."""
    out = calibrated(served, checked_rows(served, rows))
    return calibrated_items(served, ids, out, accept_threshold, set_mass)


def calibrated_items(
    served: Served,
    ids: Sequence[str | None],
    rows: Sequence[Row],
    accept_threshold: float | None = None,
    set_mass: float | None = None,
) -> list[dict[str, Any]]:
    """The items of an answer (id, probs, top label, its confidence, decisions)."""
    labels = served.labels
    items = [
        {
            "id": i,
            "probs": dict(zip(labels, row.probs)),  # noqa: B905
            "label": labels[row.top],
            "confidence": row.confidence,
        }
        for i, row in zip(ids, rows)  # noqa: B905
    ]
    if accept_threshold is not None or set_mass is not None:
        add_decisions(items, rows, labels, accept_threshold, set_mass)
    return items


def _ids_json(ids: Sequence[str | None]) -> list[bytes]:
    """Each id as JSON: one encoder call for all, split at its commas when no id holds one
    (JSON escapes never make one), else one call per id."""
    parts = to_json(ids)[1:-1].split(b",")
    return parts if len(parts) == len(ids) else [to_json(i) for i in ids]


def calibrate_json(served: Served, ids: Sequence[str | None], rows: Sequence[Row]) -> bytes:
    """The ``/v1/calibrate`` answer (no decisions asked) as JSON bytes, from rendered rows.

    Byte for byte what ``to_json`` writes for the items of :func:`calibrated_items`.
    """
    head = to_json({"model": served.name, "method": served.method})[:-1] + b',"items":['
    parts = [b'{"id":', b"", b",", b"", b"},"] * len(rows)
    parts[1::5] = _ids_json(ids)
    parts[3::5] = [row.json for row in rows]
    parts[-1] = b"}]}"  # the last item closes the list and the answer
    return head + b"".join(parts)
