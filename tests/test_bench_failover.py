"""`python -m bench failover` at a tiny size: 2 leader kills and a worker kill on a real 3+2 swarm. No timing
thresholds: the lines must be complete and consistent, and the summary must judge them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_failover_bench_measures_leader_and_worker_failover():
    command = [sys.executable, "-m", "bench", "failover", "--json-only", "--runs", "2", "--replicas", "6"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    leader, worker, summary = (json.loads(line) for line in done.stdout.splitlines())
    assert leader["scenario"] == "leader" and leader["runs"] == 2
    assert 0 < leader["new_leader_p50_s"] <= leader["new_leader_p99_s"]
    assert 0 < leader["first_write_p50_s"] <= leader["first_write_p99_s"]
    assert leader["met"] == (leader["first_write_p50_s"] <= leader["target_s"])
    # Client-visible failover: a read and a write sent to a survivor at the kill both answered.
    assert 0 < leader["client_read_p50_s"] <= leader["client_read_p99_s"] and leader["client_read_failures"] == 0
    assert 0 < leader["client_write_p50_s"] <= leader["client_write_p99_s"]
    assert worker["tasks"] == 6 and worker["lost_tasks"] == worker["replaced_tasks"]
    assert [t["scenario"] for t in summary["targets"]] == ["leader", "worker"]
    assert summary["targets"][0]["value_s"] == leader["first_write_p50_s"]
