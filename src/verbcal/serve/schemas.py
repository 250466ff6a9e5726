"""Request and response bodies (pydantic): the service's contract, shown at ``/docs``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

from verbcal.serve.limits import ITEM_ID_MAX, ITEMS_MIN, MODEL_NAME_MAX, TEXT_MAX

Probability = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
"""A verbalized probability: a finite number ≥ 0 (rows are normalised to sum 1)."""
Confidence = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]
ItemId = Annotated[str, Field(max_length=ITEM_ID_MAX)]
Status = Literal["ok", "repaired", "failed", "error"]


class JSONBytes(Response):
    """A JSON response serialised by pydantic-core (floats in shortest round-trip form)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content)


Body = TypeVar("Body", bound=BaseModel)


def raw_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body a route parses itself (one pass of pydantic-core from the bytes)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The body validated straight from its bytes; errors go to the validation handler."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decisions(_Strict):
    """Optional decisions per item, computed from the calibrated distribution."""

    accept_threshold: Confidence | None = Field(
        None,
        description="Answer 'accept' when the top calibrated probability is at least this,"
        " else 'abstain'.",
    )
    set_mass: Confidence | None = Field(
        None,
        description="Return the smallest set of labels whose calibrated probabilities sum to"
        " at least this (most probable first).",
    )


class CalibrateItem(_Strict):
    id: ItemId | None = Field(None, description="Your identifier, echoed back.")
    verbal: str | None = Field(
        None,
        max_length=200,
        description="Instead of probs, for a binary model: confidence in words, e.g. 'very "
        "likely', read through the bundled lexicon as P(about).",
    )
    about: str | None = Field(
        None, max_length=200, description="With `verbal`: the label the phrase speaks of."
    )
    probs: dict[str, Probability] | None = Field(
        None,
        validate_default=True,
        description="The verbalized probability of every label of the model (normalised to "
        "sum 1); or give `verbal` and `about` instead.",
    )

    @field_validator("probs")
    @classmethod
    def _probs_or_words(
        cls, value: dict[str, float] | None, info: ValidationInfo
    ) -> dict[str, float] | None:
        verbal = info.data.get("verbal")
        if value is None and verbal is None:
            raise ValueError("missing: give probs, or verbal with about")
        if value is not None and verbal is not None:
            raise ValueError("give either probs or verbal, not both")
        return value

    @model_validator(mode="after")
    def _about(self) -> CalibrateItem:
        if self.verbal is not None and not self.about:
            raise ValueError("verbal needs about: the label the phrase speaks of")
        return self


class CalibrateRequest(Decisions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "sentiment",
                    "items": [{"id": "t1", "probs": {"negative": 0.1, "positive": 0.9}}],
                    "accept_threshold": 0.8,
                }
            ]
        },
    )
    model: ModelName | None = Field(
        None, description="Calibrator name; optional when one is loaded."
    )
    items: list[CalibrateItem] = Field(min_length=ITEMS_MIN)


class Calibrated(BaseModel):
    id: str | None = None
    probs: dict[str, float] = Field(
        description="Calibrated probabilities, in the model's label order."
    )
    label: str = Field(description="The most probable label.")
    confidence: float = Field(description="Its calibrated probability.")
    decision: Literal["accept", "abstain"] | None = None
    prediction_set: list[str] | None = None


class CalibrateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sentiment",
                    "method": "temperature",
                    "items": [
                        {
                            "id": "t1",
                            "probs": {"negative": 0.19, "positive": 0.81},
                            "label": "positive",
                            "confidence": 0.81,
                            "decision": "accept",
                        }
                    ],
                }
            ]
        }
    )
    model: str
    method: str
    items: list[Calibrated]


class ClassifyItem(_Strict):
    id: ItemId | None = Field(None, description="Your identifier, echoed back.")
    text: str = Field(min_length=1, max_length=TEXT_MAX, description="The text to classify.")


class ClassifyRequest(Decisions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [{"id": "r1", "text": "A wonderful, moving film."}]}]
        },
    )
    items: list[ClassifyItem] = Field(min_length=ITEMS_MIN)


class Classified(BaseModel):
    id: str | None = None
    status: Status = Field(
        description="ok: clean reply; repaired: parsed after repair; failed: no distribution"
        " in the reply; error: the request failed."
    )
    verbalized_probs: dict[str, float] | None = None
    probs: dict[str, float] | None = None
    label: str | None = None
    confidence: float | None = None
    issues: list[str] = []
    decision: Literal["accept", "abstain"] | None = None
    prediction_set: list[str] | None = None


class ClassifyResponse(BaseModel):
    model: str
    method: str
    items: list[Classified]


class ModelInfo(BaseModel):
    name: str
    method: str
    labels: list[str]
    path: str
    loaded_at: float


class ModelList(BaseModel):
    models: list[ModelInfo]
    generation: int = Field(description="Counts successful loads (1 at start, +1 per reload).")


class FieldError(BaseModel):
    loc: str = Field(description="Where, e.g. items[3].probs.positive")
    item: int | None = Field(None, description="Index of the item in the request's list.")
    field: str | None = Field(None, description="The field within that item.")
    message: str


class ErrorInfo(BaseModel):
    status: int
    code: str
    message: str
    errors: list[FieldError] = []


class ErrorResponse(BaseModel):
    error: ErrorInfo
    request_id: str


# ---------------------------------------------------------------- Open Inference Protocol (v2)


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {"name": "probs", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 0.9]}
                    ]
                }
            ]
        }
    )
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput]


class V2Error(BaseModel):
    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    reason: str | None = None
    """Why not ready (absent when ready)."""


RAW_BODIES: list[type[BaseModel]] = [CalibrateRequest, InferRequest]
"""Bodies the routes parse themselves (their schemas are added to the OpenAPI components)."""
