"""`python -m bench schedule`: how fast the swarm places tasks, replaces a lost node's, and copes with many nodes.

Scenarios (`--scenario`, default all):

- create: a local cluster of 3 managers + 2 workers (`SwarmCluster`; a network namespace per node as root,
  loopback addresses otherwise), heartbeat period 1 s. `service create --replicas 100` running `sleep 1000`,
  timed from just before the request to all 100 tasks ASSIGNED (or further) and to all 100 RUNNING, as the
  leader's own store shows them (polled every few milliseconds, `consistency=local`, on the leader's API
  socket). Repeated `--repeat` times, the service removed and its tasks gone in between. Target: every run
  ASSIGNED within 0.5 s.
- failover: on the same cluster, 100 replicas RUNNING over the 5 nodes, then worker2 gets SIGKILL; timed to
  the leader marking it down (detection) and to 100 replicas RUNNING again with none on it (replacement).
  Target: replacement within 5 s.
- scale: 3 managers and, in this process, `--agents` simulated worker agents (`bench.simulated_agents`:
  real joins, real mutual-TLS sessions heartbeating at the dispatcher's default 5 s period, the assignments
  long-poll, RUNNING reported at once); then services totalling `--tasks` tasks, placed on the agents only,
  timed to all delivered ASSIGNED and all RUNNING recorded. Reports each manager's CPU seconds over that
  time (`cpu_s`) and since the cluster was up (`cpu_s_whole_run`: joins and sessions too), its CPU use
  for 5 s afterwards with nothing changing (`steady_cpu_pct`), its peak and current RSS, and this process's
  CPU (it shares the machine). No target: the figures are the result.

Besides the polled times, the RUNNING times are also given from the tasks' own Status.Timestamp (set by the
leader when it accepted each report, before committing it; same machine, same clock), which polling cannot
blur. (ASSIGNED has no such stamp left: the next state overwrites it within milliseconds.)

Prints one JSON line per scenario on stdout and a final `summary` line judging the targets; a readable
summary goes to stderr (not with --json-only). Targets are reported, not asserted: the exit status is
non-zero only if a scenario could not be measured. Every cluster is made in a temporary directory and
removed afterwards (processes by PID, namespaces, interfaces), the simulated agents' connections closed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from raftswarm.api.client import ApiClient
from raftswarm.errors import RaftswarmError
from raftswarm.objects.tasks import TaskState
from raftswarm.localcluster.swarm import NETNS, ClusterNode, SwarmCluster

from .simulated_agents import AgentFleet, TaskTally, join_agents
from .workload import positive

SCENARIOS = ("create", "failover", "scale")

TARGET_ASSIGNED_S = 0.5
TARGET_REPLACED_S = 5.0

HEARTBEAT_PERIOD = 1.0
"""The create and failover cluster's dispatcher heartbeat period (the issue's); a node is down after 3 missed."""
POLL_INTERVAL = 0.005
"""Between two reads of the leader's store. Each read is a request the leader answers, so faster would
mostly measure the polling; the interval actually achieved is reported (`poll_ms`)."""
CONVERGE_TIMEOUT = 60.0
"""For a small service to be placed and running, or gone after removal: far beyond the targets."""
STREAMING_TIMEOUT_PER_AGENT = 0.1
"""For every simulated agent to heartbeat and follow its assignments once joined (and at least 30 s)."""
REPLICAS_PER_SERVICE = 1000
"""The scale run's tasks come as services of at most this many replicas (10,000 tasks: 10 services)."""
SLEEP = ["sleep", "1000"]
STEADY_SAMPLE_S = 5.0
"""After the scale run, how long each manager's CPU use is sampled with nothing changing (one heartbeat
period at the default)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailed(Exception):
    """A scenario could not be measured; the message says why."""


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    records: list[dict[str, Any]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="rsw-bench-") as workdir:
        try:
            for group in _groups(chosen):
                try:
                    for record in asyncio.run(_until_terminated(run_group(group, args, Path(workdir), say))):
                        print(json.dumps(record), flush=True)
                        records.append(record)
                except asyncio.CancelledError:
                    print("terminated (SIGTERM): removing the clusters", file=sys.stderr, flush=True)
                    return 128 + signal.SIGTERM
                except BenchFailed as exc:
                    print(f"{'/'.join(group)} could not be measured: {exc}", file=sys.stderr, flush=True)
                    failed = True
                except (RaftswarmError, OSError):  # one group failing must not hide the other's figures
                    print(
                        f"{'/'.join(group)} could not be measured:\n{traceback.format_exc()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    failed = True
        finally:
            # Whatever an interrupted run left: every cluster recorded in the directory, by its own record.
            for cluster in SwarmCluster.existing(workdir):
                cluster.down()
    line = summary_line(records)
    print(json.dumps(line), flush=True)
    say(summary_text(records, line))
    return 1 if failed else 0


async def _until_terminated(group: Coroutine[Any, Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run `group`; SIGTERM cancels it, so its clusters come down as on Ctrl-C (a handler raising in the
    main thread would not do: the exception can land in a destructor, where Python ignores it)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    return await group


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench schedule", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--replicas", type=positive, default=100, help="create/failover service size (%(default)s)")
    parser.add_argument("--repeat", type=positive, default=3, help="create runs (%(default)s)")
    parser.add_argument("--agents", type=positive, default=1000, help="scale: simulated agents (%(default)s)")
    parser.add_argument("--tasks", type=positive, default=10_000, help="scale: tasks in all (%(default)s)")
    parser.add_argument(
        "--scale-timeout", type=float, default=900.0, help="scale: seconds for the tasks to run (%(default)s)"
    )
    parser.add_argument("--network", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines; no summary on stderr")
    return parser


def _groups(chosen: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Scenarios that share a cluster run together: create and failover on a 3+2, scale on its own."""
    small = tuple(s for s in chosen if s in ("create", "failover"))
    return ([small] if small else []) + ([("scale",)] if "scale" in chosen else [])


