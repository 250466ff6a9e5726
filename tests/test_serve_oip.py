"""The Open Inference Protocol v2 routes, driven by a real client from another project (tritonclient)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.utils")
pytest.importorskip("httpx")

import httpx
import tritonclient.http as httpclient
import tritonclient.utils as utils

from serve_helpers import ServerThread, fit_file
from verbcal.calibration import Calibrator
from verbcal.serve import ServeConfig, create_app

pytestmark = pytest.mark.server
KEY = "vk-oip-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}  # copied per call: tritonclient adds to the dict


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    path = fit_file(tmp_path_factory.mktemp("oip") / "ts.json")
    config = ServeConfig(calibrators={"tweets": str(path)}, extra_keys=(KEY,), max_items=50)
    with ServerThread(create_app(config)) as running:
        yield f"127.0.0.1:{running.port}", path


def infer(
    client: httpclient.InferenceServerClient, probs: np.ndarray, binary: bool = False, **kw: object
) -> object:
    tensor = httpclient.InferInput("probs", list(probs.shape), "FP64")
    tensor.set_data_from_numpy(probs, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probs", binary_data=False),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]
    return client.infer("tweets", [tensor], outputs=outputs, headers=dict(AUTH), **kw)


def test_health_metadata_and_infer(served: tuple[str, Path]) -> None:
    url, path = served
    client = httpclient.InferenceServerClient(url=url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("tweets", headers=dict(AUTH))
        meta = client.get_model_metadata("tweets", headers=dict(AUTH))
        assert meta["inputs"] == [
            {"name": "probs", "datatype": "FP64", "shape": [-1, 3]},
            {"name": "id", "datatype": "BYTES", "shape": [-1]},
        ]
        assert [o["name"] for o in meta["outputs"]] == ["probs", "label", "id"]
        assert meta["outputs"][1]["datatype"] == "BYTES"
        assert meta["parameters"] == {
            "labels": ["negative", "neutral", "positive"],
            "method": "temperature",
            "optional_inputs": ["id"],
        }
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(3), size=40)
        result = infer(client, probs, request_id="batch-1")
        expected = Calibrator.load(path).predict_proba(probs)
        got = result.as_numpy("probs")
        assert got.shape == (40, 3) and np.max(np.abs(got - expected)) <= 1e-12
        labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
        names = np.array(["negative", "neutral", "positive"])
        assert labels == names[expected.argmax(axis=1)].tolist()
        assert result.get_response()["id"] == "batch-1"
        binary = infer(client, probs, binary=True)  # the binary tensor extension for the input
        assert np.max(np.abs(binary.as_numpy("probs") - expected)) <= 1e-12
    finally:
        client.close()


def test_errors_reach_the_client_with_a_message(served: tuple[str, Path]) -> None:
    url, _ = served
    client = httpclient.InferenceServerClient(url=url)
    try:
        with pytest.raises(utils.InferenceServerException, match=r"expected \[n, 3\]"):
            infer(client, np.full((2, 2), 0.5))
        with pytest.raises(utils.InferenceServerException, match=r"data\[1\]\[2\] \(positive\)"):
            infer(client, np.array([[0.2, 0.3, 0.5], [0.2, 0.3, -0.5]]))
        with pytest.raises(utils.InferenceServerException, match="limit of 50"):
            infer(client, np.full((51, 3), 1 / 3))
        with pytest.raises(utils.InferenceServerException, match="unknown model"):
            client.get_model_metadata("nope", headers=dict(AUTH))
        assert not client.is_model_ready("nope", headers=dict(AUTH))
        with pytest.raises(utils.InferenceServerException, match="missing API key"):
            client.get_model_metadata("tweets")
        with pytest.raises(utils.InferenceServerException, match="no ids to return"):
            client.infer(  # nothing is logged and no ids were sent
                "tweets",
                [_probs_input(np.full((2, 3), 1 / 3))],
                outputs=[httpclient.InferRequestedOutput("id", binary_data=False)],
                headers=dict(AUTH),
            )
        bad_ids = _ids_input(["a", ""])
        with pytest.raises(utils.InferenceServerException, match=r"data\[1\]"):
            client.infer(
                "tweets", [_probs_input(np.full((2, 3), 1 / 3)), bad_ids], headers=dict(AUTH)
            )
    finally:
        client.close()


def _probs_input(probs: np.ndarray, binary: bool = False) -> httpclient.InferInput:
    tensor = httpclient.InferInput("probs", list(probs.shape), "FP64")
    tensor.set_data_from_numpy(probs, binary_data=binary)
    return tensor


def _ids_input(ids: list[str], binary: bool = False) -> httpclient.InferInput:
    tensor = httpclient.InferInput("id", [len(ids)], "BYTES")
    tensor.set_data_from_numpy(np.array(ids, dtype=object), binary_data=binary)
    return tensor


def _text(values: np.ndarray) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in values]


def test_logged_rows_carry_ids_that_feedback_labels(tmp_path: Path) -> None:
    """With --log-predictions every OIP row is logged under the client's id (the ``id``
    input, JSON or binary) or a server id the ``id`` output returns; feedback labels both."""
    path = fit_file(tmp_path / "ts.json")
    log = tmp_path / "log.sqlite"
    config = ServeConfig(
        calibrators={"tweets": str(path)}, extra_keys=(KEY,), log_predictions=str(log)
    )
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=6)
    with ServerThread(create_app(config)) as running:
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{running.port}")
        try:
            mine = ["a-0", "a-1", "a-2"]
            named = client.infer(
                "tweets",
                [_probs_input(probs[:3], binary=True), _ids_input(mine, binary=True)],
                headers=dict(AUTH),
            )
            assert _text(named.as_numpy("id")) == mine
            json_ids = client.infer(
                "tweets", [_probs_input(probs[3:4]), _ids_input(["b-0"])], headers=dict(AUTH)
            )
            assert _text(json_ids.as_numpy("id")) == ["b-0"]
            anonymous = client.infer("tweets", [_probs_input(probs[4:])], headers=dict(AUTH))
            server_ids = _text(anonymous.as_numpy("id"))
            assert len(server_ids) == 2 and all(i.startswith("srv-") for i in server_ids)
            expected = Calibrator.load(path).predict_proba(probs)
            assert np.max(np.abs(anonymous.as_numpy("probs") - expected[4:])) <= 1e-12
        finally:
            client.close()
        ids = [*mine, "b-0", *server_ids]
        feedback = httpx.post(
            f"{running.url}/v1/feedback",
            json={"items": [{"id": i, "label": "neutral"} for i in ids]},
            headers=AUTH,
        )
        assert feedback.status_code == 200 and feedback.json() == {"labelled": 6}
    with sqlite3.connect(log) as db:
        rows = db.execute(
            "SELECT id, raw, calibrated, label FROM predictions ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == ids and {r[3] for r in rows} == {"neutral"}
    assert np.allclose([json.loads(r[1]) for r in rows], probs, rtol=0, atol=1e-15)
    assert np.max(np.abs(np.array([json.loads(r[2]) for r in rows]) - expected)) <= 1e-12
