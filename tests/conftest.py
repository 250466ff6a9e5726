"""Suite-wide settings: hypothesis profiles and the markers a developer can deselect.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``, and the default when ``CI`` is set) makes
property tests derandomized: the same examples on every run, so a green CI is not luck.
Local runs use ``dev`` and keep exploring new examples.

Markers (CI runs everything; deselect locally with ``-m "not slow and not server"``):
``server`` starts a real server, process or browser on loopback; ``slow`` takes seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
