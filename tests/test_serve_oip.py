"""The Open Inference Protocol v2 routes, driven by a real client from another project (tritonclient)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.utils")

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
        assert meta["inputs"] == [{"name": "probs", "datatype": "FP64", "shape": [-1, 3]}]
        assert [o["name"] for o in meta["outputs"]] == ["probs", "label"]
        assert meta["outputs"][1]["datatype"] == "BYTES"
        assert meta["parameters"] == {
            "labels": ["negative", "neutral", "positive"],
            "method": "temperature",
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
    finally:
        client.close()
