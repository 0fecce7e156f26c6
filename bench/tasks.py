"""`python -m bench tasks`: how fast workers start real tasks, and what one task costs.

Scenarios (`--scenario`, default all):

- swarm: a local cluster of 1 manager + 2 workers (a network namespace per node as root, loopback
  addresses otherwise), heartbeat 1 s. `service create --replicas 100 --constraint node.role==worker`
  running `sleep 1000` from the `busybox` image (pulled from the cluster's registry by the first run),
  timed from just before the request to all 100 tasks RUNNING as the leader's store shows them (polled every
  0.1 s, as `bench swarm` polls: every 5 ms, the leader wrote and the bench read all ~110 tasks' JSON 200 times
  a second, on the two cores the tasks start on). Every task is a real container: an overlay rootfs, crun under
  conmon, Docker's namespaces, capabilities, seccomp and cgroup. Repeated `--repeat` times. Target: all
  RUNNING within 3 s.
- runtime: in this process, the container runtime alone (`runtime.containers.ContainerRuntime`, what an
  agent calls) on an image store holding busybox: `--starts` containers started one after another (wall
  time per start: overlay mount, bundle, conmon, `crun create` and `start`), then as many at once (wall time
  for all, per task), and the memory one running task costs: the proportional set size (PSS) of its conmon
  and of every process of its container, as /proc/<pid>/smaps_rollup gives it.

Each record also carries the figures measured on this machine before tasks were containers and for real
Docker swarm (`recorded`), for comparison: they are constants from earlier runs, not measured here.

Prints one JSON line per scenario and a `summary` line judging the target. Targets are reported, not
asserted. Clusters are made in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import Container, ContainerRuntime, unavailable

from .procmem import pss_kb
from .schedule import BenchFailed, StoreWatch, _remove_service, _round, _running, leader_of, service_spec

SCENARIOS = ("swarm", "runtime")
TARGET_RUNNING_S = 3.0
HEARTBEAT_PERIOD = 1.0
POLL_INTERVAL = 0.1
CONVERGE_TIMEOUT = 60.0
RECORDED = {
    "host_processes": {"swarm_running_s": 2.2, "start_ms": 43, "task_pss_kb": 8000},
    "docker_swarm": {"swarm_running_s": [10, 13], "task_pss_kb": 2600},
}
"""Measured on this machine (2 cores) before tasks were containers (a Python shim per task on the host's
filesystem) and with real Docker swarm 1 manager + 2 workers (containerd-shim + container per task)."""


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    records = []
    with tempfile.TemporaryDirectory(prefix="rsw-bench-tasks-") as workdir:
        try:
            for scenario in chosen:
                run = swarm_scenario if scenario == "swarm" else runtime_scenario
                try:
                    record = asyncio.run(run(args, Path(workdir), say))
                except BenchFailed as exc:
                    print(f"{scenario} could not be measured: {exc}", file=sys.stderr, flush=True)
                    return 1
                print(json.dumps(record), flush=True)
                records.append(record)
        finally:
            for cluster in SwarmCluster.existing(workdir):
                cluster.down()
    swarm = [r for r in records if r["scenario"] == "swarm"]
    summary = {
        "summary": "tasks",
        "targets": [
            {"scenario": "swarm", "target": r["target"], "value_s": r["running_max_s"], "target_s": TARGET_RUNNING_S, "met": r["met"]}
            for r in swarm
        ],
    }
    print(json.dumps(summary), flush=True)
    for record in records:
        say(_readable(record))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--replicas", type=int, default=100, help="swarm: service size (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="swarm: runs (%(default)s)")
    parser.add_argument("--starts", type=int, default=50, help="runtime: tasks started (%(default)s)")
    parser.add_argument("--network", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    return parser


async def swarm_scenario(args: argparse.Namespace, workdir: Path, say) -> dict[str, Any]:
    say(f"starting 1 manager + 2 workers (heartbeat {HEARTBEAT_PERIOD:g} s) ...")
    cluster = await SwarmCluster.up(
        f"btask{os.getpid()}", 1, 2, base_dir=workdir, network=args.network, heartbeat_period=HEARTBEAT_PERIOD
    )
    try:
        leader = await leader_of(cluster)
        runs = []
        async with cluster.client(leader) as api:
            for run in range(1, args.repeat + 1):
                runs.append(await _start_once(StoreWatch(api), f"bench-tasks-{run}", args.replicas))
                say(f"  run {run}: {json.dumps(runs[-1])}")
    finally:
        await asyncio.to_thread(cluster.down)
    running = [r["running_s"] for r in runs]
    return {
        "scenario": "swarm",
        "tasks": args.replicas,
        "workers": 2,
        "network": cluster.network,
        "containers": unavailable() is None,
        "running_p50_s": _round(statistics.median(running)),
        "running_max_s": _round(max(running)),
        "per_task_ms": round(statistics.median(running) / args.replicas * 2 * 1000, 1),
        "target": f"all {args.replicas} tasks RUNNING on 2 workers",
        "target_s": TARGET_RUNNING_S,
        "met": max(running) <= TARGET_RUNNING_S,
        "runs": runs,
        "recorded": RECORDED,
        "cpus": os.cpu_count(),
    }


async def _start_once(watch: StoreWatch, name: str, replicas: int) -> dict[str, Any]:
    started = time.monotonic()
    service_id = (await watch.api.service_create(service_spec(name, replicas, ["node.role==worker"])))["ID"]
    while True:
        if time.monotonic() - started > CONVERGE_TIMEOUT:
            raise BenchFailed(f"{name}: not all {replicas} tasks running after {CONVERGE_TIMEOUT:g} s")
        tasks = await watch.tasks_of(service_id)
        if sum(map(_running, tasks)) == replicas:
            running_s = time.monotonic() - started
            break
        await asyncio.sleep(POLL_INTERVAL)
    nodes: dict[str, int] = {}
    for task in tasks:
        nodes[task["NodeID"]] = nodes.get(task["NodeID"], 0) + 1
    await _remove_service(watch, service_id)
    return {"running_s": _round(running_s), "spread": sorted(nodes.values()), "poll_ms": watch.poll_ms()}


async def runtime_scenario(args: argparse.Namespace, workdir: Path, say) -> dict[str, Any]:
    reason = unavailable()
    if reason is not None:
        raise BenchFailed(f"containers cannot run here: {reason}")
    store = ImageStore(workdir / "images")
    with open(samples.busybox().tarball, "rb") as tarball:
        await asyncio.to_thread(archive.load, store, tarball)
    runtime = ContainerRuntime(workdir / "containers", store)
    started: list[Container] = []
    try:
        one_by_one = []
        for _ in range(args.starts):
            began = time.monotonic()
            started.append(await runtime.start(_task(), {}))
            one_by_one.append(time.monotonic() - began)
        monitor_kb = [pss_kb([_monitor_of(task)]) for task in started]
        task_kb = [pss_kb([_monitor_of(task), *_container_processes(task)]) for task in started]
        await _release(started)
        began = time.monotonic()
        started = list(await asyncio.gather(*(runtime.start(_task(), {}) for _ in range(args.starts))))
        at_once = time.monotonic() - began
    finally:
        await _release(started)
    return {
        "scenario": "runtime",
        "starts": args.starts,
        "sequential_start_p50_ms": round(statistics.median(one_by_one) * 1000, 1),
        "sequential_start_max_ms": round(max(one_by_one) * 1000, 1),
        "concurrent_all_s": _round(at_once),
        "concurrent_per_task_ms": round(at_once / args.starts * 1000, 1),
        "monitor_pss_kb_p50": round(statistics.median(monitor_kb)),
        "task_pss_kb_p50": round(statistics.median(task_kb)),
        "recorded": RECORDED,
        "cpus": os.cpu_count(),
    }


def _task() -> dict[str, Any]:
    return {"ID": uuid.uuid4().hex[:25], "Spec": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1000"]}}}


async def _release(tasks: list[Container]) -> None:
    await asyncio.gather(*(task.release() for task in tasks))
    tasks.clear()


def _monitor_of(task: Container) -> int:
    return int((task.directory / "conmon.pid").read_text())


def _container_processes(task: Container) -> list[int]:
    """Every process in the container's PID namespace, as the host sees them."""
    namespace = os.readlink(f"/proc/{task.pid}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _readable(record: dict[str, Any]) -> str:
    if record["scenario"] == "swarm":
        verdict = "met" if record["met"] else "NOT met"
        return (
            f"swarm: {record['tasks']} tasks RUNNING on 2 workers in {record['running_p50_s']} s p50, "
            f"{record['running_max_s']} s max ({record['per_task_ms']} ms per task per worker); "
            f"target {record['target_s']} s {verdict}"
        )
    return (
        f"runtime: start {record['sequential_start_p50_ms']} ms p50 one at a time, {record['starts']} at once "
        f"{record['concurrent_all_s']} s ({record['concurrent_per_task_ms']} ms each); "
        f"conmon PSS {record['monitor_pss_kb_p50']} KiB, conmon+container {record['task_pss_kb_p50']} KiB per task"
    )
