"""The limits of the service's request bodies, defined once.

:mod:`verbcal.serve.schemas` (pydantic, the contract shown at ``/docs``), :mod:`verbcal.serve.wire`
(msgspec, the gate's fast path) and :mod:`verbcal.serve.config` (calibrator names) all read
them from here, so the fast path can never accept what the contract refuses or the reverse.
Limits on the whole request (``--max-items``, ``--max-body-bytes``) are settings of
:class:`~verbcal.serve.config.ServeConfig`.
"""

from __future__ import annotations

MODEL_NAME_MAX = 64
"""Characters in a calibrator (model) name, 1 to this many."""
ITEM_ID_MAX = 256
"""Characters in an item's ``id``, at most this many."""
TEXT_MAX = 100_000
"""Characters in a ``/v1/classify`` item's ``text``, 1 to this many."""
ITEMS_MIN = 1
"""Items in a request, at least this many (the most: ``--max-items``)."""

__all__ = ["ITEMS_MIN", "ITEM_ID_MAX", "MODEL_NAME_MAX", "TEXT_MAX"]
