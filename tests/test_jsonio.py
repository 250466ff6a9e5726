import json
import math
from pathlib import Path

import numpy as np

from verbcal.jsonio import json_ready, write_json


def test_json_ready_gives_strict_json() -> None:
    data = {1: (np.float64(0.5), np.int64(3)), "a": [math.nan, math.inf, np.array([1.0, -np.inf])]}
    assert json_ready(data) == {"1": [0.5, 3], "a": [None, None, [1.0, None]]}
    json.dumps(json_ready(data), allow_nan=False)


def test_write_json(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"v": np.float32(0.25), "n": math.nan})
    assert json.loads((tmp_path / "x.json").read_text("utf-8")) == {"v": 0.25, "n": None}
