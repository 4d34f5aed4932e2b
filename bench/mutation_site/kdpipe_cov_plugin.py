"""pytest plugin of the mutation bench's coverage pass: label coverage by test, record each test's duration.

Loaded with `-p kdpipe_cov_plugin` (this folder on PYTHONPATH, sitecustomize.py started coverage).
"""
import json
import os

import coverage
import pytest

_durations: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = coverage.Coverage.current()
    os.environ["KDPIPE_COV_CONTEXT"] = item.nodeid  # for the subprocesses this test starts
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    os.environ.pop("KDPIPE_COV_CONTEXT", None)
    if cov is not None:
        cov.switch_context("")


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.failed and report.when == "call":
        _durations[report.nodeid + "::FAILED"] = 1.0


def pytest_sessionfinish(session):
    if _durations:
        path = os.path.join(os.environ["KDPIPE_COV_DIR"], f"durations-{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump(_durations, f)
