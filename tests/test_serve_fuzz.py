"""schemathesis fuzzes the running service from its own /openapi.json: no input makes it answer 500."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serve_helpers import ServerThread, fit_file
from verbcal.serve import ServeConfig, create_app

pytestmark = [pytest.mark.server, pytest.mark.slow]
KEY = "vk-fuzz-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gets_a_server_error(tmp_path: Path, mode: GenerationMode) -> None:
    config = ServeConfig(
        calibrators={"tweets": str(fit_file(tmp_path / "ts.json"))},
        extra_keys=(KEY,),
        rate_limit=None,
        max_items=50,
        max_body_bytes=100_000,
    )
    statuses: Counter[tuple[str, int]] = Counter()
    with ServerThread(create_app(config)) as running:
        schema = schemathesis.openapi.from_url(running.url + "/openapi.json", headers=AUTH)

        @given(case=schema.as_strategy(mode))
        @settings(
            max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(headers=AUTH, checks=CHECKS)
            statuses[(case.operation.label, response.status_code)] += 1

        fuzz()
    assert sum(statuses.values()) >= 300 and all(code < 500 for _, code in statuses)
    reached = {label for label, _ in statuses}
    assert {"POST /v1/calibrate", "POST /v2/models/{name}/infer"} <= reached
    if mode == GenerationMode.POSITIVE:  # (routes without parameters have no negative cases)
        assert len(reached) == len(list(schema.get_all_operations()))
    summary: Counter[int] = Counter()
    for (_, code), count in statuses.items():
        summary[code] += count
    print(f"schemathesis {mode.value}: {sum(statuses.values())} requests, statuses {dict(summary)}")
