"""The Ray and Spark engines on real local clusters: same numbers as local, input order, errors.

One Ray cluster and one Spark session serve the whole test session (see conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verbcal import datasets
from verbcal.calibration import Calibrator, make_calibrator
from verbcal.engines import apply
from verbcal.engines.arrow import calibrate_table

pytestmark = [pytest.mark.server, pytest.mark.slow]

LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def calibrator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    preds = datasets.load("recorded:tweets", LABELS)
    fitted = make_calibrator("temperature").fit(preds.probs, preds.y, labels=preds.labels)
    path = tmp_path_factory.mktemp("cal") / "ts.json"
    fitted.save(path)
    return path


def make_input(
    folder: Path, n: int = 600, files: int = 3, layout: str = "struct", row_group: int | None = None
) -> Path:
    """``files`` Parquet files of ``n`` rows in all (row groups of ``row_group`` rows), with
    zeros and a few null rows."""
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(len(LABELS)), n)
    p[::9, 2] = 0.0
    null = np.zeros(n, bool)
    null[::50] = True
    if layout == "struct":
        children = [pa.array(p[:, k]) for k in range(len(LABELS))]
        probs: dict[str, Any] = {
            "probs": pa.StructArray.from_arrays(children, list(LABELS), mask=pa.array(null))
        }
    else:
        probs = {f"p_{x}": pa.array(p[:, k], mask=null) for k, x in enumerate(LABELS)}
    table = pa.table({"id": [f"item-{i:05d}" for i in range(n)], **probs, "row": range(n)})
    folder.mkdir(parents=True)
    step = -(-n // files)
    for index in range(files):
        part = table.slice(index * step, step)
        pq.write_table(part, folder / f"part-{index}.parquet", row_group_size=row_group)
    return folder


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def probs_by_id(records: list[dict[str, Any]], layout: str) -> dict[str, list[float] | None]:
    def row(r: dict[str, Any]) -> list[float] | None:
        if layout == "struct":
            return None if r["probs"] is None else [r["probs"][x] for x in LABELS]
        values = [r[f"p_{x}"] for x in LABELS]
        return None if values[0] is None else values

    return {r["id"]: row(r) for r in records}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, row in a.items():
        if row is None:
            assert b[key] is None, key
        else:
            np.testing.assert_allclose(b[key], row, rtol=0, atol=1e-12, err_msg=key)


def read_shards(folder: Path, out_format: str) -> list[dict[str, Any]]:
    if out_format == "parquet":
        return pq.read_table(folder).to_pylist()
    shards = [p for p in sorted(folder.glob("*.json*")) if not p.name.startswith((".", "_"))]
    return [r for path in shards for r in read_jsonl(path)]


@pytest.mark.parametrize("layout", ["struct", "columns"])
def test_local_ray_and_spark_agree_in_input_order(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path, layout: str
) -> None:
    data = make_input(tmp_path / "in", layout=layout)
    outs = {}
    for engine in ("local", "ray", "spark"):
        out = tmp_path / f"{engine}.jsonl"
        assert apply(engine, calibrator, data, out) == 600
        outs[engine] = read_jsonl(out)
    local = outs["local"]
    assert [r["row"] for r in local] == list(range(600))  # input order
    for engine in ("ray", "spark"):
        assert [r["id"] for r in outs[engine]] == [r["id"] for r in local], engine
        assert_same(probs_by_id(local, layout), probs_by_id(outs[engine], layout))
        assert [r["top_label"] for r in outs[engine]] == [r["top_label"] for r in local]
    # and the same as the calibrator applied to the whole matrix at once
    whole = pq.read_table(data)
    expected = calibrate_table(whole, Calibrator.load(calibrator)).to_pylist()
    assert_same(probs_by_id(expected, layout), probs_by_id(local, layout))


@pytest.mark.parametrize("out_format", ["parquet", "jsonl"])
def test_shards_and_single_parquet_files(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path, out_format: str
) -> None:
    data = make_input(tmp_path / "in")
    reference = probs_by_id(
        calibrate_table(pq.read_table(data), Calibrator.load(calibrator)).to_pylist(), "struct"
    )
    for engine in ("local", "ray", "spark"):
        folder = tmp_path / f"{engine}-shards"
        assert apply(engine, calibrator, str(data / "*.parquet"), folder, out_format) == 600
        assert_same(reference, probs_by_id(read_shards(folder, out_format), "struct"))
        single = tmp_path / f"{engine}.parquet"
        apply(engine, calibrator, data, single)
        rows = pq.read_table(single).to_pylist()
        assert [r["row"] for r in rows] == list(range(600)), engine
        assert_same(reference, probs_by_id(rows, "struct"))


def test_many_pieces_keep_input_order(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path
) -> None:
    """24 pieces (row groups): more than the Ray driver keeps in flight, so it must wait in order."""
    data = make_input(tmp_path / "in", row_group=25)
    reference = probs_by_id(
        calibrate_table(pq.read_table(data), Calibrator.load(calibrator)).to_pylist(), "struct"
    )
    for engine in ("ray", "spark"):
        single = tmp_path / f"{engine}.parquet"
        assert apply(engine, calibrator, data, single) == 600
        rows = pq.read_table(single).to_pylist()
        assert [r["row"] for r in rows] == list(range(600)), engine
        assert_same(reference, probs_by_id(rows, "struct"))
        shards = tmp_path / f"{engine}-shards"
        assert apply(engine, calibrator, data, shards, "parquet") == 600
        assert len(list(shards.glob("part-*.parquet"))) == 24, engine
        assert_same(reference, probs_by_id(read_shards(shards, "parquet"), "struct"))


def test_python_apis_take_and_return_engine_frames(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path
) -> None:
    from verbcal.engines.ray import calibrate_dataset
    from verbcal.engines.spark import calibrate_dataframe

    data = make_input(tmp_path / "in", n=90)
    table = pq.read_table(data)
    fitted = Calibrator.load(calibrator)
    expected = probs_by_id(calibrate_table(table, fitted).to_pylist(), "struct")
    dataset = calibrate_dataset(ray_cluster.data.from_arrow(table), fitted, batch_size=16)
    assert isinstance(dataset, ray_cluster.data.Dataset)
    assert_same(expected, probs_by_id(dataset.take_all(), "struct"))
    frame = calibrate_dataframe(spark.read.parquet(str(data)), fitted)
    assert {"probs", "verbalized_probs", "top_label", "confidence"} <= set(frame.columns)
    rows = [r.asDict(recursive=True) for r in frame.collect()]
    assert_same(expected, probs_by_id(rows, "struct"))
    maps = spark.createDataFrame(
        [(r["id"], r["probs"]) for r in table.to_pylist()], "id string, probs map<string, double>"
    )
    from_map = [r.asDict(recursive=True) for r in calibrate_dataframe(maps, fitted).collect()]
    assert_same(expected, probs_by_id(from_map, "struct"))


def test_a_bad_row_stops_the_job_with_its_item_and_field(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path
) -> None:
    rows = [
        {"id": f"ok-{n}", "p_negative": 0.2, "p_neutral": 0.3, "p_positive": 0.5} for n in range(20)
    ]
    rows[13] = {"id": "the-bad-one", "p_negative": -0.2, "p_neutral": 0.7, "p_positive": 0.5}
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "x.parquet")
    for engine in ("ray", "spark"):
        with pytest.raises(ValueError) as info:
            apply(engine, calibrator, tmp_path / "in", tmp_path / f"{engine}.jsonl")
        message = str(info.value)
        assert "x.parquet, row 14 (item id 'the-bad-one'), field 'p_negative'" in message, engine
        assert "negative" in message and "\n" not in message


def test_ray_shards_are_all_or_nothing(ray_cluster: Any, calibrator: Path, tmp_path: Path) -> None:
    """A bad later file: no shard left in --out (the retry is not refused), then it works."""
    data = make_input(tmp_path / "in", n=90)
    good = pq.read_table(data / "part-2.parquet")
    rows = good.to_pylist()
    rows[3]["probs"] = {"negative": -0.2, "neutral": 0.7, "positive": 0.5}
    pq.write_table(pa.Table.from_pylist(rows, schema=good.schema), data / "part-2.parquet")
    out = tmp_path / "out" / "shards"
    with pytest.raises(ValueError, match=r"part-2\.parquet, row 4 \(item id 'item-00063'\)"):
        apply("ray", calibrator, data, out, "parquet", overwrite=False)
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []
    pq.write_table(good, data / "part-2.parquet")
    assert apply("ray", calibrator, data, out, "parquet", overwrite=False) == 90
    assert len(list(out.glob("part-*.parquet"))) == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ray_apply_connects_to_a_cluster_by_address(calibrator: Path, tmp_path: Path) -> None:
    """`ray start --head` in its own process; the CLI (another process) connects by address."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    ray_bin = Path(sys.executable).with_name("ray")
    # every port its own: the session's cluster (and any other on this machine) keeps its own
    ports = [f"--{name}-port={free_port()}" for name in ("dashboard-agent-grpc", "dashboard-agent-listen", "metrics-export", "runtime-env-agent", "node-manager", "object-manager")]  # fmt: skip
    temp = tempfile.mkdtemp(prefix="vc-ray-")  # short: Unix socket paths are limited to ~107 bytes
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", *ports, "--num-cpus=1",
         "--include-dashboard=false", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        data = make_input(tmp_path / "in", n=120)
        verbcal = Path(sys.executable).with_name("verbcal")
        command = [str(verbcal), "apply", "--engine", "ray", "--address", f"127.0.0.1:{port}",
                   "--calibrator", str(calibrator), "--data", str(data), "--out", str(tmp_path / "out.jsonl")]  # fmt: skip
        done = None
        for _ in range(10):  # the head takes a few seconds to accept drivers
            assert head.poll() is None, "ray start --head exited"
            with contextlib.suppress(subprocess.TimeoutExpired):
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
                if done.returncode == 0:
                    break
            time.sleep(3)
        assert done is not None and done.returncode == 0, done and done.stderr[-2000:]
        assert "wrote 120 records" in done.stdout
        local = tmp_path / "local.jsonl"
        apply("local", calibrator, data, local)
        assert_same(
            probs_by_id(read_jsonl(local), "struct"),
            probs_by_id(read_jsonl(tmp_path / "out.jsonl"), "struct"),
        )
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head drains for up to 30 s, then stops
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(90)
        with contextlib.suppress(ProcessLookupError):  # whatever of its process group is left
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("engine", ["ray", "spark"])
def test_applying_an_applied_file_again_changes_nothing(
    ray_cluster: Any, spark: Any, calibrator: Path, tmp_path: Path, engine: str
) -> None:
    """The engines read verbalized_probs of an applied file as the input (they refused it)."""
    data = make_input(tmp_path / "in", n=120, files=2)
    once, twice = tmp_path / "once.parquet", tmp_path / "twice.parquet"
    assert apply(engine, calibrator, data, once) == 120
    assert apply(engine, calibrator, once, twice) == 120
    assert pq.read_table(twice).equals(pq.read_table(once))
