"""Suite-wide settings: hypothesis profiles and the markers a developer can deselect.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``, and the default when ``CI`` is set) makes
property tests derandomized: the same examples on every run, so a green CI is not luck.
Local runs use ``dev`` and keep exploring new examples.

Markers (CI runs everything; deselect locally with ``-m "not slow and not server"``):
``server`` starts a real server, process or browser on loopback; ``slow`` takes seconds.

Shared fixtures: one real Ray cluster and one real Spark session per test session. Both
start lazily (only for the tests that ask for them) and stop when the session ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, database=None)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
"""In CI nothing may be skipped: a skip there hides a missing install step."""


def _fail_skips_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


ENGINE_KEY = "sk-test-ENGINEKEY0123456789"
"""The fake API key the Ray workers see (the fake LLM servers accept any key)."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster with 2 CPUs, no dashboard, token authentication off."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OPENAI_API_KEY": ENGINE_KEY}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] Spark session with 2 shuffle partitions; its workers run this Python."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this Python
    session = (
        SparkSession.builder.master("local[2]")
        .appName("verbcal-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
