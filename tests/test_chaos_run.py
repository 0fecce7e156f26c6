"""`python -m chaos run`: faults injected into real swarms, and the checkers that judge the histories.

The CI subset (leader kill, leader partition, all managers killed at once, torn WAL tail) runs here on real
3+2 swarms, each check must hold, and the stale-read mode must be caught by the linearizability checker: a
checker that never fails would pass every other test here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from chaos.cluster import checkers
from chaos.cluster.runner import RunOptions, run_scenario, summary
from chaos.cluster.scenarios import CI_SUBSET, SCENARIOS
from chaos.cluster.workload import Acks
from raftswarm.localcluster.swarm import REGISTRY_STORAGE
from raftswarm.localcluster.hostnet import netns_unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
CI_DURATION = 15.0

needs_netns = pytest.mark.skipif(
    bool(netns_unavailable_reason()) or not shutil.which("nft"),
    reason=f"chaos runs need a network namespace per node and nft: {netns_unavailable_reason() or 'nft missing'}",
)


# -- the checkers, on evidence made up to break them ------------------------------------------------------


def test_an_acknowledged_write_missing_at_the_end_is_reported_lost():
    acks = Acks(ok={"a", "b"}, info={"c"}, fail={"d"})
    assert checkers.acknowledged_writes(acks, {"a", "b", "c"})["ok"]
    assert checkers.acknowledged_writes(acks, {"a", "b"})["ok"]  # an unknown outcome may have failed
    lost = checkers.acknowledged_writes(acks, {"a", "c"})
    assert not lost["ok"] and lost["lost"] == ["b"]
    phantom = checkers.acknowledged_writes(acks, {"a", "b", "d"})  # told it failed, yet there
    assert not phantom["ok"] and phantom["present_but_failed_or_never_written"] == ["d"]


def test_two_nodes_winning_the_same_term_are_reported(tmp_path):
    logs = {}
    for name, terms in (("manager1", [2, 5]), ("manager2", [3]), ("manager3", [4])):
        logs[name] = tmp_path / f"{name}.log"
        logs[name].write_text("".join(f"2026 INFO raftswarm.raft.driver: raft 1a: became leader in term {t}\n" for t in terms))
    assert checkers.leaders_per_term(logs) == {"ok": True, "terms_with_a_leader": 4, "highest_term": 5, "terms_with_two_leaders": {}}
    logs["manager3"].write_text("x INFO raftswarm.raft.driver: raft 3c: became leader in term 5\n")
    verdict = checkers.leaders_per_term(logs)
    assert not verdict["ok"] and verdict["terms_with_two_leaders"] == {"5": ["manager1", "manager3"]}


def test_a_node_holding_a_secret_no_task_of_it_references_is_reported():
    task_secrets = {"t1": {"s1"}, "t2": set()}
    fine = [{"t": 1.0, "node": "worker1", "tasks": ["t1"], "secrets": ["s1"]}, {"t": 1.0, "node": "worker2", "tasks": ["t2"], "secrets": []}]
    assert checkers.secret_exposure(fine, task_secrets)["ok"]
    leaked = fine + [{"t": 2.0, "node": "worker2", "tasks": ["t2"], "secrets": ["s1"]}]
    verdict = checkers.secret_exposure(leaked, task_secrets)
    assert not verdict["ok"] and verdict["violations"][0]["node"] == "worker2"
    kept = fine + [{"t": 3.0, "node": "worker1", "tasks": [], "secrets": ["s1"]}]  # its task gone, secret kept
    assert not checkers.secret_exposure(kept, task_secrets)["ok"]


# -- the command line -------------------------------------------------------------------------------------


def test_the_command_lists_its_scenarios_and_refuses_unknown_ones():
    listed = subprocess.run([sys.executable, "-m", "chaos", "run", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(SCENARIOS)
    assert sum("[ci]" in line for line in listed.stdout.splitlines()) == len(CI_SUBSET)
    bad = subprocess.run([sys.executable, "-m", "chaos", "run", "--scenario", "meteor"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown scenario meteor" in bad.stderr


# -- real swarms ------------------------------------------------------------------------------------------


@pytest.fixture
def clusters_dir():
    """Short, unlike tmp_path: the nodes' API sockets live below it (unix socket paths hold 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="rsw-chaos-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@needs_netns
@pytest.mark.slow
@pytest.mark.parametrize("scenario", CI_SUBSET)
async def test_the_ci_scenarios_hold_every_check(scenario, tmp_path, clusters_dir):
    options = RunOptions(duration=CI_DURATION, seed=20261121, out=tmp_path / "reports", clusters_dir=clusters_dir)
    report = await run_scenario(scenario, options)
    text = summary(report)
    assert report["ok"], text + "\n" + report.get("traceback", "")
    assert report["faults"], "the scenario injected no fault"
    ops = report["operations"]
    assert sum(by_type.get("ok", 0) for by_type in ops.values()) > 100, text
    assert report["checks"]["acknowledged_writes"]["acknowledged"] > 10, text
    if scenario in ("leader-kill", "partition-leader"):
        assert report["failover"]["leader_losses"] >= 1, text  # the fault really took the leader away
    written = json.loads((tmp_path / "reports" / f"{scenario}.json").read_text())
    assert written["checks"]["linearizability"]["result"] == "linearizable"
    assert (tmp_path / "reports" / f"{scenario}.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "reports" / f"{scenario}.txt").read_text().startswith(f"{scenario}: PASS")
    # Only the registry's storage stays (it is kept across clusters by design: localcluster.swarm.REGISTRY_STORAGE).
    assert [p.name for p in clusters_dir.iterdir()] in ([], [REGISTRY_STORAGE]), "the cluster was not taken down"


@needs_netns
@pytest.mark.slow
async def test_stale_reads_from_an_isolated_follower_are_reported_not_linearizable(tmp_path, clusters_dir):
    options = RunOptions(duration=12.0, seed=7, stale_reads=True, out=tmp_path / "reports", clusters_dir=clusters_dir)
    report = await run_scenario("partition-follower", options)
    verdict = report["checks"]["linearizability"]
    assert verdict["result"] == "not linearizable", summary(report)
    assert verdict["failure"]["key"].startswith("r")
    assert not report["ok"]
    assert summary(report).startswith("partition-follower: FAIL")
