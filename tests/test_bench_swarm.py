"""`python -m bench swarm` without starting a swarm: what it counts as a node's memory and as a task's (the
process trees), how it judges its targets, and that bad options are refused before anything is made. The
benchmark itself runs real Docker swarm and raftswarm (minutes): the README gives the command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.swarm import AHEAD, AT_MOST, Member, System, memory, summary


def _system(directory: Path, daemons: list[subprocess.Popen]) -> System:
    members = [
        Member(f"node{i}", "manager", f"id{i}", None, lambda p=p: p.pid)  # type: ignore[arg-type]
        for i, p in enumerate(daemons)
    ]
    return System("test", members, directory, "fakemon", 0.0, 0.0, None, None, None)  # type: ignore[arg-type]


def test_a_task_is_its_monitor_and_everything_below_it_and_a_node_is_its_daemon_without_them(tmp_path):
    monitor = tmp_path / "fakemon"  # a task monitor: its command name, and the swarm's directory in its argv
    shutil.copy("/bin/sh", monitor)
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tasks = [subprocess.Popen([str(monitor), "-c", "sleep 60 & wait"]) for _ in range(2)]
    outsider = subprocess.Popen([str(shutil.which("sleep")), "60"])  # neither: not counted at all
    try:
        deadline = time.monotonic() + 10
        while True:
            measured = memory(_system(tmp_path, [daemon]))
            # Settled: both shells have forked their sleep and it has exec'd (a child caught between fork and
            # exec is a third "fakemon", and 3 + 1 is 4 task processes too: CI saw it once).
            settled = measured["task_processes"] == 4 and measured["monitors"] == 2
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert measured["monitors"] == 2
        assert measured["task_processes"] == 4  # each monitor and its sleep
        assert measured["tasks_kb"] > 0 and len(measured["node_kb"]) == 1 and measured["node_kb"][0] > 0
        # The daemon has no other process below it (PSS moves a little as processes sharing its pages come and go).
        assert abs(measured["daemon_kb"][0] - measured["node_kb"][0]) <= 0.1 * measured["node_kb"][0]
    finally:
        for process in (daemon, *tasks, outsider):
            process.kill()
            process.wait()


def _record(**figures: float) -> dict[str, float]:
    return {key: 1.0 for key in AHEAD + AT_MOST} | figures


def test_the_summary_gives_docker_over_raftswarm_and_judges_each_target():
    ours = _record(replicas_100_running_s=2.0, leader_kill_first_write_s=1.0, task_pss_mb=0.5, node_pss_mb=60.0)
    theirs = _record(replicas_100_running_s=8.0, leader_kill_first_write_s=12.0, task_pss_mb=2.6, node_pss_mb=50.0)
    judged = {t["figure"]: t for t in summary({"raftswarm": ours, "docker-swarm": theirs})["targets"]}
    assert judged["replicas_100_running_s"]["docker_over_raftswarm"] == 4.0
    assert not judged["replicas_100_running_s"]["met"]  # 4x ahead, the target is 5x
    assert judged["leader_kill_first_write_s"]["met"] and judged["task_pss_mb"]["met"]
    assert not judged["node_pss_mb"]["met"]  # more than Docker's


@pytest.mark.parametrize("argv", [["--systems", "kubernetes"], ["--replicas", "0"], ["--kills", "0"]])
def test_bad_options_are_refused_before_anything_starts(argv):
    before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "swarm", *argv],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 2 and "--systems takes raftswarm, docker-swarm" in done.stderr
    after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert after == before
