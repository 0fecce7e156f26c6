"""`python -m bench raft` at a tiny size: real 3-process clusters, one JSON line per system and scenario.

No timing thresholds here (this machine's speed is not the code's behaviour): the tests check that each
system is measured, that the lines carry what a reader of the benchmark needs, that the numbers agree with
each other, that pipelining really keeps many writes in flight, and that the summary judges the targets.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is not installed; plain `pytest` does not put the checkout on the path

from bench.raft import summary
from bench.workload import PAYLOAD_BYTES, WorkloadPlan

FIELDS = {"system", "scenario", "p50_ms", "p99_ms", "writes_per_s", "writes", "in_flight", "seconds"}
WRITES = 50
PIPELINED_WRITES = 500
IN_FLIGHT = 200
RUN_TIMEOUT = 240
"""Seconds for the whole command: startup, elections and pysyncobj's ~100 ms commits, with a wide margin."""

HAS_PYSYNCOBJ = importlib.util.find_spec("pysyncobj") is not None


def run_raft_bench(*args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "bench", "raft", "--warmup", "20", "--writes", str(WRITES),
        "--pipelined-writes", str(PIPELINED_WRITES), "--in-flight", str(IN_FLIGHT), *args,
    ]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
@pytest.mark.parametrize(
    "system",
    ["raftswarm", pytest.param("pysyncobj", marks=pytest.mark.skipif(not HAS_PYSYNCOBJ, reason="not installed"))],
)
def test_each_system_reports_a_sequential_and_a_pipelined_line_whose_numbers_agree(system):
    result = run_raft_bench("--systems", system, "--json-only")
    assert result.stderr == ""  # --json-only: no summary
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["system"], line["scenario"]) for line in lines] == [(system, "sequential"), (system, "pipelined")]
    sequential, pipelined = lines
    for line, writes in ((sequential, WRITES), (pipelined, PIPELINED_WRITES)):
        assert FIELDS <= line.keys()
        assert line["writes"] == writes  # every write committed, none lost to a timeout
        assert line["payload_bytes"] == PAYLOAD_BYTES and line["members"] == 3 and line["cpus"] >= 1
        assert 0 < line["p50_ms"] <= line["p99_ms"] <= line["max_ms"] <= line["seconds"] * 1000 + 1  # + rounding
        assert line["writes_per_s"] == pytest.approx(line["writes"] / line["seconds"], rel=0.05)
    assert sequential["in_flight"] == 1
    assert 1 < pipelined["in_flight"] <= IN_FLIGHT  # pipelined means many writes outstanding, never more than asked
    # One client waiting for each commit: the run lasts at least the sum of its median half.
    assert sequential["seconds"] * 1000 >= sequential["p50_ms"] * WRITES / 2


def test_the_summary_judges_each_target_from_the_measurements():
    def line(system, scenario, writes, p50, p99, rate):
        return {"system": system, "scenario": scenario, "writes": writes, "in_flight": 1, "p50_ms": p50,
                "p99_ms": p99, "writes_per_s": rate}

    text = summary(
        [
            line("raftswarm", "sequential", 100, 3.0, 9.0, 333.0),
            line("raftswarm", "pipelined", 1000, 40.0, 80.0, 20_000.0),
            line("pysyncobj", "pipelined", 400, 100.0, 200.0, 10_000.0),
        ],
        WorkloadPlan(writes=100, pipelined_writes=1000, max_seconds=5),
    )
    assert "p50 <= 2 ms: 3.00 ms  MISSED (1.5x the target)" in text
    assert "p99 <= 10 ms: 9.00 ms  met" in text
    assert "20,000 vs 10,000 writes/s (2.00x)  met" in text
    assert text.count("(stopped after 5 s)") == 1  # only pysyncobj's pipelined run fell short of its count


def test_an_unknown_system_is_refused_before_anything_starts():
    command = [sys.executable, "-m", "bench", "raft", "--systems", "etcd"]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "raftswarm,pysyncobj" in result.stderr and result.stdout == ""