async def run_group(group: tuple[str, ...], args: argparse.Namespace, workdir: Path, say) -> list[dict[str, Any]]:
    if group == ("scale",):
        return [await scale_scenario(args, workdir, say)]
    say(f"starting 3 managers + 2 workers (heartbeat {HEARTBEAT_PERIOD:g} s) ...")
    cluster = await SwarmCluster.up(
        f"bsched{os.getpid()}", 3, 2, base_dir=workdir, network=args.network, heartbeat_period=HEARTBEAT_PERIOD
    )
    try:
        records = []
        if "create" in group:
            records.append(await create_scenario(cluster, args.replicas, args.repeat, say))
        if "failover" in group:
            records.append(await failover_scenario(cluster, args.replicas, say))
        return records
    finally:
        await asyncio.to_thread(cluster.down)


# -- watching the leader's store -------------------------------------------------------------------------


async def leader_of(cluster: SwarmCluster) -> ClusterNode:
    status = await cluster.status()
    if status.leader is None:
        raise BenchFailed("the cluster has no leader")
    return status.leader


def service_spec(name: str, replicas: int, constraints: list[str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"ContainerSpec": {"Image": "busybox", "Args": SLEEP}}
    if constraints:
        template["Placement"] = {"Constraints": constraints}
    return {"Name": name, "TaskTemplate": template, "Mode": {"Replicated": {"Replicas": replicas}}}


def _state(task: dict[str, Any]) -> TaskState:
    return TaskState.of(task["Status"]["State"])


def _meant_to_run(task: dict[str, Any]) -> bool:
    return task["DesiredState"] == TaskState.RUNNING.api and _state(task) <= TaskState.RUNNING


def _placed(task: dict[str, Any]) -> bool:
    return _meant_to_run(task) and _state(task) >= TaskState.ASSIGNED


def _running(task: dict[str, Any]) -> bool:
    return task["DesiredState"] == TaskState.RUNNING.api and _state(task) == TaskState.RUNNING


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


class StoreWatch:
    """Reads the leader's applied store through its API socket, and keeps the mean interval between reads."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.reads = 0
        self._started = time.monotonic()

    async def objects(self, kind: str) -> list[dict[str, Any]]:
        if not self.reads:
            self._started = time.monotonic()
        self.reads += 1
        return [o["data"] for o in await self.api.list(kind, consistency="local")]

    async def tasks_of(self, service_id: str) -> list[dict[str, Any]]:
        return [t for t in await self.objects("tasks") if t.get("ServiceID") == service_id]

    def poll_ms(self) -> float | None:
        if self.reads < 2:
            return None
        return round((time.monotonic() - self._started) / (self.reads - 1) * 1000, 1)


async def _until(check: Callable[[], Any], what: str, timeout: float = CONVERGE_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(POLL_INTERVAL)
    raise BenchFailed(f"timed out after {timeout:g} s waiting for {what}")


async def _remove_service(watch: StoreWatch, service_id: str) -> None:
    await watch.api.service_remove(service_id)

    async def gone() -> bool:
        return not await watch.tasks_of(service_id)

    await _until(gone, f"the tasks of service {service_id} to be gone after its removal")


# -- create ----------------------------------------------------------------------------------------------


async def create_scenario(cluster: SwarmCluster, replicas: int, repeat: int, say) -> dict[str, Any]:
    leader = await leader_of(cluster)
    runs = []
    async with cluster.client(leader) as api:
        for run in range(1, repeat + 1):
            watch = StoreWatch(api)
            runs.append(await _create_once(watch, f"bench-create-{run}", replicas))
            say(f"  create run {run}: {json.dumps(runs[-1])}")
    assigned = [r["assigned_s"] for r in runs]
    running = [r["running_s"] for r in runs]
    return {
        "scenario": "create",
        "tasks": replicas,
        "nodes": len(cluster.nodes),
        "network": cluster.network,
        "heartbeat_period_s": HEARTBEAT_PERIOD,
        "repeat": repeat,
        "assigned_s": _round(statistics.median(assigned)),
        "running_s": _round(statistics.median(running)),
        "p50_s": _round(statistics.median(assigned)),
        "max_s": _round(max(assigned)),
        "running_max_s": _round(max(running)),
        "running_ts_p50_s": _round(statistics.median(r["running_ts_s"] for r in runs)),
        "target": f"all {replicas} tasks ASSIGNED, every run",
        "target_s": TARGET_ASSIGNED_S,
        "met": max(assigned) <= TARGET_ASSIGNED_S,
        "runs": runs,
        "cpus": os.cpu_count(),
    }


async def _create_once(watch: StoreWatch, name: str, replicas: int) -> dict[str, Any]:
    started_wall, started = time.time(), time.monotonic()
    service_id = (await watch.api.service_create(service_spec(name, replicas)))["ID"]
    request_s = time.monotonic() - started
    assigned_s = running_s = assigned_read_s = None
    deadline = started + CONVERGE_TIMEOUT
    tasks: list[dict[str, Any]] = []
    while running_s is None:
        if time.monotonic() > deadline:
            raise BenchFailed(f"{name}: not all {replicas} tasks running after {CONVERGE_TIMEOUT:g} s")
        asked = time.monotonic()
        tasks = await watch.tasks_of(service_id)
        seen = time.monotonic() - started
        if assigned_s is None and sum(map(_placed, tasks)) == replicas:
            assigned_s = seen
            assigned_read_s = seen - (asked - started)
        if sum(map(_running, tasks)) == replicas:
            running_s = seen
            break
        await asyncio.sleep(POLL_INTERVAL)
    assert assigned_s is not None and assigned_read_s is not None  # running implies placed
    running_ts = max(_unix(t["Status"]["Timestamp"]) for t in tasks if _running(t)) - started_wall
    record = {
        "request_s": _round(request_s),
        "assigned_s": _round(assigned_s),
        # How long the read that first showed every task placed took: the leader answers it only between
        # other work, so the tasks may have been placed up to this much earlier.
        "assigned_read_ms": round(assigned_read_s * 1000, 1),
        "running_s": _round(running_s),
        "running_ts_s": _round(running_ts),
        "poll_ms": watch.poll_ms(),
        "spread": sorted(_count_by(tasks, "NodeID").values()),
    }
    await _remove_service(watch, service_id)
    return record


# -- failover --------------------------------------------------------------------------------------------


async def failover_scenario(cluster: SwarmCluster, replicas: int, say) -> dict[str, Any]:
    leader = await leader_of(cluster)
    victim = cluster.workers[-1]
    async with cluster.client(leader) as api:
        watch = StoreWatch(api)
        service_id = (await api.service_create(service_spec("bench-failover", replicas)))["ID"]

        async def all_running() -> list[dict[str, Any]] | None:
            tasks = await watch.tasks_of(service_id)
            return tasks if sum(map(_running, tasks)) == replicas else None

        before = await _until(all_running, f"{replicas} replicas running before the kill")
        lost = {t["ID"] for t in before if t["NodeID"] == victim.node_id}
        if not lost:
            raise BenchFailed(f"no replica was placed on {victim.name}, so killing it shows nothing")
        say(f"  {replicas} replicas running, {len(lost)} on {victim.name}; kill -9 {victim.name} (PID {victim.pid})")

        watch = StoreWatch(api)
        killed_wall, killed = time.time(), time.monotonic()
        cluster.kill(victim)
        detected_s = assigned_s = running_s = None
        deadline = killed + CONVERGE_TIMEOUT
        tasks: list[dict[str, Any]] = []
        while running_s is None:
            if time.monotonic() > deadline:
                raise BenchFailed(
                    f"the replicas of {victim.name} were not running elsewhere after {CONVERGE_TIMEOUT:g} s"
                )
            if detected_s is None:
                nodes = {n["ID"]: n for n in await watch.objects("nodes")}
                if nodes[victim.node_id]["Status"]["State"] == "down":
                    detected_s = time.monotonic() - killed
            tasks = await watch.tasks_of(service_id)
            seen = time.monotonic() - killed
            elsewhere = [t for t in tasks if t["NodeID"] != victim.node_id]
            if assigned_s is None and sum(map(_placed, elsewhere)) == replicas:
                assigned_s = seen
            if sum(map(_running, elsewhere)) == replicas:
                running_s = seen
                break
            await asyncio.sleep(POLL_INTERVAL)
        assert assigned_s is not None
        replacements = [t for t in tasks if t["ID"] not in {b["ID"] for b in before}]
        running_ts = max(_unix(t["Status"]["Timestamp"]) for t in replacements) - killed_wall
        # A replacement that went through the restart supervisor carries its restart history, and one held
        # back by the restart delay waits in desired state `ready` with a start time.
        delayed = [t for t in replacements if t.get("_Restarts") or t.get("_StartAfter") is not None]
        old = [t for t in tasks if t["ID"] in lost]
        record = {
            "scenario": "failover",
            "tasks": replicas,
            "nodes": len(cluster.nodes),
            "network": cluster.network,
            "heartbeat_period_s": HEARTBEAT_PERIOD,
            "killed": victim.name,
            "lost_tasks": len(lost),
            "replaced_tasks": len(replacements),
            "detected_s": _round(detected_s) if detected_s is not None else None,
            "assigned_s": _round(assigned_s),
            "running_s": _round(running_s),
            "running_ts_s": _round(running_ts),
            "replaced_after_detection_s": _round(running_s - detected_s) if detected_s is not None else None,
            "restart_delay_applied": bool(delayed),
            "lost_tasks_desired_state": sorted({t["DesiredState"] for t in old}),
            "spread_after": sorted(_count_by([t for t in tasks if _running(t)], "NodeID").values()),
            "poll_ms": watch.poll_ms(),
            "target": f"the {len(lost)} lost replicas RUNNING elsewhere",
            "target_s": TARGET_REPLACED_S,
            "met": running_s <= TARGET_REPLACED_S,
            "cpus": os.cpu_count(),
        }
        await _remove_service(watch, service_id)
    return record


# -- scale -----------------------------------------------------------------------------------------------


@dataclass
class ProcessUsage:
    """A process's CPU seconds (user + system, children not included) and resident memory, from /proc."""

    pid: int

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat

    def memory_mb(self) -> dict[str, float]:
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
        return {"peak_rss_mb": found["VmHWM"], "rss_mb": found["VmRSS"]}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _split(total: int, most: int) -> list[int]:
    """`total` replicas as services of at most `most`, as even as possible."""
    services = math.ceil(total / most)
    return [total // services + (1 if i < total % services else 0) for i in range(services)]


async def scale_scenario(args: argparse.Namespace, workdir: Path, say) -> dict[str, Any]:
    say("starting 3 managers (default heartbeat period) ...")
    cluster = await SwarmCluster.up(f"bscale{os.getpid()}", 3, 0, base_dir=workdir, network=args.network)
    try:
        return await _scale(cluster, args.agents, args.tasks, args.scale_timeout, say)
    finally:
        await asyncio.to_thread(cluster.down)


async def _scale(cluster: SwarmCluster, agents: int, total: int, timeout: float, say) -> dict[str, Any]:
    leader = await leader_of(cluster)
    usage = {m.name: ProcessUsage(m.pid) for m in cluster.managers}
    cpu_at_start = {name: u.cpu_s() for name, u in usage.items()}
    own_at_start = _own_cpu_s()
    managers = [m.addr for m in cluster.managers]
    # The simulated nodes all live in this process: as their address, the host's on the cluster's network.
    host = (
        str(next(IPv4Network(cluster.subnet).hosts())) if cluster.network == NETNS and cluster.subnet else "127.0.0.1"
    )
    async with cluster.client(leader) as api:
        token = (await api.swarm_inspect())["JoinTokens"]["Worker"]
        say(f"joining {agents} simulated agents ...")
        started = time.monotonic()
        joined = await join_agents(agents, token, managers, f"{host}:2377")
        join_s = time.monotonic() - started
        tally = TaskTally(expected=total)
        async with AgentFleet(joined, managers, tally) as fleet:
            started = time.monotonic()
            streaming = await fleet.streaming(max(30.0, STREAMING_TIMEOUT_PER_AGENT * agents))
            ready_s = time.monotonic() - started
            if streaming < agents:
                raise BenchFailed(
                    f"only {streaming} of {agents} simulated agents kept a session within {ready_s:.0f} s "
                    f"({json.dumps(fleet.stats())}); try fewer with --agents"
                )
            say(
                f"  {agents} agents joined in {join_s:.1f} s, all heartbeating {ready_s:.1f} s later; "
                f"creating {total} tasks ..."
            )
            cpu_before = {name: u.cpu_s() for name, u in usage.items()}
            own_before = _own_cpu_s()
            sizes = _split(total, REPLICAS_PER_SERVICE)
            started_wall, started = time.time(), time.monotonic()
            for number, replicas in enumerate(sizes, start=1):
                await api.service_create(service_spec(f"bench-scale-{number}", replicas, ["node.role==worker"]))
            create_s = time.monotonic() - started
            deadline = started + timeout
            if await fleet.until(tally.all_assigned, deadline - time.monotonic()):
                await fleet.until(tally.all_running, deadline - time.monotonic())
            done = time.monotonic()
            cpu_after = {name: u.cpu_s() for name, u in usage.items()}
            own_after = _own_cpu_s()
            # Then nothing changes: the cost of keeping the swarm as it is (heartbeats, idle control loops).
            await asyncio.sleep(STEADY_SAMPLE_S)
            steady = {name: (u.cpu_s() - cpu_after[name]) / STEADY_SAMPLE_S * 100 for name, u in usage.items()}
            memory = {name: u.memory_mb() for name, u in usage.items()}
            fleet_stats = fleet.stats()
            tasks = [t for t in await StoreWatch(api).objects("tasks") if _running(t)]
    completed = len(tally.running) >= total
    per_agent = list(tally.per_node.values()) + [0] * (agents - len(tally.per_node))
    return {
        "scenario": "scale",
        "agents": agents,
        "tasks": total,
        "services": len(sizes),
        "nodes": agents + len(cluster.managers),
        "network": cluster.network,
        "heartbeat_period_s": fleet.agents[0].period,
        "completed": completed,
        "assigned_tasks": len(tally.assigned),
        "running_tasks": len(tally.running),
        "running_in_store": len(tasks),
        "join_s": _round(join_s),
        "ready_s": _round(ready_s),
        "create_requests_s": _round(create_s),
        "assigned_s": _round(max(tally.assigned.values()) - started) if len(tally.assigned) >= total else None,
        "running_s": _round(max(tally.running.values()) - started) if completed else None,
        "running_ts_s": _round(max(_unix(t["Status"]["Timestamp"]) for t in tasks) - started_wall) if tasks else None,
        "waited_s": _round(done - started),
        "tasks_per_agent": [min(per_agent), max(per_agent)],
        "refused_reports": tally.refused_reports,
        **fleet_stats,
        "managers": [
            {
                "name": name,
                "leader": name == leader.name,
                "cpu_s": round(cpu_after[name] - cpu_before[name], 2),
                "cpu_s_whole_run": round(cpu_after[name] - cpu_at_start[name], 2),
                "steady_cpu_pct": round(steady[name], 1),
                **memory[name],
            }
            for name in usage
        ],
        "bench_cpu_s": round(own_after - own_before, 2),
        "bench_cpu_s_whole_run": round(own_after - own_at_start, 2),
        "target_s": None,
        "met": None,
        "cpus": os.cpu_count(),
    }


# -- reporting -------------------------------------------------------------------------------------------


def _round(seconds: float) -> float:
    return round(seconds, 3)


def _count_by(tasks: list[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.get(key) or ""] = counts.get(task.get(key) or "", 0) + 1
    return counts


def summary_line(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets with their measured values (scenarios with a target only)."""
    judged = [
        {
            "scenario": r["scenario"],
            "target": r["target"],
            "value_s": r["max_s" if r["scenario"] == "create" else "running_s"],
            "target_s": r["target_s"],
            "met": r["met"],
        }
        for r in records
        if r.get("target_s") is not None
    ]
    return {
        "scenario": "summary",
        "measured": [r["scenario"] for r in records],
        "targets": judged,
        "met": all(t["met"] for t in judged) if judged else None,
    }


def summary_text(records: list[dict[str, Any]], line: dict[str, Any]) -> str:
    rows = []
    for r in records:
        if r["scenario"] == "create":
            rows.append(
                f"  create    {r['tasks']} tasks on {r['nodes']} nodes, {r['repeat']} runs: ASSIGNED p50 {r['p50_s']} s "
                f"max {r['max_s']} s; RUNNING p50 {r['running_s']} s max {r['running_max_s']} s"
            )
        elif r["scenario"] == "failover":
            rows.append(
                f"  failover  {r['killed']} killed with {r['lost_tasks']} of {r['tasks']} tasks: down after "
                f"{r['detected_s']} s, all RUNNING elsewhere after {r['running_s']} s "
                f"(restart delay applied: {r['restart_delay_applied']})"
            )
        else:
            leader = next(m for m in r["managers"] if m["leader"])
            rows.append(
                f"  scale     {r['agents']} agents, {r['tasks']} tasks: ASSIGNED after {r['assigned_s']} s, RUNNING "
                f"after {r['running_s']} s; leader CPU {leader['cpu_s']} s, peak RSS {leader['peak_rss_mb']} MB"
                + ("" if r["completed"] else f"  (NOT COMPLETED: {r['running_tasks']} running after {r['waited_s']} s)")
            )
    targets = [
        f"  {t['scenario']}: {t['target']} <= {t['target_s']:g} s: {t['value_s']} s  {'met' if t['met'] else 'MISSED'}"
        for t in line["targets"]
    ]
    return "\n".join(["schedule benchmark:", *rows, "targets:", *(targets or ["  (none measured)"])])
