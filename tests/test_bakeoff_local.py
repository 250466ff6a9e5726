"""verbcal bakeoff end to end against the embedded llama.cpp server (SmolLM2-135M).

Two arms on the same items through the ``local`` backend (each arm starts the embedded
server, as a user's run does): the paper's numeric format and the verbal format (a phrase
about "positive"). The verbal arm is structured (the default): its requests carry the
verbal JSON schema, whose phrase is an enum of the lexicon's English phrases, and
llama.cpp's constrained decoding makes SmolLM2 answer one of them, so every verbal reply
maps to a probability (free text, SmolLM2's phrases are mostly not in the lexicon).
SmolLM2-135M carries little signal, so this checks the plumbing, not which arm wins.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("pydantic")
pytest.importorskip("openai")
pytest.importorskip("xllamacpp")
pytest.importorskip("matplotlib")

from verbcal.bakeoff.formats import verbal_phrases
from verbcal.cli import app
from verbcal.elicit.local import LocalModelError, model_path

pytestmark = [pytest.mark.server, pytest.mark.slow]

REVIEWS = [
    ("A wonderful, moving film. I loved every minute.", "positive"),
    ("Dull, too long, and the acting was terrible.", "negative"),
    ("Best movie of the year!", "positive"),
    ("I walked out after twenty minutes.", "negative"),
    ("Brilliant script and a great cast.", "positive"),
    ("A boring mess from start to finish.", "negative"),
    ("Funny, warm and beautifully shot.", "positive"),
    ("The worst film I have seen in years.", "negative"),
    ("I would happily watch it again.", "positive"),
    ("Predictable plot and wooden dialogue.", "negative"),
    ("A joy from the first scene to the last.", "positive"),
    ("Painfully slow and badly acted.", "negative"),
]


def test_bakeoff_numeric_vs_verbal_on_llama_cpp(tmp_path: Path) -> None:
    try:
        model_path()
    except LocalModelError as exc:
        pytest.skip(str(exc))
    (tmp_path / "task.yaml").write_text(
        "name: sentiment\ninstruction: Classify the sentiment of the movie review.\n"
        "labels: [positive, negative]\nlabel_field: label\n"
    )
    with (tmp_path / "items.jsonl").open("w") as fh:
        for n, (text, label) in enumerate(REVIEWS):
            fh.write(json.dumps({"id": f"r{n}", "text": text, "label": label}) + "\n")
    common = {"backend": "local", "concurrency": 2, "max_tokens": 48}
    config = {
        "task": "task.yaml",
        "items": "items.jsonl",
        "decision": {"positive": "positive", "precision": 0.8},
        "method": "temperature",
        "arms": [
            {"name": "numbers", "reply": "numeric", **common},
            {"name": "words", "reply": "verbal", **common},
        ],
    }
    path = tmp_path / "bakeoff.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    args = ["bakeoff", "--config", str(path), "--out", str(out), "--repeats", "3", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {row["arm"]: row for row in doc["arms"]}
    assert set(rows) == {"numbers", "words"}
    assert doc["recommended"] in rows and doc["reason"]
    for row in rows.values():
        assert row["requests"] == len(REVIEWS)
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
        assert row["cost_per_1k"] == 0.0  # the embedded model costs nothing
        assert row["latency_p50"] > 0
        assert row["n"] + row["n_dropped"] == len(REVIEWS)
        assert 0.0 <= row["accuracy"] <= 1.0
    assert rows["words"]["format"] == "verbal"
    # constrained decoding: every verbal reply is a lexicon phrase, so none fails to parse
    assert rows["words"]["failed_replies"] == 0
    with sqlite3.connect(out / "bakeoff.store.sqlite") as db:
        stored = db.execute("SELECT raw, mode FROM replies WHERE status != 'error'").fetchall()
    verbal = [(json.loads(raw), mode) for raw, mode in stored if '"likelihood"' in raw]
    assert len(verbal) == len(REVIEWS)
    phrases = set(verbal_phrases())
    assert all(mode == "json_schema" and reply["likelihood"] in phrases for reply, mode in verbal)
    assert (out / "report.html").exists()
    assert (out / "calibrators" / "numbers.json").exists()
    # resume: a second run finds every reply in the store and sends nothing
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["arms"] == doc["arms"]
