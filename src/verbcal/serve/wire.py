"""The ``/v1/calibrate`` body as msgspec types, for the gate's fast path: decoded and checked
in one pass of compiled code, with each item's ``probs`` kept as its exact JSON text.

These types accept a subset of what :class:`~verbcal.serve.schemas.CalibrateRequest` accepts
(the pydantic models stay the contract, the schema and the error messages): a body they
refuse goes to the FastAPI route, which explains. The tests check, on a table of bodies and
on random ones, that whatever is accepted here is answered byte for byte as the route does.

Keeping ``probs`` as text lets the row cache answer a row it has seen without parsing it:
verbalized distributions repeat, and a client writes the same distribution as the same text.
A text not seen before is read by :func:`row_reader`, which checks it as ``CalibrateItem``
does (every label once, each a finite number ≥ 0, no other key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
import numpy as np

from verbcal.serve.cache import Array, Read
from verbcal.serve.limits import ITEM_ID_MAX, ITEMS_MIN, MODEL_NAME_MAX

Confidence = Annotated[float, msgspec.Meta(ge=0, le=1)]
Probability = Annotated[float, msgspec.Meta(ge=0)]
"""Finite by construction: the JSON decoder refuses numbers past the float range."""


class Item(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    probs: msgspec.Raw
    id: Annotated[str, msgspec.Meta(max_length=ITEM_ID_MAX)] | None = None


class Body(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    items: Annotated[list[Item], msgspec.Meta(min_length=ITEMS_MIN)]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=MODEL_NAME_MAX)] | None = None
    accept_threshold: Confidence | None = None
    set_mass: Confidence | None = None


BODY = msgspec.json.Decoder(Body)
"""Raises ``msgspec.DecodeError`` (or ``ValidationError``, a subclass) on a body it refuses."""


def row_reader(labels: Sequence[str]) -> Read:
    """The reader of ``probs`` objects (their JSON text) for a model with these labels: an
    (n, K) matrix in label order; raises ``msgspec.DecodeError`` on any object that
    ``CalibrateItem.probs`` would refuse."""
    fields = [(f"p{k}", Probability) for k in range(len(labels))]
    rename = {f"p{k}": label for k, label in enumerate(labels)}
    probs = msgspec.defstruct("Probs", fields, rename=rename, forbid_unknown_fields=True, gc=False)
    decoder = msgspec.json.Decoder(list[probs])  # type: ignore[valid-type]
    astuple, k = msgspec.structs.astuple, len(labels)

    def read(texts: Sequence[bytes]) -> Array:
        rows = decoder.decode(b"[" + b",".join(texts) + b"]")
        if len(rows) != len(texts):  # a text held several values (a Raw never does)
            raise msgspec.DecodeError("each text must be one JSON object")
        return np.array([astuple(row) for row in rows], dtype=np.float64).reshape(len(rows), k)

    return read
