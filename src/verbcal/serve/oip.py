"""The Open Inference Protocol (KServe V2; also spoken by Triton and Seldon clients), JSON tensors.

A calibrator is a model with the input ``probs`` (FP64, ``[-1, K]``, columns in the model's
label order), an optional input ``id`` (BYTES, ``[-1]``: the items' ids, as ``/v1`` items'
``id``), and the outputs ``probs`` (FP64, ``[-1, K]``), ``label`` (BYTES, ``[-1]``) and
``id`` (BYTES, ``[-1]``). Inputs may come as JSON ``data`` or in the binary tail (the binary
tensor extension: each input's ``binary_data_size`` bytes, in the order of ``inputs``;
BYTES elements as a 4-byte little-endian length and the UTF-8 bytes).

With ``--log-predictions`` every served row is logged like a ``/v1/calibrate`` item: under
the client's id, or a ``srv-<hex>`` id the ``id`` output returns, so that ``/v1/feedback``
can label it later. The ``id`` output is returned by default when the request sent ids or
the server logs; asked for otherwise (no ids to give) it is a 400.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

import verbcal
from verbcal.serve.calibrate import InputError, calibrated, field_error, refused_rows
from verbcal.serve.monitoring import log_served
from verbcal.serve.registry import Served
from verbcal.serve.schemas import (
    InferInput,
    InferRequest,
    InferResponse,
    JSONBytes,
    Live,
    ModelMetadata,
    Ready,
    ServerMetadata,
    TensorMetadata,
    V2Error,
    raw_body,
)

if TYPE_CHECKING:
    from verbcal.serve.app import Service

OUTPUTS = ("probs", "label", "id")
INPUTS = ("probs", "id")
FLOAT_DTYPES = {"FP64": "<f8", "FP32": "<f4", "FP16": "<f2"}
"""Float datatypes the ``probs`` input accepts, and their little-endian numpy dtypes."""
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "Bad tensors: the message names input and position."},
    401: {"model": V2Error, "description": "Missing or wrong API key."},
    404: {"model": V2Error, "description": "Unknown model."},
    413: {"model": V2Error, "description": "Body too large."},
    422: {"model": V2Error, "description": "Request not in the protocol's shape."},
    429: {"model": V2Error, "description": "Rate limit exceeded: see Retry-After."},
}


def metadata(served: Served) -> ModelMetadata:
    k = len(served.labels)
    return ModelMetadata(
        name=served.name,
        versions=["1"],
        platform="verbcal",
        inputs=[
            TensorMetadata(name="probs", datatype="FP64", shape=[-1, k]),
            TensorMetadata(name="id", datatype="BYTES", shape=[-1]),
        ],
        outputs=[
            TensorMetadata(name="probs", datatype="FP64", shape=[-1, k]),
            TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            TensorMetadata(name="id", datatype="BYTES", shape=[-1]),
        ],
        parameters={
            "labels": list(served.labels),
            "method": served.method,
            "optional_inputs": ["id"],
        },
    )


def _bad(field: str, message: str) -> InputError:
    return InputError([field_error(None, field, message)], status=400, code="bad_tensor")


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in data:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def parse_request(raw: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The JSON part of an infer request and its binary tail (the binary tensor extension)."""
    split = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise _bad(
                "Inference-Header-Content-Length", f"{header_length!r} is not a valid length"
            )
        split = int(header_length)
    try:
        request = InferRequest.model_validate_json(raw[:split])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _bad(where or "body", str(first["msg"])) from exc
    return request, raw[split:]


def input_tensors(
    served: Served, request: InferRequest, binary: bytes, max_rows: int
) -> tuple[np.ndarray, list[str | None]]:
    """The ``probs`` input as an (n, K) matrix and the items' ids (the ``id`` input, else
    None each); errors name the input, row and column."""
    names = [t.name for t in request.inputs]
    if "probs" not in names or len(set(names)) != len(names) or set(names) - set(INPUTS):
        raise _bad("inputs", f"expected the input 'probs' and optionally 'id', got {names}")
    values = _tail_values(request.inputs, binary)
    position = names.index("probs")
    matrix = _probs(served, request.inputs[position], values[position], max_rows, position)
    if "id" not in names:
        return matrix, [None] * len(matrix)
    position = names.index("id")
    return matrix, _ids(request.inputs[position], values[position], len(matrix), position)


