"""Hostile inputs reach no traceback and get an error naming the real cause (issue 24).

Every case runs the real CLI (typer's CliRunner, or the installed ``verbcal`` script in a
subprocess where a traceback could come from interpreter shutdown) on tiny files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verbcal.calibration import make_calibrator
from verbcal.cli import app

runner = CliRunner(env={"COLUMNS": "250"})
VERBCAL = Path(sys.executable).with_name("verbcal")
TASK = "name: t\ninstruction: Classify.\nlabels: [a, b]\n"


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "250", **(env or {})}).invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def script(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``verbcal`` script in a subprocess, so interpreter-shutdown output is seen too."""
    return subprocess.run(
        [str(VERBCAL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def elicit_args(
    tmp: Path,
    *extra: str | Path,
    backend: str = "openai",
    url: str | None = "http://127.0.0.1:9/v1",
) -> list[str | Path]:
    (tmp / "task.yaml").write_text(TASK)
    (tmp / "items.jsonl").write_text('{"id": "x", "text": "hi"}\n')
    where = [] if url is None else ["--base-url", url]
    return ["elicit", "--task", tmp / "task.yaml", "--input", tmp / "items.jsonl",
            "--backend", backend, *where, "--no-progress", *extra]  # fmt: skip


# ------------------------------------------------------------------------ 6. no traceback


def test_an_unopenable_store_is_named_without_a_traceback(tmp_path: Path) -> None:
    """sqlite's OperationalError becomes one line naming the store and the fix."""
    env = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, output = invoke(*elicit_args(tmp_path, "--out", tmp_path / "o.jsonl", "--store", folder),
                          env=env)  # fmt: skip
    assert code == 2, output
    assert f"{folder}: cannot open the reply store" in output and "--store" in output
    assert "Traceback" not in output and "OperationalError" not in output
    if os.geteuid() == 0:
        return  # root writes into read-only folders: the folder case above stands in
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    code, output = invoke(*elicit_args(tmp_path, "--out", readonly / "o.jsonl"), env=env)
    assert code == 2 and "cannot open the reply store" in output and "Traceback" not in output


def test_a_bad_second_parquet_file_gives_one_error_and_no_writer_traceback(
    tmp_path: Path,
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"id": f"i{n}", "probs": {"a": 0.2, "b": 0.8}} for n in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "p1.parquet")
    rows = [{"id": f"j{n}", "probs": {"a": 0.2, "b": 0.8}} for n in range(20)]
    rows[3] = {"id": "bad", "probs": {"a": -0.2, "b": 0.8}}
    pq.write_table(pa.Table.from_pylist(rows), folder / "p2.parquet")
    p = np.array([[0.2, 0.8], [0.7, 0.3]] * 5)
    make_calibrator("temperature").fit(p, np.array([1, 0] * 5), labels=("a", "b")).save(
        tmp_path / "c.json"
    )
    for out in ("o.parquet", "o.jsonl"):
        done = script("apply", "--calibrator", tmp_path / "c.json", "--data", folder,
                      "--out", tmp_path / out)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "p2.parquet, row 4 (item id 'bad'), field 'probs.a'" in done.stderr
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
        assert not (tmp_path / out).exists()
    code, output = invoke("evaluate", "--data", folder)
    assert code == 2 and "p2.parquet, row 4, field 'probs.a'" in output, output


# ------------------------------------------------------------- 8. errors name the real cause


def test_missing_anthropic_and_bedrock_credentials_are_caught_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("anthropic")
    pytest.importorskip("boto3")
    from elicit_fakeserver import FakeServer

    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = tmp_path / "o.jsonl"
    code, output = invoke(*elicit_args(tmp_path, "--out", out, backend="anthropic", url=None))
    assert code == 2 and "no Anthropic API key: set ANTHROPIC_API_KEY" in output, output
    with FakeServer() as server:
        args = elicit_args(tmp_path, "--out", out, backend="bedrock", url=server.url)
        code, output = invoke(*args)
        assert sum(server.counts.values()) == 0
    assert code == 2 and "no AWS credentials: set AWS_PROFILE" in output, output
    assert not (tmp_path / "o.jsonl").exists()


def test_a_refused_connection_is_named_and_a_run_where_all_failed_exits_non_zero(
    tmp_path: Path,
) -> None:
    """Nothing listens on the port: "connection refused" (not "timeout"), and exit 1."""
    pytest.importorskip("openai")
    from verbcal.elicit.local import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    for http in ("sdk", "lean"):
        out = tmp_path / f"{http}.jsonl"
        args = elicit_args(tmp_path, "--out", out, "--retries", "0", "--http", http, url=url)
        code, output = invoke(*args, env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
        assert code == 1, output
        assert "every request failed (1 items" in output and "connection refused by" in output
        record = out.read_text()
        assert "connection refused by" in record and "timeout" not in record


def test_three_huge_numbers_overflow_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "big.jsonl"
    ok = '{"id": "a", "probs": {"x": 0.5, "y": 0.3, "z": 0.2}, "label": "x"}\n'
    data.write_text(ok + '{"id": "b", "probs": {"x": 1e308, "y": 1e308, "z": 1e308}}\n')
    code, output = invoke("evaluate", "--data", data)
    assert code == 2, output
    assert f"{data}, line 2, field 'probs': the probabilities sum past the largest float" in output
    assert "all zero" not in output


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("latin1.jsonl", b'{"id": "a", "probs": {"x": 1, "y": 0}}\n{"id": "\xe9"}\n', "line 2: not UTF-8"),
        ("latin1.csv", b"id,p_x,p_y,label\na,0.5,0.5,x\nb,0.5,0.5,\xe9\n", "line 3: not UTF-8"),
        ("binary.jsonl", b"\x7fELF\x02\x01\x01\x00\x00\x00", "line 1: a binary file"),
    ],
)  # fmt: skip
def test_non_utf8_and_binary_files_are_named(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    data = tmp_path / name
    data.write_bytes(content)
    code, output = invoke("evaluate", "--data", data)
    assert code == 2 and f"{data}, {problem}" in output, output
    assert "codec can't decode" not in output


def test_a_utf8_bom_is_accepted_in_jsonl_as_in_csv(tmp_path: Path) -> None:
    rows = "".join(
        f'{{"id": "i{n}", "probs": {{"x": 0.7, "y": 0.3}}, "label": "{"xy"[n % 2]}"}}\n'
        for n in range(4)
    )
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    (tmp_path / "plain.jsonl").write_text(rows)
    csv = "id,p_x,p_y,label\n" + "".join(f"i{n},0.7,0.3,{'xy'[n % 2]}\n" for n in range(4))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + csv.encode())
    outputs = []
    for name in ("bom.jsonl", "plain.jsonl", "bom.csv"):
        code, output = invoke("evaluate", "--data", tmp_path / name, "--json")
        assert code == 0, output
        outputs.append(json.loads(output.splitlines()[-1]))
    assert outputs[0]["nll"] == outputs[1]["nll"] == outputs[2]["nll"]
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "hi"}\n')
    (tmp_path / "task.yaml").write_text(TASK)
    code, output = invoke("elicit", "--task", tmp_path / "task.yaml", "--input", items,
                          "--out", tmp_path / "o.jsonl", "--backend", "openai", "--dry-run",
                          env={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})  # fmt: skip
    assert code == 0 and "items: 1;" in output, output


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_json_outputs_print_null_never_nan(tmp_path: Path) -> None:
    """Two items of one class: several scores are undefined; they print as null."""
    data = tmp_path / "two.jsonl"
    data.write_text(
        '{"id": "a", "probs": {"x": 0.9, "y": 0.1}, "label": "x"}\n'
        '{"id": "b", "probs": {"x": 0.8, "y": 0.2}, "label": "x"}\n'
    )
    code, output = invoke("evaluate", "--data", data, "--json")
    assert code == 0, output
    scores = _strict(output.splitlines()[-1])
    assert isinstance(scores, dict) and "null" in output
    assert "NaN" not in output and "Infinity" not in output
    code, output = invoke("compare", "--data", "recorded:tweets", "--methods",
                          "identity,temperature", "--repeats", "2", "--json")  # fmt: skip
    assert code == 0 and isinstance(_strict(output.splitlines()[-1]), list)


