"""`python -m bench schedule` at a tiny size: a real 3+2 swarm for create and failover, 3 managers and 20
simulated agents for scale, one JSON line per scenario and a summary line.

No timing thresholds (this machine's speed is not the code's behaviour): the tests check that every
scenario is measured, that each line carries what a reader of the benchmark needs, that its numbers agree
with each other, and that the summary judges the targets from them.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is not installed; plain `pytest` does not put the checkout on the path

from bench.schedule import summary_line

REPLICAS = 10
AGENTS = 20
TASKS = 100
RUN_TIMEOUT = 150
"""Seconds for the whole command: two clusters up and down, a node declared down after 3 s, 5 s of steady
state, with a wide margin."""


def run_schedule_bench(*args: str) -> list[dict]:
    command = [sys.executable, "-m", "bench", "schedule", "--json-only", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the bench removes its clusters on SIGTERM, not on SIGKILL
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"the bench took over {RUN_TIMEOUT} s:\n{stderr}")
    assert process.returncode == 0, stderr
    assert stderr == ""  # --json-only
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.slow
def test_every_scenario_reports_one_line_whose_numbers_agree_and_a_summary_judges_the_targets():
    lines = run_schedule_bench(
        "--replicas", str(REPLICAS), "--repeat", "1", "--agents", str(AGENTS), "--tasks", str(TASKS)
    )
    assert [line["scenario"] for line in lines] == ["create", "failover", "scale", "summary"]
    create, failover, scale, summary = lines

    assert create["tasks"] == REPLICAS and create["nodes"] == 5 and create["repeat"] == 1
    [run] = create["runs"]
    assert 0 < run["assigned_s"] <= run["running_s"]  # every task assigned no later than all running
    assert run["running_ts_s"] <= run["running_s"] + 0.001  # stamped by the leader before we could see it
    assert 0 < run["assigned_read_ms"] <= run["assigned_s"] * 1000 + 0.1
    assert sum(run["spread"]) == REPLICAS and len(run["spread"]) == 5  # on every node: no constraint
    assert create["p50_s"] == create["max_s"] == create["assigned_s"] == run["assigned_s"]  # one run
    assert create["running_s"] == run["running_s"]
    assert create["met"] == (create["max_s"] <= create["target_s"])

    assert failover["killed"] == "worker2" and failover["tasks"] == REPLICAS
    assert failover["lost_tasks"] >= 1 and failover["replaced_tasks"] == failover["lost_tasks"]
    assert 0 < failover["detected_s"] <= failover["assigned_s"] <= failover["running_s"]
    assert failover["replaced_after_detection_s"] == pytest.approx(
        failover["running_s"] - failover["detected_s"], abs=0.002
    )
    assert sum(failover["spread_after"]) == REPLICAS and len(failover["spread_after"]) == 4  # not on worker2
    assert isinstance(failover["restart_delay_applied"], bool)
    assert failover["met"] == (failover["running_s"] <= failover["target_s"])

    assert scale["agents"] == AGENTS and scale["tasks"] == TASKS and scale["nodes"] == AGENTS + 3
    assert scale["completed"] is True
    assert scale["assigned_tasks"] == scale["running_tasks"] == scale["running_in_store"] == TASKS
    assert 0 < scale["assigned_s"] <= scale["running_s"] <= scale["waited_s"] + 0.001
    low, high = scale["tasks_per_agent"]
    assert low * AGENTS <= TASKS <= high * AGENTS  # the tasks went to the simulated agents, not the managers
    assert scale["heartbeats"] >= AGENTS and scale["refused_reports"] == 0
    assert [m["name"] for m in scale["managers"]] == ["manager1", "manager2", "manager3"]
    assert sum(m["leader"] for m in scale["managers"]) == 1
    for manager in scale["managers"]:
        assert 0 <= manager["cpu_s"] <= manager["cpu_s_whole_run"]
        assert 0 < manager["rss_mb"] <= manager["peak_rss_mb"]
        assert manager["steady_cpu_pct"] >= 0
    assert 0 <= scale["bench_cpu_s"] <= scale["bench_cpu_s_whole_run"]

    assert summary == summary_line([create, failover, scale])


def test_the_summary_judges_create_on_its_slowest_run_and_failover_on_its_replacement_time():
    create = {
        "scenario": "create",
        "target": "all 100 tasks ASSIGNED, every run",
        "max_s": 0.7,
        "p50_s": 0.2,
        "target_s": 0.5,
        "met": False,
    }
    failover = {
        "scenario": "failover",
        "target": "the 20 lost replicas RUNNING elsewhere",
        "running_s": 4.0,
        "target_s": 5.0,
        "met": True,
    }
    scale = {"scenario": "scale", "target_s": None, "met": None}
    line = summary_line([create, failover, scale])
    assert line["measured"] == ["create", "failover", "scale"]
    assert [(t["scenario"], t["value_s"], t["met"]) for t in line["targets"]] == [
        ("create", 0.7, False),
        ("failover", 4.0, True),
    ]
    assert line["met"] is False
    assert summary_line([scale])["met"] is None  # nothing with a target was measured