def _probs(
    served: Served, tensor: InferInput, flat: list[Any], max_rows: int, position: int
) -> np.ndarray:
    k, where = len(served.labels), f"inputs[{position}]"
    if tensor.datatype not in FLOAT_DTYPES:
        raise _bad(f"{where}.datatype", f"{tensor.datatype!r}: send FP64 (or FP32)")
    if len(tensor.shape) != 2 or tensor.shape[1] != k or tensor.shape[0] < 1:
        raise _bad(
            f"{where}.shape", f"{tensor.shape}: expected [n, {k}] (labels {list(served.labels)})"
        )
    n = tensor.shape[0]
    if n > max_rows:
        raise _bad(f"{where}.shape", f"{n} rows, more than the limit of {max_rows} (--max-items)")
    if len(flat) != n * k:
        raise _bad(f"{where}.data", f"{len(flat)} values for shape {tensor.shape} ({n * k} needed)")
    for position, value in enumerate(flat):
        row, column = divmod(position, k)
        spot = f"{where}.data[{row}][{column}] ({served.labels[column]})"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(spot, f"{value!r} is not a number")
        if not math.isfinite(value) or value < 0:
            raise _bad(spot, f"{value} is not a finite probability ≥ 0")
    matrix = np.asarray(flat, dtype=np.float64).reshape(n, k)
    refused = refused_rows(matrix)
    if refused:
        row, why = refused[0]
        raise _bad(f"{where}.data[{row}]", why)
    return matrix


def _ids(tensor: InferInput, flat: list[Any], n: int, position: int) -> list[str | None]:
    where = f"inputs[{position}]"
    if tensor.datatype != "BYTES" or tensor.shape != [n]:
        raise _bad(where, f"{tensor.datatype} {tensor.shape}: expected BYTES [{n}], one id per row")
    ids = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat]
    for row, value in enumerate(ids):
        if not isinstance(value, str) or not value:
            raise _bad(f"{where}.data[{row}]", f"{value!r} is not an id (a non-empty string)")
    return ids


def _tail_values(tensors: list[InferInput], binary: bytes) -> list[list[Any]]:
    """Each input's values: its JSON ``data`` (flat or nested), or its slice of the binary
    tail (the slices in input order, each ``binary_data_size`` bytes)."""
    out, offset = [], 0
    for position, tensor in enumerate(tensors):
        where = f"inputs[{position}]"
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise _bad(f"{where}.data", "missing: send the values as JSON data or binary")
            out.append(_flatten(tensor.data))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"{where}.parameters.binary_data_size", f"{size!r} is not a byte count")
        chunk, offset = binary[offset : offset + size], offset + size
        if len(chunk) != size:
            raise _bad(
                f"{where}.parameters.binary_data_size",
                f"{size} bytes announced, {len(chunk)} left in the {len(binary)} bytes sent",
            )
        out.append(_decode(tensor, chunk, where))
    if offset != len(binary):
        raise _bad("inputs", f"{len(binary) - offset} bytes of binary data belong to no input")
    return out


def _decode(tensor: InferInput, chunk: bytes, where: str) -> list[Any]:
    """Binary tensor values: little-endian numbers, or length-prefixed BYTES elements."""
    if tensor.datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise _bad(f"{where}.data", "a BYTES element's 4-byte length is cut off")
            length = int.from_bytes(chunk[offset : offset + 4], "little")
            start, offset = offset + 4, offset + 4 + length
            if offset > len(chunk):
                raise _bad(f"{where}.data", f"a BYTES element of {length} bytes is cut off")
            values.append(chunk[start:offset])
        return values
    dtype = FLOAT_DTYPES.get(tensor.datatype)
    if dtype is None or len(chunk) % np.dtype(dtype).itemsize:
        raise _bad(
            f"{where}.parameters.binary_data_size",
            f"{len(chunk)} bytes are no whole number of {tensor.datatype} values",
        )
    numbers: list[Any] = np.frombuffer(chunk, dtype=dtype).astype(np.float64).tolist()
    return numbers


