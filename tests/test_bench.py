"""`python -m bench raft --quick`: real 3-member clusters of raftswarm, etcd and pysyncobj, one JSON line per
system, path and scenario.

No timing thresholds here (this machine's speed is not the code's behaviour): the tests check that each
system is measured on each of its paths, that the lines carry what a reader of the benchmark needs, that
the numbers agree with each other, that the in-flight scenario really keeps many writes outstanding, that
raftswarm's lines carry their ratio to etcd, that a system not installed is reported as skipped, and that
the summary judges the targets.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is not installed; plain `pytest` does not put the checkout on the path

from bench.raft import merge_rounds, summary, with_ratios
from bench.workload import PAYLOAD_BYTES, QUICK_PLAN, WorkloadPlan

FIELDS = {"system", "path", "scenario", "p50_ms", "p99_ms", "ops_per_s", "writes", "in_flight", "seconds"}
IN_FLIGHT = f"in-flight-{QUICK_PLAN.in_flight}"
RUN_TIMEOUT = 300
"""Seconds for the whole quick run: four clusters started one after the other, elections and pysyncobj's
~100 ms commits, with a wide margin."""

HAS_ETCD = shutil.which("etcd") is not None
HAS_PYSYNCOBJ = importlib.util.find_spec("pysyncobj") is not None

EXPECTED_LINES = [
    ("raftswarm", "api", "sequential"),
    ("raftswarm", "api", IN_FLIGHT),
    ("raftswarm", "leader-local", "sequential"),
    ("raftswarm", "leader-local", IN_FLIGHT),
    *([("etcd", "api", "sequential"), ("etcd", "api", IN_FLIGHT)] if HAS_ETCD else [("etcd", None, None)]),
    *(
        [("pysyncobj", "api", "sequential"), ("pysyncobj", "api", IN_FLIGHT)]
        if HAS_PYSYNCOBJ
        else [("pysyncobj", None, None)]
    ),
]
"""In the order measured; a system that is not installed has one `skipped` line instead."""


def run_raft_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", "raft", "--quick", "--json-only", *args]
    result = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --json-only: no progress, no summary
    return result


@pytest.fixture(scope="module")
def quick_run() -> list[dict]:
    return [json.loads(line) for line in run_raft_bench().stdout.splitlines()]


def measured(lines: list[dict]) -> list[dict]:
    return [line for line in lines if "skipped" not in line]


@pytest.mark.slow
def test_every_system_path_and_scenario_has_one_line(quick_run):
    assert [(line["system"], line.get("path"), line.get("scenario")) for line in quick_run] == EXPECTED_LINES


@pytest.mark.slow
def test_each_line_has_the_figures_and_they_agree_with_each_other(quick_run):
    for line in measured(quick_run):
        assert FIELDS <= line.keys(), line
        writes = QUICK_PLAN.writes if line["scenario"] == "sequential" else QUICK_PLAN.pipelined_writes
        assert line["writes"] == writes  # every write committed, none lost to a timeout
        assert line["payload_bytes"] == PAYLOAD_BYTES and line["members"] == 3 and line["cpus"] >= 1
        assert 0 < line["p50_ms"] <= line["p99_ms"] <= line["max_ms"] <= line["seconds"] * 1000 + 1  # + rounding
        assert line["ops_per_s"] == pytest.approx(line["writes"] / line["seconds"], rel=0.05)
        if line["scenario"] == "sequential":
            assert line["in_flight"] == 1
            # One client waiting for each commit: the run lasts at least the sum of its median half.
            assert line["seconds"] * 1000 >= line["p50_ms"] * writes / 2
        else:  # many writes outstanding, never more than asked
            assert 1 < line["in_flight"] <= QUICK_PLAN.in_flight


@pytest.mark.slow
def test_client_api_lines_say_how_the_client_reached_each_system_and_the_cpu_it_took(quick_run):
    transports = {"raftswarm": "unix", "etcd": "tcp"}
    api = [line for line in measured(quick_run) if line["path"] == "api" and line["system"] in transports]
    assert {line["system"] for line in api} == ({"raftswarm", "etcd"} if HAS_ETCD else {"raftswarm"})
    for line in api:
        assert line["transport"] == transports[line["system"]]
        assert line["client_cpu_s"] >= 0 and line["members_cpu_s"] >= 0
        if line["scenario"] == IN_FLIGHT:  # hundreds of writes: both sides used measurable CPU
            assert line["client_cpu_s"] > 0 and line["members_cpu_s"] > 0
    assert all(line["version"].startswith("3.") for line in api if line["system"] == "etcd")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ETCD, reason="etcd-server is not installed")
def test_raftswarm_lines_carry_their_ratio_to_etcd_in_the_same_scenario(quick_run):
    etcd = {line["scenario"]: line for line in quick_run if line["system"] == "etcd"}
    for line in (line for line in quick_run if line["system"] == "raftswarm"):
        theirs = etcd[line["scenario"]]
        assert line["vs_etcd"] == {
            "p50_ms": round(line["p50_ms"] / theirs["p50_ms"], 2),
            "p99_ms": round(line["p99_ms"] / theirs["p99_ms"], 2),
            "ops_per_s": round(line["ops_per_s"] / theirs["ops_per_s"], 2),
        }
    assert all("vs_etcd" not in line for line in quick_run if line["system"] != "raftswarm")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_PYSYNCOBJ, reason="pysyncobj is not installed")
def test_pysyncobj_lines_say_they_were_measured_in_its_leaders_process(quick_run):
    lines = [line for line in quick_run if line["system"] == "pysyncobj"]
    assert lines and all(line["path"] == "api" and "in-process" in line["note"] for line in lines)


def test_a_system_that_is_not_installed_gets_a_skipped_line_saying_what_to_install(tmp_path):
    # No etcd on an empty PATH; the bench itself runs from sys.executable's absolute path.
    result = run_raft_bench("--systems", "etcd", env={**os.environ, "PATH": str(tmp_path)})
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"system": "etcd", "skipped": "etcd is not installed: apt-get install etcd-server (Debian 12 has etcd 3.4)"}
    ]


def test_a_system_that_cannot_start_fails_the_run_with_its_members_logs(tmp_path):
    etcd = tmp_path / "etcd"  # answers --version, then refuses to start as a member
    etcd.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo "etcd Version: 3.4.0" && exit 0\necho "no disk" >&2\nexit 3\n'
    )
    etcd.chmod(0o755)
    command = [sys.executable, "-m", "bench", "raft", "--quick", "--systems", "etcd"]
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "etcd (api) could not be measured: etcd1 exited with status 3" in result.stderr
    assert "--- etcd1 ---\nno disk\n" in result.stderr  # the failed member's log says why
    assert result.stderr.count("--- etcd3 ---") == 1  # every member's log, once


def test_the_summary_shows_the_ratios_to_etcd_and_judges_each_target():
    def line(system, path, scenario, writes, p50, p99, rate):
        return {"system": system, "path": path, "scenario": scenario, "writes": writes, "in_flight": 1,
                "p50_ms": p50, "p99_ms": p99, "ops_per_s": rate}

    records = [
        line("raftswarm", "api", "sequential", 100, 4.0, 12.0, 250.0),
        line("raftswarm", "leader-local", "sequential", 100, 3.0, 9.0, 333.0),
        line("raftswarm", "leader-local", "in-flight-64", 1000, 40.0, 80.0, 20_000.0),
        line("etcd", "api", "sequential", 100, 2.0, 8.0, 500.0),
        line("pysyncobj", "api", "in-flight-64", 400, 100.0, 200.0, 10_000.0),
    ]
    ratios = [r.get("vs_etcd") for r in with_ratios(records)]
    assert ratios == [
        {"p50_ms": 2.0, "p99_ms": 1.5, "ops_per_s": 0.5},
        {"p50_ms": 1.5, "p99_ms": 1.12, "ops_per_s": 0.67},
        None,  # etcd has no in-flight line to compare with
        None, None,  # only raftswarm's lines are compared
    ]
    text = summary(records, WorkloadPlan(writes=100, pipelined_writes=1000, max_seconds=5))
    assert "vs etcd: p50 2.00x p99 1.50x ops/s 0.50x" in text
    assert "sequential p50 <= 2 ms: 3.00 ms  MISSED (1.5x the target)" in text
    assert "sequential p99 <= 10 ms: 9.00 ms  met" in text
    assert "20,000 vs 10,000 ops/s (2.00x)  met" in text
    assert text.count("(stopped after 5 s)") == 1  # only pysyncobj's in-flight run fell short of its count
    assert "raftswarm api sequential p50 <= etcd's: 4.00 vs 2.00 ms (2.00x)  MISSED" in text
    assert "raftswarm api sequential p99 <= etcd's: 12.00 vs 8.00 ms (1.50x)  MISSED" in text
    records.append(line("etcd", "api", "in-flight-64", 1000, 50.0, 90.0, 8_000.0))
    records.append(line("raftswarm", "api", "in-flight-64", 1000, 40.0, 80.0, 9_000.0))
    text = summary(records, WorkloadPlan(writes=100, pipelined_writes=1000, max_seconds=5))
    assert "raftswarm api in-flight-64 ops_per_s >= etcd's: 9,000.00 vs 8,000.00 ops/s (1.12x)  met" in text


def test_rounds_are_merged_into_medians_with_every_rounds_figures():
    def line(system, p50, rate):
        return {"system": system, "path": "api", "scenario": "sequential", "writes": 100, "p50_ms": p50,
                "p99_ms": p50 * 2, "ops_per_s": rate}

    skipped = {"system": "pysyncobj", "skipped": "not installed"}
    rounds = [
        [line("raftswarm", 1.3, 700.0), line("etcd", 1.1, 850.0), skipped],
        [line("raftswarm", 1.5, 600.0), line("etcd", 1.2, 800.0), skipped],
        [line("raftswarm", 1.2, 750.0), skipped],  # etcd failed in this round
    ]
    merged = merge_rounds(rounds)
    ours, etcd, pysyncobj = merged
    assert (ours["p50_ms"], ours["p99_ms"], ours["ops_per_s"], ours["rounds"]) == (1.3, 2.6, 700.0, 3)
    assert ours["p50_ms_rounds"] == [1.3, 1.5, 1.2]
    assert (etcd["p50_ms"], etcd["ops_per_s"], etcd["rounds"]) == (1.15, 825.0, 2)
    assert pysyncobj == skipped
    assert merge_rounds(rounds[:1]) == rounds[0]  # one round: the lines as measured


def test_an_unknown_system_is_refused_before_anything_starts():
    command = [sys.executable, "-m", "bench", "raft", "--systems", "zookeeper"]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "raftswarm,etcd,pysyncobj" in result.stderr and result.stdout == ""
