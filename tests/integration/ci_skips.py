"""A pytest plugin (loaded by conftest.py): with CI=true, a test that skips
because it needs root fails instead. CI runs as root, so such a skip means a
test silently stopped running (a changed check, a lost privilege), not that
the machine cannot run it."""

import os

import pytest


def _reason(report):
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped:
        return
    reason = _reason(report)
    if "root" in reason.lower():
        report.outcome = "failed"
        report.longrepr = (f"CI=true: this root-only test skipped ({reason}); CI runs as root, "
                           "so it must run here")
