"""Hostile inputs reach no traceback and get an error naming the real cause (issue 24).

Every case runs the real CLI (typer's CliRunner, or the installed ``verbcal`` script in a
subprocess where a traceback could come from interpreter shutdown) on tiny files.
"""

from __future__ import annotations

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


def elicit_args(tmp: Path, *extra: str | Path) -> list[str | Path]:
    (tmp / "task.yaml").write_text(TASK)
    (tmp / "items.jsonl").write_text('{"id": "x", "text": "hi"}\n')
    return ["elicit", "--task", tmp / "task.yaml", "--input", tmp / "items.jsonl",
            "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--no-progress",
            *extra]  # fmt: skip


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
