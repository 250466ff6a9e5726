"""The body limits are defined once (serve/limits.py): the pydantic contract and the msgspec
fast path accept and refuse the same bodies at each limit."""

from __future__ import annotations

import json

import msgspec
import pytest
from pydantic import ValidationError

from verbcal.serve import limits
from verbcal.serve.config import ServeConfig, ServeConfigError
from verbcal.serve.schemas import CalibrateRequest, ClassifyRequest
from verbcal.serve.wire import BODY


def body(model: str | None = None, item_id: str | None = None, n_items: int = 1) -> bytes:
    item: dict[str, object] = {"probs": {"no": 0.2, "yes": 0.8}}
    if item_id is not None:
        item["id"] = item_id
    out: dict[str, object] = {"items": [item] * n_items}
    if model is not None:
        out["model"] = model
    return json.dumps(out).encode()


def accepted_by_both(raw: bytes) -> tuple[bool, bool]:
    try:
        BODY.decode(raw)
        fast = True
    except msgspec.DecodeError:
        fast = False
    try:
        CalibrateRequest.model_validate_json(raw)
        contract = True
    except ValidationError:
        contract = False
    return fast, contract


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (body(model="m" * limits.MODEL_NAME_MAX), True),
        (body(model="m" * (limits.MODEL_NAME_MAX + 1)), False),
        (body(model=""), False),
        (body(item_id="i" * limits.ITEM_ID_MAX), True),
        (body(item_id="i" * (limits.ITEM_ID_MAX + 1)), False),
        (body(n_items=limits.ITEMS_MIN), True),
        (body(n_items=limits.ITEMS_MIN - 1), False),
    ],
)
def test_fast_path_and_contract_share_each_limit(raw: bytes, ok: bool) -> None:
    assert accepted_by_both(raw) == (ok, ok)


def test_text_and_calibrator_name_limits() -> None:
    text = {"items": [{"text": "t" * limits.TEXT_MAX}]}
    ClassifyRequest.model_validate(text)
    with pytest.raises(ValidationError):
        ClassifyRequest.model_validate({"items": [{"text": "t" * (limits.TEXT_MAX + 1)}]})
    ServeConfig(calibrators={"m" * limits.MODEL_NAME_MAX: "ts.json"})
    with pytest.raises(ServeConfigError, match=f"max {limits.MODEL_NAME_MAX}"):
        ServeConfig(calibrators={"m" * (limits.MODEL_NAME_MAX + 1): "ts.json"})
