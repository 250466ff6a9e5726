"""Hot reload: atomic swap under load with zero failed requests; a bad file keeps the old one; SIGHUP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("aiohttp")
pytest.importorskip("httpx")

import aiohttp
import httpx

from serve_helpers import ServerThread, fit_file
from verbcal.calibration import Calibrator
from verbcal.elicit.local import free_port
from verbcal.serve import ServeConfig, create_app

pytestmark = pytest.mark.server
KEY = "vk-reload-0123456789abcdef"
ROW = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}


def replace_file(source: Path, target: Path) -> None:
    """Write ``source`` over ``target`` atomically (as a deployment would)."""
    temp = target.with_suffix(".tmp")
    shutil.copyfile(source, temp)
    os.replace(temp, target)


class Answers:
    """The answers seen under load, with a condition to wait on (no sleeps)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, Any]] = []
        self.changed = asyncio.Condition()

    async def add(self, answer: tuple[int, Any]) -> None:
        async with self.changed:
            self.seen.append(answer)
            self.changed.notify_all()

    async def wait_for(self, done: Callable[[list[tuple[int, Any]]], bool], what: str) -> None:
        """Until ``done(seen)`` holds; fails after 60 s (a stuck server, not a slow one)."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: done(self.seen)), 60)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None


async def hammer(url: str, stop: asyncio.Event, answers: Answers) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"items": [{"id": str(i), "probs": ROW} for i in range(20)]}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def worker() -> None:
            while not stop.is_set():
                try:
                    async with session.post(url, json=body) as response:
                        payload = await response.json()
                        await answers.add((response.status, payload))
                except aiohttp.ClientError as exc:  # a dropped connection counts as a failure
                    await answers.add((-1, repr(exc)))

        await asyncio.gather(*(worker() for _ in range(16)))


def vector_answers(seen: list[tuple[int, Any]]) -> int:
    return sum(1 for status, payload in seen if status == 200 and payload["method"] == "vector")


def test_reload_under_load_loses_nothing(tmp_path: Path) -> None:
    live = tmp_path / "live.json"
    old, new = fit_file(tmp_path / "ts.json"), fit_file(tmp_path / "vs.json", "vector")
    replace_file(old, live)
    expected = {
        "temperature": Calibrator.load(old).predict_proba([list(ROW.values())])[0],
        "vector": Calibrator.load(new).predict_proba([list(ROW.values())])[0],
    }
    config = ServeConfig(calibrators={"tweets": str(live)}, extra_keys=(KEY,), rate_limit=None)
    with ServerThread(create_app(config)) as running:
        admin = {"Authorization": f"Bearer {KEY}"}
        answers: list[Answers] = []
        reloads: list[httpx.Response] = []

        async def scenario() -> None:
            stop, load_answers = asyncio.Event(), Answers()
            answers.append(load_answers)
            load = asyncio.create_task(hammer(running.url + "/v1/calibrate", stop, load_answers))
            async with httpx.AsyncClient(headers=admin, timeout=30) as client:
                # each step waits on what the load has answered, not on a clock
                await load_answers.wait_for(lambda seen: len(seen) >= 20, "load before reload")
                (tmp_path / "broken.json").write_text('{"format": "verbcal-calibrator", "meth')
                replace_file(tmp_path / "broken.json", live)
                reloads.append(await client.post(running.url + "/v1/admin/reload"))
                after_bad = len(load_answers.seen)
                await load_answers.wait_for(
                    lambda seen: len(seen) >= after_bad + 20, "load after the failed reload"
                )
                replace_file(new, live)
                reloads.append(await client.post(running.url + "/v1/admin/reload"))
                await load_answers.wait_for(
                    lambda seen: vector_answers(seen) >= 20, "answers from the new calibrator"
                )
            stop.set()
            await load

        asyncio.run(scenario())
    seen = answers[0].seen
    failed, bad_reload = [s for s, _ in seen if s != 200], reloads[0]
    assert bad_reload.status_code == 409
    assert bad_reload.json()["error"]["errors"][0]["loc"] == "models.tweets"
    assert "cannot read calibrator" in bad_reload.json()["error"]["message"]
    assert reloads[1].status_code == 200 and reloads[1].json()["generation"] == 2
    assert len(seen) > 50 and not failed, f"{len(failed)} of {len(seen)} requests failed"
    methods = [payload["method"] for _, payload in seen]
    switch = methods.index("vector")
    assert set(methods[:switch]) == {"temperature"} and set(methods[switch:]) == {"vector"}
    for _, payload in seen:  # each response used one calibrator for all its items
        q = [list(item["probs"].values()) for item in payload["items"]]
        assert (
            max(
                abs(a - b)
                for row in q
                for a, b in zip(row, expected[payload["method"]], strict=True)
            )
            < 1e-12
        )
    print(f"reload under load: {len(seen)} requests, {len(failed)} failed, switch at {switch}")


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "verbcal serve exited"
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("verbcal serve did not become ready")


def test_cli_serves_and_reloads_on_sighup(tmp_path: Path) -> None:
    live = tmp_path / "live.json"
    replace_file(fit_file(tmp_path / "ts.json"), live)
    port = free_port()
    env = {**os.environ, "VERBCAL_API_KEYS": KEY}
    command = [
        sys.executable,
        "-c",
        "from verbcal.cli import main; main()",
        "serve",
        "--calibrator",
        f"tweets={live}",
        "--port",
        str(port),
    ]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        headers = {"X-API-Key": KEY}
        first = httpx.get(url + "/v1/models", headers=headers).json()
        assert first["generation"] == 1 and first["models"][0]["method"] == "temperature"
        replace_file(fit_file(tmp_path / "vs.json", "vector"), live)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/v1/models", headers=headers).json()["generation"] == 1:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        after = httpx.get(url + "/v1/models", headers=headers).json()
        assert after["models"][0]["method"] == "vector"
        body = {"items": [{"probs": ROW}]}
        assert (
            httpx.post(url + "/v1/calibrate", json=body, headers=headers).json()["method"]
            == "vector"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(
        line.get("message") == "reloaded" and line.get("source") == "SIGHUP" for line in lines
    )
    assert any(line.get("message") == "request" and line.get("request_id") for line in lines)
    assert KEY not in log.read_text()


@pytest.mark.slow
def test_cli_with_two_workers_and_the_factory_route(tmp_path: Path) -> None:
    live = fit_file(tmp_path / "ts.json")
    port = free_port()
    env = {**os.environ, "VERBCAL_API_KEYS": KEY}
    command = [
        sys.executable,
        "-c",
        "from verbcal.cli import main; main()",
        "serve",
        "--calibrator",
        f"tweets={live}",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        body = {"items": [{"probs": ROW}]}
        answers = [
            httpx.post(url + "/v1/calibrate", json=body, headers={"X-API-Key": KEY})
            for _ in range(6)
        ]
        assert all(a.status_code == 200 for a in answers)
        assert len({json.dumps(a.json()) for a in answers}) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_config_travels_as_json_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fit_file(tmp_path / "ts.json")
    config = ServeConfig(calibrators={"tweets": str(path)}, max_items=7, extra_keys=(KEY,))
    assert KEY not in config.to_json()
    monkeypatch.setenv("VERBCAL_SERVE_CONFIG", config.to_json())
    monkeypatch.setenv("VERBCAL_API_KEYS", KEY)
    with ServerThread(create_app()) as running:  # the --factory route: config from the environment
        url = running.url + "/v1/calibrate"
        assert httpx.post(url, json={"items": [{"probs": ROW}]}).status_code == 401
        many = {"items": [{"probs": ROW}] * 8}
        response = httpx.post(url, json=many, headers={"X-API-Key": KEY})
        assert response.status_code == 422 and "limit of 7" in response.text


def test_reload_of_a_file_with_bad_values_answers_409_and_keeps_the_old(tmp_path: Path) -> None:
    """A well-formed file whose values are impossible (T = 0 made every answer NaN) is
    refused by the same checks as a broken one; the old calibrator keeps serving."""
    live = tmp_path / "live.json"
    replace_file(fit_file(tmp_path / "ts.json"), live)
    before = Calibrator.load(live).predict_proba([list(ROW.values())])[0]
    config = ServeConfig(calibrators={"tweets": str(live)}, extra_keys=(KEY,), rate_limit=None)
    headers = {"Authorization": f"Bearer {KEY}"}
    with ServerThread(create_app(config)) as running:
        for damage in ({"temperature": 0}, {"temperature": -3}, None):
            data = json.loads((tmp_path / "ts.json").read_text())
            if damage is None:
                del data["state"]
            else:
                data["state"].update(damage)
            (tmp_path / "bad.json").write_text(json.dumps(data))
            replace_file(tmp_path / "bad.json", live)
            answer = httpx.post(running.url + "/v1/admin/reload", headers=headers, timeout=30)
            assert answer.status_code == 409, answer.text
            error = answer.json()["error"]
            assert error["errors"][0]["loc"] == "models.tweets"
            assert str(live) in error["message"] and "state" in error["message"]
            served = httpx.post(
                running.url + "/v1/calibrate",
                json={"items": [{"probs": ROW}]},
                headers=headers,
                timeout=30,
            )
            assert served.status_code == 200
            q = list(served.json()["items"][0]["probs"].values())
            assert max(abs(a - b) for a, b in zip(q, before, strict=True)) < 1e-12
        models = httpx.get(running.url + "/v1/models", headers=headers, timeout=30).json()
        assert models["generation"] == 1
