"""Predictions I/O: every bad input names file, line and field; CSV; label order; atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verbcal.predictions import (
    PredictionsError,
    from_arrays,
    read_predictions,
    with_probs,
    write_jsonl,
)

GOOD = '{"id": "a", "probs": {"neg": 0.2, "pos": 0.8}, "label": "pos"}'


def write(tmp_path: Path, text: str, name: str = "preds.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def expect_error(path: Path, line: int | None, field: str | None, problem: str) -> None:
    with pytest.raises(PredictionsError) as info:
        read_predictions(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    message = str(err)
    assert message.startswith(str(path) + (f", line {line}" if line else ""))
    if field:
        assert f"field {field!r}" in message
    assert err.fix and err.fix in message  # says what to do


@pytest.mark.parametrize(
    ("second", "field", "problem"),
    [
        ('{"probs": {"neg": 0.2, "pos": 0.7, "mid": 0.1}}', "probs.mid", "unknown label 'mid'"),
        ('{"probs": {"neg": 1.0}}', "probs.pos", "label 'pos' is missing"),
        ('{"probs": {"neg": -0.1, "pos": 1.1}}', "probs.neg", "-0.1 is negative"),
        ('{"probs": {"neg": NaN, "pos": 1.0}}', "probs.neg", "nan is not finite"),
        ('{"probs": {"neg": 0.5, "pos": Infinity}}', "probs.pos", "inf is not finite"),
        ('{"probs": {"neg": 0.5, "pos": "0.5"}}', "probs.pos", "'0.5' is not a number"),
        ('{"probs": {"neg": true, "pos": 0.5}}', "probs.neg", "True is not a number"),
        ('{"probs": {"neg": 0, "pos": 0.0}}', "probs", "every probability is 0"),
        ('{"probs": [0.5, 0.5]}', "probs", "must be an object"),
        ('{"probs": {"neg": 0.5, "pos": 0.5}, "label": "maybe"}', "label", "'maybe' is not one"),
        ("{'probs': 1}", None, "not valid JSON"),
        ("[1, 2]", None, "must be a JSON object"),
        ('"text"', None, "must be a JSON object"),
    ],
)
def test_bad_record_on_line_2(tmp_path: Path, second: str, field: str | None, problem: str) -> None:
    path = write(tmp_path, f"{GOOD}\n{second}\n{GOOD}\n")
    expect_error(path, 2, field, problem)


def test_truncated_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'{GOOD}\n{GOOD}\n{{"id": "c", "probs": {{"neg": 0.')
    expect_error(path, 3, None, "the last line is truncated")
    # a broken line that is not the last one is just invalid JSON
    path = write(tmp_path, f'{GOOD}\n{{"id": "c", "probs": {{"neg": 0.\n{GOOD}')
    expect_error(path, 2, None, "not valid JSON")


def test_last_line_without_newline_is_fine(tmp_path: Path) -> None:
    other = GOOD.replace('"a"', '"b"')
    preds = read_predictions(write(tmp_path, f"{GOOD}\n\n{other}"))
    assert len(preds) == 2


def test_first_record_needs_two_labels(tmp_path: Path) -> None:
    expect_error(write(tmp_path, '{"probs": {"neg": 1.0}}\n'), 1, "probs", "at least two labels")


def test_empty_missing_and_distribution_free_files(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "\n\n"), None, None, "holds no records")
    expect_error(tmp_path / "absent.jsonl", None, None, "file not found")
    expect_error(write(tmp_path, '{"probs": null}\n'), None, "probs", "no record has")


def test_reads_records_normalises_and_counts(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "probs": {"neg": 0.1, "mid": 0.2, "pos": 0.7}, "label": "pos", "text": "x"},
        {"id": "b", "probs": {"pos": 70, "neg": 20, "mid": 10}, "label": "neg"},
        {"id": "c", "probs": {"neg": 0.5, "mid": 0.2, "pos": 0.2}},
        {"id": "d", "probs": {"neg": 0.0, "mid": 0.0, "pos": 1.0}, "label": None},
    ]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in lines))
    preds = read_predictions(path)
    assert preds.labels == ("neg", "mid", "pos")  # order of the first record
    np.testing.assert_allclose(
        preds.probs,
        [[0.1, 0.2, 0.7], [0.2, 0.1, 0.7], [0.5 / 0.9, 0.2 / 0.9, 0.2 / 0.9], [0, 0, 1]],
        rtol=1e-15,
    )
    np.testing.assert_array_equal(preds.y, [2, 0, -1, -1])
    assert preds.ids == ["a", "b", "c", "d"]
    # 0.1 + 0.2 + 0.7 = 0.9999999999999999 is within tolerance: not counted
    assert preds.n_renormalised == 2
    assert preds.max_sum_error == pytest.approx(99.0)
    assert "2 rows did not sum to 1 and were normalised (largest deviation 99)" in (
        preds.describe()
    )
    assert preds.records[0]["text"] == "x"  # extra keys kept
    assert not preds.has_gold
    assert preds.labelled().ids == ["a", "b"]
    with pytest.raises(PredictionsError, match="2 of 4 records have no gold label"):
        preds.require_gold("fitting")


def test_labels_option_sets_the_order_and_the_label_set(tmp_path: Path) -> None:
    path = write(tmp_path, '{"probs": {"a": 0.1, "b": 0.3, "c": 0.6}, "label": "b"}\n')
    preds = read_predictions(path, labels=["c", "a", "b"])
    assert preds.labels == ("c", "a", "b")
    np.testing.assert_allclose(preds.probs, [[0.6, 0.1, 0.3]])
    np.testing.assert_array_equal(preds.y, [2])
    with pytest.raises(PredictionsError) as info:
        read_predictions(path, labels=["a", "b", "c", "d"])
    assert (info.value.line, info.value.field) == (1, "probs.d")
    with pytest.raises(PredictionsError) as info:
        read_predictions(path, labels=["a", "b"])
    assert (info.value.line, info.value.field) == (1, "probs.c")


def test_null_probs_are_skipped_and_kept_for_output(tmp_path: Path) -> None:
    text = (
        GOOD
        + "\n"
        + '{"id": "x", "probs": null, "error": "unparsable"}\n'
        + '{"id": "b", "probs": {"neg": 0.6, "pos": 0.4}, "label": "neg"}\n'
    )
    preds = read_predictions(write(tmp_path, text))
    assert len(preds) == 2 and len(preds.records) == 3
    assert preds.n_unusable == 1
    np.testing.assert_array_equal(preds.rows, [0, 2])
    assert "1 records without a distribution were skipped" in preds.describe()
    out = with_probs(preds, np.array([[0.5, 0.5], [0.25, 0.75]]))
    assert out[1] == {"id": "x", "probs": None, "error": "unparsable"}
    assert out[0]["probs"] == {"neg": 0.5, "pos": 0.5}
    assert out[0]["verbalized_probs"] == {"neg": 0.2, "pos": 0.8}
    assert out[2]["probs"] == {"neg": 0.25, "pos": 0.75}
    assert preds.records[0]["probs"] == {"neg": 0.2, "pos": 0.8}  # input left untouched


def test_csv_input(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id,label,p_neg,p_pos,note\nr1,pos,0.25,0.75,hi\nr2,,0.6,0.6,\n",
        name="preds.csv",
    )
    preds = read_predictions(path)
    assert preds.labels == ("neg", "pos")
    assert preds.ids == ["r1", "r2"]
    np.testing.assert_allclose(preds.probs, [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_array_equal(preds.y, [1, -1])
    assert preds.n_renormalised == 1
    assert preds.records[0]["note"] == "hi"


def test_csv_errors_name_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "id,label,p_a,p_b\n1,a,0.5,0.5\n2,a,0.5,lots\n", name="x.csv")
    expect_error(path, 3, "p_b", "'lots' is not a number")
    path = write(tmp_path, "id,label,a,b\n1,a,0.5,0.5\n", name="y.csv")
    expect_error(path, 1, None, "no p_<label> columns")
    path = write(tmp_path, "id,label,p_a,p_b\n1,c,0.5,0.5\n", name="z.csv")
    expect_error(path, 2, "label", "'c' is not one")
    path = write(tmp_path, "id,label,p_a,p_b\n1,a,-1,0.5\n", name="w.csv")
    expect_error(path, 2, "probs.a", "negative")


def test_from_arrays_builds_records_and_normalises() -> None:
    preds = from_arrays([[1.0, 3.0], [0.5, 0.5]], [1, -1], ["a", "b"], ids=["u", "v"])
    np.testing.assert_allclose(preds.probs, [[0.25, 0.75], [0.5, 0.5]])
    assert preds.n_renormalised == 1 and preds.max_sum_error == 3.0
    assert preds.records == [
        {"id": "u", "probs": {"a": 1.0, "b": 3.0}, "label": "b"},
        {"id": "v", "probs": {"a": 0.5, "b": 0.5}},
    ]
    sub = preds.subset([1])
    assert sub.ids == ["v"] and sub.rows.tolist() == [1]


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    records = [{"id": "é", "probs": {"a": 0.5, "b": 0.5}, "label": "a"}]
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl(path, records)
    assert path.read_text(encoding="utf-8") == json.dumps(records[0], ensure_ascii=False) + "\n"
    assert read_predictions(path).ids == ["é"]


def test_write_jsonl_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"

    def failing() -> Iterator[dict[str, Any]]:
        yield {"id": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        write_jsonl(path, failing())
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file left behind

    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_jsonl(path, [{"id": 1}, {"bad": object()}])
    assert path.read_text() == "old\n"  # the previous file survives intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


# ---------------------------------------------------------------- confidence in words


def _verbal_file(tmp_path: Path, records: list[dict[str, object]]) -> Path:
    path = tmp_path / "verbal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_verbal_records_become_distributions_through_the_lexicon(tmp_path: Path) -> None:
    from verbcal.predictions import ReadOptions, read_predictions, reading

    path = _verbal_file(
        tmp_path,
        [
            {"id": "a", "verbal": "very likely", "label": "ok", "probs": {"ok": 0.6, "bad": 0.4}},
            {
                "id": "b",
                "verbal": "Probably not.",
                "label": "bad",
                "probs": {"ok": 0.5, "bad": 0.5},
            },
            {"id": "c", "verbal": "wibble", "label": "bad", "probs": {"ok": 0.5, "bad": 0.5}},
        ],
    )
    numbers = read_predictions(path)
    assert numbers.reply == "probs" and len(numbers) == 3
    with reading(ReadOptions(source="verbal", about="ok")):
        words = read_predictions(path)
    assert words.reply == "verbal" and words.labels == ("ok", "bad")
    np.testing.assert_allclose(words.probs, [[0.9, 0.1], [0.25, 0.75]])
    assert words.ids == ["a", "b"] and words.n_unusable == 1
    assert "'wibble' (1)" in words.describe()
    assert words.phrases() == ["very likely", "Probably not."]
    # the phrase stays beside its probability in the output records
    from verbcal.predictions import with_probs

    out = with_probs(words, np.array([[0.8, 0.2], [0.3, 0.7]]))
    assert out[0]["verbal"] == "very likely"
    assert out[0]["verbalized_probs"] == {"ok": 0.9, "bad": 0.1}
    assert out[0]["probs"] == {"ok": 0.8, "bad": 0.2}


def test_verbal_records_need_about_and_two_labels(tmp_path: Path) -> None:
    from verbcal.predictions import ReadOptions, read_predictions

    path = _verbal_file(tmp_path, [{"id": "a", "verbal": "likely", "probs": {"x": 1, "y": 0}}])
    with pytest.raises(PredictionsError, match=r"line 1, field 'about'.*--about"):
        read_predictions(path, options=ReadOptions(source="verbal"))
    with pytest.raises(PredictionsError, match="must be one of exactly two labels"):
        read_predictions(path, options=ReadOptions(source="verbal", about="z"))
    alone = _verbal_file(tmp_path, [{"id": "a", "verbal": "likely", "about": "x"}])
    with pytest.raises(PredictionsError, match="--labels"):
        read_predictions(alone, options=ReadOptions(source="verbal"))
    preds = read_predictions(alone, ["x", "y"], options=ReadOptions(source="verbal"))
    np.testing.assert_allclose(preds.probs, [[0.7, 0.3]])
    # a numeric read of a file with only words says to pass --source verbal
    with pytest.raises(PredictionsError, match="--source verbal"):
        read_predictions(alone)
    unknown = _verbal_file(tmp_path, [{"id": "a", "verbal": "wibble", "about": "x"}])
    with pytest.raises(PredictionsError, match=r"'wibble'.*--lexicon"):
        read_predictions(unknown, ["x", "y"], options=ReadOptions(source="verbal"))


def test_duplicate_ids_are_refused_naming_the_id_and_both_lines(tmp_path: Path) -> None:
    other = '{"id": "b", "probs": {"neg": 0.6, "pos": 0.4}, "label": "neg"}'
    path = write(tmp_path, "\n".join([GOOD, other, GOOD.replace("0.2", "0.3")]) + "\n")
    with pytest.raises(PredictionsError) as info:
        read_predictions(path)
    assert info.value.line == 3 and info.value.field == "id"
    assert "duplicate id 'a' (first on line 1, again on line 3)" in str(info.value)
    csv = write(tmp_path, "id,p_neg,p_pos,label\nx,0.2,0.8,pos\nx,0.5,0.5,neg\n", "p.csv")
    with pytest.raises(PredictionsError, match="duplicate id 'x' \\(first on line 2, again"):
        read_predictions(csv)
    # records without an id are numbered by line and never clash
    bare = '{"probs": {"neg": 0.2, "pos": 0.8}}'
    assert len(read_predictions(write(tmp_path, f"{bare}\n{bare}\n", "bare.jsonl"))) == 2


def test_duplicate_ids_in_parquet_name_the_rows(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from verbcal.predictions import write_parquet

    records = [
        {"id": "a", "probs": {"neg": 0.2, "pos": 0.8}, "label": "pos"},
        {"id": "b", "probs": {"neg": 0.6, "pos": 0.4}, "label": "neg"},
        {"id": "a", "probs": {"neg": 0.1, "pos": 0.9}, "label": "pos"},
    ]
    write_parquet(tmp_path / "p.parquet", records)
    with pytest.raises(PredictionsError) as info:
        read_predictions(tmp_path / "p.parquet")
    assert info.value.line == 3 and info.value.field == "id"
    where = tmp_path / "p.parquet"
    assert f"duplicate id 'a' (first in {where} row 1, again in row 3)" in str(info.value)
