"""The Arrow calibration step and the local engine; Parquet predictions and items; the CLI on Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from verbcal import datasets
from verbcal.calibration import Calibrator, make_calibrator
from verbcal.cli import app
from verbcal.engines.arrow import (
    apply_local,
    calibrate_piece,
    calibrate_table,
    output_schema,
    parquet_pieces,
)
from verbcal.predictions import PredictionsError, read_predictions, write_records
from verbcal.task import ItemsError, Task, read_items

LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def calibrator() -> Calibrator:
    preds = datasets.load("recorded:tweets", LABELS)
    return make_calibrator("temperature").fit(preds.probs, preds.y, labels=preds.labels)


def dirichlet(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet(np.ones(len(LABELS)), n)
    p[::7, 0] = 0.0  # zeros: the floor matters
    return p


def struct_table(p: np.ndarray, nulls: tuple[int, ...] = ()) -> pa.Table:
    mask = np.zeros(len(p), bool)
    mask[list(nulls)] = True
    probs = pa.StructArray.from_arrays(
        [pa.array(p[:, k]) for k in range(len(LABELS))], list(LABELS), mask=pa.array(mask)
    )
    ids = [f"i{n}" for n in range(len(p))]
    return pa.table({"id": ids, "probs": probs, "source": ["s"] * len(p)})


def test_struct_layout_matches_the_calibrator(calibrator: Calibrator) -> None:
    p = dirichlet(50)
    out = calibrate_table(struct_table(p, nulls=(3,)), calibrator)
    assert out.schema == output_schema(struct_table(p).schema, LABELS)
    rows = out.to_pylist()
    expected = calibrator.predict_proba(p)
    for n, row in enumerate(rows):
        assert row["id"] == f"i{n}" and row["source"] == "s"  # passed through, in order
        if n == 3:  # no distribution: nothing invented
            assert row["probs"] is None and row["top_label"] is None and row["confidence"] is None
            continue
        got = [row["probs"][label] for label in LABELS]
        np.testing.assert_allclose(got, expected[n], rtol=0, atol=1e-15)
        assert row["verbalized_probs"] == dict(zip(LABELS, p[n], strict=True))
        assert row["top_label"] == LABELS[int(np.argmax(expected[n]))]
        assert row["confidence"] == pytest.approx(expected[n].max(), abs=1e-15)


def test_map_and_column_layouts_agree_with_struct(calibrator: Calibrator) -> None:
    p = dirichlet(30, seed=1)
    reference = calibrate_table(struct_table(p), calibrator).column("probs").to_pylist()
    shuffled = [list(reversed(LABELS))] * len(p)  # map keys in another order than the labels
    maps = pa.array(
        [
            [(label, float(row[LABELS.index(label)])) for label in order]
            for row, order in zip(p, shuffled, strict=True)
        ],
        pa.map_(pa.string(), pa.float64()),
    )
    from_map = calibrate_table(pa.table({"probs": maps}), calibrator)
    assert from_map.column("probs").to_pylist() == reference
    columns = {f"p_{label}": p[:, k] for k, label in enumerate(LABELS)}
    from_columns = calibrate_table(pa.table({"id": range(len(p)), **columns}), calibrator)
    got = np.column_stack([from_columns.column(f"p_{label}").to_numpy() for label in LABELS])
    np.testing.assert_array_equal(got, np.array([[r[x] for x in LABELS] for r in reference]))
    assert from_columns.column("verbalized_p_neutral").to_pylist() == list(p[:, 1])


@pytest.mark.parametrize(
    ("table", "field", "problem"),
    [
        (
            pa.table(
                {
                    "id": ["a", "b"],
                    "p_negative": [0.5, -0.1],
                    "p_neutral": [0.2, 0.6],
                    "p_positive": [0.3, 0.5],
                }
            ),
            "p_negative",
            "negative",
        ),
        (
            pa.table(
                {
                    "id": ["a", "b"],
                    "p_negative": [0.5, None],
                    "p_neutral": [0.2, 0.6],
                    "p_positive": [0.3, 0.4],
                }
            ),
            "p_negative",
            "missing",
        ),
        (
            pa.table(
                {
                    "id": ["a", "b"],
                    "p_negative": [0.5, 0.0],
                    "p_neutral": [0.5, 0.0],
                    "p_positive": [0.0, 0.0],
                }
            ),
            "probs",
            "every probability is 0",
        ),
        (
            pa.table(
                {
                    "id": ["a", "b"],
                    "probs": pa.array(
                        [[("negative", 1.0)], [("negative", 0.5), ("maybe", 0.5)]],
                        pa.map_(pa.string(), pa.float64()),
                    ),
                }
            ),
            "probs.maybe",
            "unknown label",
        ),
    ],
)
def test_bad_values_name_item_and_field(
    calibrator: Calibrator, table: pa.Table, field: str, problem: str
) -> None:
    with pytest.raises(PredictionsError) as info:
        calibrate_table(table, calibrator)
    assert info.value.field == field and problem in info.value.problem
    assert "item id 'b'" in str(info.value) and info.value.fix


def test_schema_problems_are_caught_before_any_row(calibrator: Calibrator) -> None:
    two = pa.table({"p_negative": [0.5], "p_positive": [0.5]})
    with pytest.raises(PredictionsError, match="label 'neutral' is missing"):
        output_schema(two.schema, LABELS)
    orphan = struct_table(dirichlet(3)).append_column("verbalized_note", pa.array(["x"] * 3))
    with pytest.raises(PredictionsError, match="looks calibrated already"):
        output_schema(orphan.schema, LABELS)


def map_table(p: np.ndarray) -> pa.Table:
    rows = [[(label, float(v)) for label, v in zip(LABELS, row, strict=True)] for row in p]
    probs = pa.array(rows, pa.map_(pa.string(), pa.float64()))
    return pa.table({"id": [f"m{n}" for n in range(len(p))], "probs": probs})


def columns_table(p: np.ndarray) -> pa.Table:
    columns = {f"p_{label}": p[:, k] for k, label in enumerate(LABELS)}
    return pa.table({"id": [f"c{n}" for n in range(len(p))], **columns, "extra": [1] * len(p)})


@pytest.mark.parametrize("make", [struct_table, map_table, columns_table])
def test_applying_twice_gives_the_same_table_as_applying_once(
    make: Any, calibrator: Calibrator, tmp_path: Path
) -> None:
    """Before: an applied table was refused by the engines (and the local JSONL path
    calibrated the calibrated numbers)."""
    raw = make(dirichlet(40))
    once = calibrate_table(raw, calibrator)
    assert output_schema(once.schema, LABELS) == once.schema
    assert calibrate_table(once, calibrator).equals(once)
    pq.write_table(raw, tmp_path / "raw.parquet")
    apply_local(calibrator, tmp_path / "raw.parquet", tmp_path / "once.parquet")
    apply_local(calibrator, tmp_path / "once.parquet", tmp_path / "twice.parquet")
    assert pq.read_table(tmp_path / "twice.parquet").equals(
        pq.read_table(tmp_path / "once.parquet")
    )


def write_split(tmp: Path, table: pa.Table, parts: int = 3) -> Path:
    folder = tmp / "in"
    folder.mkdir()
    step = -(-table.num_rows // parts)
    for n in range(parts):
        pq.write_table(table.slice(n * step, step), folder / f"part-{n}.parquet")
    return folder


def test_local_engine_streams_files_in_order(calibrator: Calibrator, tmp_path: Path) -> None:
    table = struct_table(dirichlet(90, seed=2), nulls=(5, 40))
    folder = write_split(tmp_path, table)
    one = tmp_path / "one.parquet"
    assert apply_local(calibrator, folder, one, batch_rows=16) == 90
    assert pq.read_table(one).equals(calibrate_table(table, calibrator))
    assert apply_local(calibrator, str(folder / "*.parquet"), tmp_path / "one.jsonl") == 90
    lines = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert lines == pq.read_table(one).to_pylist()
    assert apply_local(calibrator, folder, tmp_path / "shards", "jsonl", batch_rows=40) == 90
    assert len(list((tmp_path / "shards").glob("part-*.jsonl"))) == 3
    with pytest.raises(ValueError, match="--out-format"):
        apply_local(calibrator, folder, tmp_path / "nowhere")


def test_pieces_are_row_groups_in_input_order(calibrator: Calibrator, tmp_path: Path) -> None:
    """The distributed engines' unit of work: (file, row group); calibrated piece by piece."""
    table = struct_table(dirichlet(90, seed=3), nulls=(7,))
    for index, start in enumerate((0, 50)):
        part = table.slice(start, 50)
        pq.write_table(part, tmp_path / f"f{index}.parquet", row_group_size=20)
    paths = [tmp_path / "f0.parquet", tmp_path / "f1.parquet"]
    pieces = parquet_pieces(paths)
    assert pieces == [(str(paths[0]), g) for g in range(3)] + [(str(paths[1]), g) for g in range(2)]
    tables = [t for path, group in pieces for t in calibrate_piece(path, group, calibrator, 8)]
    assert max(t.num_rows for t in tables) == 8
    assert pa.concat_tables(tables).equals(calibrate_table(table, calibrator))


