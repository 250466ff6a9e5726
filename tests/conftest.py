"""Shared fixtures: one real Ray cluster and one real Spark session per test session.

Both start lazily (only for the tests that ask for them) and stop when the session ends.
Tests using them are marked ``server`` and ``slow``: deselect with ``-m "not server"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

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
