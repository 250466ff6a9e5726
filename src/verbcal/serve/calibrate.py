"""``/v1/calibrate`` and the OIP ``infer`` route share this: checked rows in, calibrated rows out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

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


def probs_matrix(served: Served, rows: Sequence[Mapping[str, float]]) -> Array:
    """Label-keyed rows as an (n, K) matrix in the model's label order; errors name item and label."""
    k = len(served.labels)
    matrix = np.zeros((len(rows), k))
    errors: list[dict[str, Any]] = []
    for i, probs in enumerate(rows):
        found = len(errors)
        for label, value in probs.items():
            column = served.index.get(label)
            if column is None:
                errors.append(
                    field_error(
                        i, f"probs.{label}", f"unknown label; the labels are {list(served.labels)}"
                    )
                )
            else:
                matrix[i, column] = value
        if len(errors) > found or len(probs) != k:
            for label in served.labels:
                if label not in probs:
                    errors.append(
                        field_error(
                            i,
                            f"probs.{label}",
                            "missing: give every label a probability (0 is allowed)",
                        )
                    )
        elif not matrix[i].any():
            errors.append(field_error(i, "probs", "every probability is 0"))
        if len(errors) >= 20:
            break
    if errors:
        raise InputError(errors)
    return matrix


def decisions(
    q: Array, labels: Sequence[str], accept_threshold: float | None, set_mass: float | None
) -> list[dict[str, Any]]:
    """Per row: top label and confidence, plus the decisions the request asked for."""
    top = q.argmax(axis=1)
    out: list[dict[str, Any]] = []
    order = np.argsort(-q, axis=1, kind="stable") if set_mass is not None else None
    for i, k in enumerate(top.tolist()):
        confidence = float(q[i, k])
        row: dict[str, Any] = {"label": labels[k], "confidence": confidence}
        if accept_threshold is not None:
            row["decision"] = "accept" if confidence >= accept_threshold else "abstain"
        if order is not None and set_mass is not None:
            mass = np.cumsum(q[i, order[i]])
            size = int(np.searchsorted(mass, set_mass - 1e-12)) + 1
            row["prediction_set"] = [labels[j] for j in order[i, : min(size, len(labels))]]
        out.append(row)
    return out


def calibrate_rows(
    served: Served,
    rows: Sequence[Mapping[str, float]],
    ids: Sequence[str | None],
    accept_threshold: float | None = None,
    set_mass: float | None = None,
) -> list[dict[str, Any]]:
    """Calibrated items (id, probs, label, confidence, decisions) for label-keyed rows."""
    q = served.calibrator.predict_proba(probs_matrix(served, rows))
    labels = served.labels
    items = []
    for item_id, row, extra in zip(
        ids, q.tolist(), decisions(q, labels, accept_threshold, set_mass), strict=True
    ):
        items.append({"id": item_id, "probs": dict(zip(labels, row, strict=True)), **extra})
    return items