def test_the_threshold_message_agrees_with_its_table() -> None:
    """Unreachable precision: the note's best lower bound is the highest bound over every
    operating point (checked with scipy's beta quantile), and the table shows that row."""
    from scipy.stats import beta

    from verbcal import datasets

    args = ("threshold", "--data", "recorded:tweets", "--class", "positive", "--precision", "0.99")
    code, output = invoke(*args, "--json")
    assert code == 0, output
    result = _strict(output.splitlines()[-1])
    assert isinstance(result, dict) and result["reachable"] is False
    preds = datasets.load("recorded:tweets").labelled()
    k = list(preds.labels).index("positive")
    p, gold = preds.probs[:, k], preds.y == k
    bounds = []
    for t in np.unique(p):
        m, hits = int((p >= t).sum()), int((gold & (p >= t)).sum())
        bounds.append(beta.ppf(1 - result["test_confidence"], hits, m - hits + 1) if hits else 0.0)
    best = max(bounds)
    assert result["precision_lower_bound"] == pytest.approx(best, rel=1e-9)
    assert f"over every operating point is {best:.4f}" in result["note"]
    code, table = invoke(*args)
    assert f"over every operating point is {best:.4f}" in table and f"{best:.4f} │" in table


def test_sets_state_which_guarantee_they_give() -> None:
    base = ("sets", "--calib", "recorded:tweets", "--data", "recorded:tweets")
    code, marginal = invoke(*base)
    assert code == 0 and "The guarantee is marginal" in marginal and "--by-class" in marginal
    code, by_class = invoke(*base, "--by-class")
    assert code == 0 and "The guarantee holds per label" in by_class, by_class
    assert "for every label y" in by_class and "is marginal" not in by_class