def test_parquet_predictions_read_like_jsonl(tmp_path: Path) -> None:
    jsonl = datasets.load("recorded:drug-reviews")
    records = [dict(r) for r in jsonl.records]
    write_records(tmp_path / "struct.parquet", records)
    flat = [
        {
            **{k: v for k, v in r.items() if k != "probs"},
            **{f"p_{k}": v for k, v in (r["probs"] or {}).items()},
        }
        for r in records
    ]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "flat.parquet")
    for name in ("struct.parquet", "flat.parquet"):
        got = read_predictions(tmp_path / name, jsonl.labels)
        np.testing.assert_array_equal(got.probs, jsonl.probs)
        np.testing.assert_array_equal(got.y, jsonl.y)
        assert got.ids == jsonl.ids
    with pytest.raises(
        PredictionsError,
        match=r"duplicate id 'dr0000' \(first in .*flat.parquet row 1, again in .*struct",
    ):
        read_predictions(str(tmp_path / "*.parquet"), jsonl.labels)  # a glob: the same ids twice
    renamed = [{**r, "id": f"again-{r['id']}"} for r in records]
    write_records(tmp_path / "renamed.parquet", renamed)
    both = read_predictions(str(tmp_path / "[rs]*.parquet"), jsonl.labels)  # two files
    assert len(both) == 2 * len(jsonl)


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    rows = [{"id": "a", "p_x": 0.5, "p_y": 0.5}, {"id": "b", "p_x": -1.0, "p_y": 0.5}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(PredictionsError) as info:
        read_predictions(tmp_path / "bad.parquet")
    assert (info.value.line, info.value.field) == (2, "probs.x")
    assert ", row 2, field 'probs.x'" in str(info.value)
    with pytest.raises(PredictionsError, match="no Parquet file found"):
        read_predictions(tmp_path / "nothing-*.parquet")


def test_items_from_parquet(tmp_path: Path) -> None:
    task = Task("t", ("a", "b"), {}, "Classify.", label_field="gold")
    rows = [{"id": 1, "text": "one", "gold": "a"}, {"id": 2, "text": "two", "gold": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "items.parquet")
    assert read_items(tmp_path / "items.parquet", task) == [
        {"id": "1", "text": "one", "label": "a"},
        {"id": "2", "text": "two", "label": None},
    ]
    pq.write_table(pa.Table.from_pylist([*rows, {"id": 1, "text": "x"}]), tmp_path / "dup.parquet")
    with pytest.raises(ItemsError, match=r"line 3.*duplicate id '1'"):
        read_items(tmp_path / "dup.parquet", task)


def run_cli(*args: Any) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_cli_apply_and_evaluate_on_parquet(calibrator: Calibrator, tmp_path: Path) -> None:
    source = datasets.load("recorded:tweets", LABELS)
    write_records(tmp_path / "in.parquet", source.records)
    write_records(tmp_path / "in.jsonl", source.records)
    calibrator.save(tmp_path / "ts.json")
    for data, out in (
        ("in.parquet", "a.jsonl"),
        ("in.jsonl", "b.jsonl"),
        ("in.jsonl", "c.parquet"),
    ):
        result = run_cli(
            "apply",
            "--calibrator",
            tmp_path / "ts.json",
            "--data",
            tmp_path / data,
            "--out",
            tmp_path / out,
        )
        assert result.exit_code == 0, result.output
    a = read_predictions(tmp_path / "a.jsonl", LABELS)
    b = read_predictions(tmp_path / "b.jsonl", LABELS)
    c = read_predictions(tmp_path / "c.parquet", LABELS)
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-12)  # Arrow path = record path
    np.testing.assert_array_equal(b.probs, c.probs)
    result = run_cli("evaluate", "--data", tmp_path / "in.parquet", "--json", "--boot", 10)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.splitlines()[-1])
    result = run_cli("evaluate", "--data", tmp_path / "in.jsonl", "--json", "--boot", 10)
    assert json.loads(result.output.splitlines()[-1]) == scores


