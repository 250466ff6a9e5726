"""Prediction log, feedback and monitoring through a real uvicorn server."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

from serve_helpers import ServerThread, fit_file
from verbcal import datasets, metrics
from verbcal.calibration import Calibrator
from verbcal.serve import ServeConfig, create_app
from verbcal.serve.config import ServeConfigError

if TYPE_CHECKING:
    from verbcal.serve.monitoring import Monitoring, PredictionLog
    from verbcal.serve.registry import Served

pytestmark = pytest.mark.server
KEY = "vk-monitor-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _config(tmp_path: Path, **extra: object) -> ServeConfig:
    cal = fit_file(tmp_path / "ts.json")
    return ServeConfig(
        calibrators={"tweets": str(cal)},
        extra_keys=(KEY,),
        rate_limit=None,
        log_predictions=str(tmp_path / "log" / "predictions.sqlite"),
        monitor_window=50,
        **extra,  # type: ignore[arg-type]
    )


def test_log_feedback_monitor_and_metrics(tmp_path: Path) -> None:
    config = _config(tmp_path, monitor_references={"tweets": "recorded:tweets"})
    data = datasets.load("recorded:tweets").labelled()
    items = [
        {
            "id": data.ids[i] if i % 4 else None,
            "probs": dict(zip(data.labels, data.probs[i].tolist(), strict=True)),
        }
        for i in range(120)
    ]
    with (
        ServerThread(create_app(config)) as running,
        httpx.Client(base_url=running.url, headers=AUTH) as client,
    ):
        fast = client.post("/v1/calibrate", json={"items": items[:60]})
        slow = client.post("/v1/calibrate", json={"items": items[60:], "accept_threshold": 0.8})
        assert fast.status_code == 200 and slow.status_code == 200
        served = fast.json()["items"] + slow.json()["items"]
        ids = [item["id"] for item in served]
        assert all(ids) and ids[0].startswith("srv-") and ids[1] == data.ids[1]

        gold = {ids[i]: data.labels[data.y[i]] for i in range(0, 120, 2)}
        answer = client.post(
            "/v1/feedback", json={"items": [{"id": k, "label": v} for k, v in gold.items()]}
        )
        assert answer.status_code == 200 and answer.json() == {"labelled": 60}

        unknown = client.post(
            "/v1/feedback",
            json={
                "items": [{"id": ids[0], "label": "positive"}, {"id": "nope", "label": "neutral"}]
            },
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["errors"][0]["loc"] == "items[1].id"
        assert "'nope'" in unknown.json()["error"]["errors"][0]["message"]
        bad_label = client.post("/v1/feedback", json={"items": [{"id": ids[2], "label": "angry"}]})
        assert bad_label.status_code == 422
        assert bad_label.json()["error"]["errors"][0]["loc"] == "items[0].label"
        assert (
            client.post(
                "/v1/feedback", content=b"{oops", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert client.post("/v1/feedback", json={"items": [{"id": 3}]}).status_code == 422
        assert (
            client.post(
                "/v1/feedback",
                json={"model": "other", "items": [{"id": ids[2], "label": "neutral"}]},
            ).status_code
            == 404
        )

        summary = client.get("/v1/monitor/tweets").json()
        assert summary["logged"] == 120 and summary["labelled"] == 60
        window = summary["window"]
        assert window["n"] == 20 and window["window"] == "3"  # 120 rows in windows of 50
        assert (
            0
            <= window["est_accuracy_low"]
            <= window["est_accuracy"]
            <= window["est_accuracy_high"]
            <= 1
        )
        q = np.array([list(item["probs"].values()) for item in served])
        labelled_rows = list(range(20, 120, 2))  # the last 50 labelled rows: the labelled window
        y = np.array([data.y[i] for i in labelled_rows])
        lw = summary["labelled_window"]
        assert lw["n"] == 50
        assert lw["accuracy"] == pytest.approx(metrics.accuracy(q[labelled_rows], y))
        assert lw["ece"] == pytest.approx(metrics.ece(q[labelled_rows], y))
        assert client.get("/v1/monitor/nope").status_code == 404

        text = client.get("/metrics").text
        for name in (
            "verbcal_monitor_estimated_accuracy",
            "verbcal_monitor_labelled_ece",
            "verbcal_monitor_alarm",
        ):
            assert f'{name}{{model="tweets"}}' in text
        assert (
            client.get("/v1/monitor/tweets", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )

    with sqlite3.connect(tmp_path / "log" / "predictions.sqlite") as db:  # durable after shutdown
        rows = db.execute(
            "SELECT id, model, calibrator_version, raw, calibrated, label FROM predictions"
        ).fetchall()
    assert len(rows) == 120 and sum(r[5] is not None for r in rows) == 60
    version = rows[0][2]
    assert version == hashlib.sha256((tmp_path / "ts.json").read_bytes()).hexdigest()[:12]
    cal = Calibrator.load(tmp_path / "ts.json")
    first = json.loads(rows[0][3])
    assert np.allclose(cal.predict_proba([first])[0], json.loads(rows[0][4]))


def test_monitor_without_reference_estimates_from_confidence(tmp_path: Path) -> None:
    data = datasets.load("recorded:tweets").labelled()
    items = [
        {"probs": dict(zip(data.labels, data.probs[i].tolist(), strict=True))} for i in range(30)
    ]
    with (
        ServerThread(create_app(_config(tmp_path))) as running,
        httpx.Client(base_url=running.url, headers=AUTH) as client,
    ):
        served = client.post("/v1/calibrate", json={"items": items}).json()["items"]
        summary = client.get("/v1/monitor/tweets").json()
    confidence = np.mean([item["confidence"] for item in served])
    assert summary["window"]["est_accuracy"] == pytest.approx(confidence)
    assert summary["labelled_window"] is None and summary["alarm"] is False


def test_monitor_reference_needs_the_log(tmp_path: Path) -> None:
    with pytest.raises(ServeConfigError, match="--log-predictions"):
        ServeConfig(
            calibrators={"tweets": "x.json"}, monitor_references={"tweets": "recorded:tweets"}
        )
    with pytest.raises(ServeConfigError, match="no --calibrator"):
        ServeConfig(
            calibrators={"tweets": "x.json"},
            log_predictions="l.sqlite",
            monitor_references={"bbc": "r.jsonl"},
        )


def test_log_groups_waiting_writes_in_one_commit_and_answers_only_after_it(
    tmp_path: Path,
) -> None:
    """Group commit: writes queued while one commit runs share the next; none is reported
    done before its transaction is committed; a failed write is reported to its own caller
    only, and the writer keeps going."""
    from verbcal.serve.monitoring import PredictionLog
    from verbcal.serve.registry import load_one

    data = datasets.load("recorded:tweets").labelled()
    served = load_one("tweets", str(fit_file(tmp_path / "ts.json")))
    q = served.calibrator.predict_proba(data.probs)
    log = PredictionLog(tmp_path / "log.sqlite")
    with log._lock:  # hold the writer at its first commit
        futures = [
            log.submit(served, "v1", [data.ids[i]], data.probs[i : i + 1], q[i : i + 1].tolist())
            for i in range(20)
        ]
        assert not any(f.done() for f in futures)  # nothing is reported before it is on disk
    for f in futures:
        f.result(timeout=10)
    assert log.changes == 20 and log.commits <= 2
    bad = log.submit(served, "v1", [None], data.probs[:1], q[:1].tolist())  # type: ignore[list-item]
    with pytest.raises(sqlite3.IntegrityError):
        bad.result(timeout=10)
    log.log(served, "v1", [data.ids[20]], data.probs[20:21], q[20:21].tolist())
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.log(served, "v1", ["late"], data.probs[:1], q[:1].tolist())
    with sqlite3.connect(tmp_path / "log.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM predictions ORDER BY seq")]
    assert ids == list(data.ids[:21])


def _logged_monitoring(
    tmp_path: Path, rows: int, horizon: int
) -> tuple[Served, PredictionLog, Monitoring]:
    """(served model, prediction log holding its first ``rows`` tweets, Monitoring over it);
    ``horizon`` keeps the cutoff's cache key apart from other tests' (one cache per process)."""
    from verbcal.serve.monitoring import Monitoring, PredictionLog
    from verbcal.serve.registry import load_one

    data = datasets.load("recorded:tweets").labelled()
    served = load_one("tweets", str(fit_file(tmp_path / "ts.json")))
    q = served.calibrator.predict_proba(data.probs[:rows])
    log = PredictionLog(tmp_path / "log.sqlite")
    log.log(served, "v1", data.ids[:rows], data.probs[:rows], q.tolist())
    monitoring = Monitoring(log, {"tweets": "recorded:tweets"}, window=50, horizon=horizon)
    return served, log, monitoring


def test_monitor_answers_under_bonferroni_while_the_cutoff_is_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request waits for the min-p simulation (seconds): until the background thread
    has set the cutoff, Bonferroni's stands in and the summary says so; then it is redone."""
    import threading

    from verbcal.monitor import familywise

    gate = threading.Event()
    real = familywise.simulate_min_p

    def gated(*args: object, **kwargs: object) -> np.ndarray:
        assert gate.wait(60)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(familywise, "simulate_min_p", gated)
    served, log, monitoring = _logged_monitoring(tmp_path, rows=120, horizon=7)
    try:
        first = monitoring.summary(served)["window"]
        assert first["p_rule"] == "bonferroni" and "being simulated" in first["p_rule_reason"]
        thread = monitoring.warm(served)
        assert monitoring.warm(served) is thread  # one simulation per model and calibrator
        gate.set()
        thread.join(60)
        assert not thread.is_alive()
        second = monitoring.summary(served)["window"]
        assert second["p_rule"] == "min-p" and second["p_rule_reason"].startswith("simulated")
        assert second["p_cutoff"] != first["p_cutoff"]
    finally:
        gate.set()
        log.close()


def test_a_failed_simulation_leaves_bonferroni_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from verbcal.monitor import familywise

    def broken(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError("no room for 300 streams")

    monkeypatch.setattr(familywise, "simulate_min_p", broken)
    served, log, monitoring = _logged_monitoring(tmp_path, rows=60, horizon=9)
    try:
        monitoring.warm(served).join(60)
        window = monitoring.summary(served)["window"]
        assert window["p_rule"] == "bonferroni"
        assert (
            "simulation failed" in window["p_rule_reason"] and "no room" in window["p_rule_reason"]
        )
        assert "min-p simulation failed" in caplog.text
    finally:
        log.close()
