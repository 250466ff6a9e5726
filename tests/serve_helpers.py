"""Real uvicorn servers on free loopback ports for the serve tests, and fitted calibrator files."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from verbcal import datasets
from verbcal.calibration import make_calibrator
from verbcal.elicit.local import free_port


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a background thread; stopped on exit."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)


def fit_file(path: Path, method: str = "temperature", data: str = "recorded:tweets") -> Path:
    """Fit ``method`` on bundled recorded replies and save it to ``path``."""
    predictions = datasets.load(data).labelled()
    calibrator = make_calibrator(method)
    calibrator.fit(predictions.probs, predictions.y, labels=predictions.labels)
    calibrator.save(path)
    return path