def add_routes(app: FastAPI, service: Service) -> None:
    """Register the v2 routes on ``app``."""

    def served(name: str) -> Served:
        models = service.registry.models
        if name not in models:
            raise InputError(
                [field_error(None, "model", f"unknown model {name!r}; loaded: {sorted(models)}")],
                status=404,
                code="unknown_model",
            )
        return models[name]

    @app.get("/v2", response_model=ServerMetadata, responses=V2_ERRORS, tags=["v2"])
    async def server_metadata() -> ServerMetadata:
        """Server metadata."""
        return ServerMetadata(name="verbcal", version=verbcal.__version__, extensions=[])

    @app.get("/v2/health/live", response_model=Live, tags=["v2"])
    async def live() -> Live:
        """The process answers (no API key needed)."""
        return Live(live=True)

    @app.get(
        "/v2/health/ready",
        response_model=Ready,
        responses={503: {"model": Ready, "description": "Not ready: `reason` says why."}},
        tags=["v2"],
    )
    async def ready() -> Response:
        """Every calibrator is loaded and, with `/v1/classify`, the LLM backend does not refuse
        (no API key needed). 503 while not ready; a refusing backend is probed in the
        background, and a classify request that gets replies clears the refusal."""
        reason = None if service.registry.models else "no calibrator loaded"
        classifier = service.classifier
        if reason is None and classifier is not None and not classifier.ready():
            reason = f"the LLM backend refuses requests: {classifier.refused}"
        body = Ready(ready=reason is None, reason=reason)
        return Response(
            body.model_dump_json(exclude_none=True),
            status_code=200 if reason is None else 503,
            media_type="application/json",
        )

    @app.get("/v2/models/{name}", response_model=ModelMetadata, responses=V2_ERRORS, tags=["v2"])
    async def model_metadata(name: str) -> ModelMetadata:
        """Inputs, outputs, labels (column order) and calibration method of a model."""
        return metadata(served(name))

    @app.get("/v2/models/{name}/ready", response_model=Ready, responses=V2_ERRORS, tags=["v2"])
    async def model_ready(name: str) -> Ready:
        """Whether the model is loaded."""
        served(name)
        return Ready(ready=True)

    @app.post(
        "/v2/models/{name}/infer",
        response_model=InferResponse,
        responses=V2_ERRORS,
        tags=["v2"],
        openapi_extra=raw_body(InferRequest),
    )
    async def infer(name: str, request: Request) -> Response:
        """Calibrate the rows of the ``probs`` tensor (JSON data, or the binary extension)."""
        model = served(name)
        raw = await request.body()
        body, binary = parse_request(raw, request.headers.get("inference-header-content-length"))
        matrix, ids = input_tensors(model, body, binary, service.config.max_items)
        known = service.monitoring is not None or any(i is not None for i in ids)
        default = [o for o in OUTPUTS if o != "id" or known]
        wanted = [o.name for o in body.outputs] if body.outputs else default
        unknown = [o for o in wanted if o not in OUTPUTS]
        if unknown:
            raise _bad("outputs", f"unknown output {unknown[0]!r}; this model has {list(OUTPUTS)}")
        if "id" in wanted and not known:
            raise _bad("outputs", "no ids to return: send the 'id' input, or log predictions")
        rows = calibrated(model, matrix)
        ids = await log_served(service, model, ids, matrix, rows)
        tensors = {
            "probs": {
                "name": "probs",
                "shape": [len(rows), len(model.labels)],
                "datatype": "FP64",
                "data": [value for row in rows for value in row.probs],
            },
            "label": {
                "name": "label",
                "shape": [len(rows)],
                "datatype": "BYTES",
                "data": [model.labels[row.top] for row in rows],
            },
            "id": {"name": "id", "shape": [len(rows)], "datatype": "BYTES", "data": ids},
        }
        service.metrics.count_items(model.name, len(rows))
        content = {
            "model_name": model.name,
            "model_version": "1",
            "id": body.id,
            "outputs": [tensors[o] for o in wanted],
        }
        return JSONBytes(content)
