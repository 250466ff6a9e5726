"""The openai path against a real llama.cpp server (xllamacpp + SmolLM2-135M), and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("xllamacpp")

from verbcal.cli import app
from verbcal.elicit import ElicitOptions, elicit
from verbcal.elicit.local import LocalModelError, local_server, model_path
from verbcal.predictions import read_predictions
from verbcal.task import Task

TASK = Task(
    name="sentiment",
    labels=("positive", "negative"),
    descriptions={},
    instruction="Classify the sentiment of the movie review.",
    label_field="label",
)
REVIEWS = [
    ("A wonderful, moving film. I loved every minute.", "positive"),
    ("Dull, too long, and the acting was terrible.", "negative"),
    ("Best movie of the year!", "positive"),
    ("I walked out after twenty minutes.", "negative"),
]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    try:
        model_path()
    except LocalModelError as exc:
        pytest.skip(str(exc))
    with local_server(parallel=2) as url:
        yield url


def items() -> list[dict[str, str]]:
    return [{"id": f"r{n}", "text": t, "label": g} for n, (t, g) in enumerate(REVIEWS)]


@pytest.mark.server
@pytest.mark.slow
def test_openai_path_against_llama_cpp(server_url: str, tmp_path: Path) -> None:
    assert server_url.startswith("http://127.0.0.1:")
    opts = ElicitOptions(
        backend="openai",
        model="smollm2",
        base_url=server_url,
        store=tmp_path / "s.sqlite",
        concurrency=2,
        max_tokens=64,
        label_logprobs=True,
    )
    result = elicit(TASK, items(), tmp_path / "out.jsonl", opts, progress=False)
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["r0", "r1", "r2", "r3"]
    assert result.stats.requests == 8 and result.stats.input_tokens > 0
    for record in records:
        assert record["status"] in ("ok", "repaired", "failed"), record
        assert isinstance(record["raw"], str) and record["raw"]
        if record["probs"] is not None:
            assert sum(record["probs"].values()) == pytest.approx(1)
        lp = record["logprob_probs"]
        assert lp is None or sum(lp.values()) == pytest.approx(1)
    assert any(r["logprob_probs"] for r in records)
    assert not result.notes  # llama.cpp honours the JSON schema
    read_predictions(tmp_path / "out.jsonl")


@pytest.mark.server
@pytest.mark.slow
def test_cli_local_backend(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the movie review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items()))
    args = ["elicit", "--task", str(tmp_path / "task.yaml"), "--input"]
    args += [str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "p.jsonl")]
    args += ["--max-items", "2", "--max-tokens", "48", "--no-progress", "--backend", "local"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "verbcal elicit: local" in result.output and "tokens this run" in result.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "p.store.sqlite").exists()


def test_cli_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "task.yaml").write_text("name: t\ninstruction: x\nlabels: [a, b]\n")
    (tmp_path / "items.jsonl").write_text('{"id": 1, "text": "hi"}\n')
    base = ["elicit", "--task", str(tmp_path / "task.yaml"), "--input"]
    base += [str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]
    result = CliRunner().invoke(app, [*base, "--backend", "openai"])
    assert result.exit_code == 2 and "set OPENAI_API_KEY" in result.output
    result = CliRunner().invoke(app, [*base, "--backend", "anthropic", "--label-logprobs"])
    assert result.exit_code == 2 and "--label-logprobs needs logprobs" in result.output
    result = CliRunner().invoke(app, [*base, "--backend", "nope"])
    assert result.exit_code == 2 and "choose" in result.output


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["elicit", "--help"])
    assert result.exit_code == 0 and "Example: verbcal elicit" in result.output


@pytest.mark.server
@pytest.mark.slow
def test_litellm_route_against_llama_cpp(server_url: str, tmp_path: Path) -> None:
    pytest.importorskip("litellm")
    opts = ElicitOptions(
        backend="litellm",
        model="openai/smollm2",
        base_url=server_url,
        store=tmp_path / "s.sqlite",
        concurrency=2,
        max_tokens=64,
    )
    result = elicit(TASK, items(), tmp_path / "out.jsonl", opts, progress=False)
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["r0", "r1", "r2", "r3"]
    assert result.backend == "litellm" and result.stats.requests == 4
    assert result.stats.input_tokens > 0 and result.stats.output_tokens > 0
    assert not result.notes  # llama.cpp honoured the JSON schema passed through LiteLLM
    for record in records:
        assert record["status"] in ("ok", "repaired"), record  # the schema makes it JSON
        assert sum(record["probs"].values()) == pytest.approx(1)
    # resume: the same call sends nothing
    again = elicit(TASK, items(), tmp_path / "out.jsonl", opts, progress=False)
    assert again.stats.requests == 0 and again.n_from_store == 4