def test_cli_engine_errors_are_one_line(calibrator: Calibrator, tmp_path: Path) -> None:
    calibrator.save(tmp_path / "ts.json")
    pq.write_table(
        pa.table({"id": ["a"], "p_negative": [1.0], "p_positive": [0.0]}), tmp_path / "two.parquet"
    )
    result = run_cli(
        "apply",
        "--calibrator",
        tmp_path / "ts.json",
        "--data",
        tmp_path / "two.parquet",
        "--out",
        tmp_path / "o.jsonl",
    )
    assert result.exit_code == 2
    assert "label 'neutral' is missing" in result.output
    result = run_cli(
        "apply",
        "--calibrator",
        tmp_path / "ts.json",
        "--data",
        tmp_path / "two.parquet",
        "--out",
        tmp_path / "o.jsonl",
        "--engine",
        "dask",
    )
    assert result.exit_code == 2 and "unknown engine 'dask'" in result.output
    write_records(
        tmp_path / "p.jsonl",
        [{"id": "a", "probs": {"negative": 1.0, "neutral": 0.0, "positive": 0.0}}],
    )
    result = run_cli(
        "apply",
        "--calibrator",
        tmp_path / "ts.json",
        "--data",
        tmp_path / "p.jsonl",
        "--out",
        tmp_path / "o.jsonl",
        "--engine",
        "spark",
    )
    assert result.exit_code == 2 and "--engine spark reads Parquet" in result.output


