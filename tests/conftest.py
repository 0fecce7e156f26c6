import sys
from pathlib import Path

# Test helper modules (raft_inprocess, raft_harness, raft_mutants) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

from raft_inprocess import cluster  # noqa: E402,F401  (the in-process Raft cluster fixture, for every test file)

import os  # noqa: E402

import pytest  # noqa: E402

_SECURITY_FILES = "test_security_"
"""Every test in a file named so tries to break a security property of DESIGN.md (and carries the
`security` mark, as may tests elsewhere)."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name.startswith(_SECURITY_FILES):
            item.add_marker(pytest.mark.security)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where security tests must run (`.ci/run` sets RAFTSWARM_REQUIRE_SECURITY_TESTS=1), one that skips fails:
    a skipped attack proves nothing, and CI must not go green without it."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("security") and os.environ.get("RAFTSWARM_REQUIRE_SECURITY_TESTS") == "1":
        report.outcome = "failed"
        report.longrepr = f"security test skipped where it must run: {report.longrepr}"