def test_cli_engine_output_needs_overwrite(calibrator: Calibrator, tmp_path: Path) -> None:
    """Earlier output is never replaced silently; --overwrite clears a folder's old shards."""
    calibrator.save(tmp_path / "ts.json")
    folder = write_split(tmp_path, struct_table(dirichlet(90, seed=4)))
    base = ("apply", "--calibrator", tmp_path / "ts.json", "--data", folder)
    one = tmp_path / "one.jsonl"
    one.write_text("kept\n")
    result = run_cli(*base, "--out", one)
    assert result.exit_code == 2 and "already exists" in result.output
    assert one.read_text() == "kept\n"
    assert run_cli(*base, "--out", one, "--overwrite").exit_code == 0
    assert len(one.read_text().splitlines()) == 90
    shards = tmp_path / "shards"
    shards.mkdir()
    stale = shards / "part-00007.jsonl"
    stale.write_text("stale\n")
    result = run_cli(*base, "--out", shards, "--out-format", "jsonl")
    assert result.exit_code == 2 and "--overwrite" in result.output and stale.exists()
    result = run_cli(*base, "--out", shards, "--out-format", "jsonl", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and len(list(shards.glob("part-*.jsonl"))) == 3


def test_engines_refuse_duplicate_ids_across_files(calibrator: Calibrator, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(struct_table(dirichlet(5)), folder / "a.parquet")
    pq.write_table(struct_table(dirichlet(5, seed=1)).slice(3), folder / "b.parquet")
    with pytest.raises(PredictionsError) as info:
        apply_local(calibrator, folder, tmp_path / "out.parquet")
    message = str(info.value)
    assert "duplicate id 'i3'" in message
    assert (
        f"first in {folder / 'a.parquet'} row 4, again in {folder / 'b.parquet'} row 1" in message
    )
    assert not (tmp_path / "out.parquet").exists()
    same = tmp_path / "same.parquet"
    pq.write_table(pa.concat_tables([struct_table(dirichlet(3))] * 2), same)
    with pytest.raises(
        PredictionsError, match=r"duplicate id 'i0' \(first in .* row 1, again in row 4\)"
    ):
        apply_local(calibrator, same, tmp_path / "out2.parquet")


def test_cli_shard_output_is_all_or_nothing(calibrator: Calibrator, tmp_path: Path) -> None:
    """A bad later file leaves no part-00000 behind (and no temporary folder); the retry
    without --overwrite then goes through; a failed --overwrite keeps the old shards."""
    calibrator.save(tmp_path / "ts.json")
    p = dirichlet(90, seed=5)
    folder = write_split(tmp_path, struct_table(p))
    good = pq.read_table(folder / "part-2.parquet")
    bad = p[60:].copy()
    bad[4] = [-0.2, 0.7, 0.5]
    ids = pa.array([f"later{n}" for n in range(len(bad))])  # ids unique across the files
    bad_table = struct_table(bad).set_column(0, "id", ids)
    pq.write_table(bad_table, folder / "part-2.parquet")
    base = ("apply", "--calibrator", tmp_path / "ts.json", "--data", folder)
    shards = tmp_path / "out" / "shards"
    for out_format in ("parquet", "jsonl"):
        result = run_cli(*base, "--out", shards, "--out-format", out_format)
        assert result.exit_code == 2, result.output
        assert "part-2.parquet" in result.output and "Traceback" not in result.output
        assert not shards.exists() and list((tmp_path / "out").iterdir()) == []
    pq.write_table(good, folder / "part-2.parquet")
    result = run_cli(*base, "--out", shards, "--out-format", "parquet")
    assert result.exit_code == 0, result.output
    before = {f.name: f.read_bytes() for f in shards.iterdir()}
    assert sorted(before) == [f"part-{n:05d}.parquet" for n in range(3)]
    pq.write_table(bad_table, folder / "part-2.parquet")
    result = run_cli(*base, "--out", shards, "--out-format", "jsonl", "--overwrite")
    assert result.exit_code == 2, result.output
    assert {f.name: f.read_bytes() for f in shards.iterdir()} == before
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["shards"]
