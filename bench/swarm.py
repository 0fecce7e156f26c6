"""`python -m bench swarm`: real Docker swarm beside raftswarm, the same workload through the same client.

Each system runs as its users would run it on this machine, with its own defaults: 3 managers + 2 workers,
a network namespace per node on a private bridge (raftswarm's `SwarmCluster`, Docker's `DockerSwarm`:
dockerd 20.10 from Debian's docker.io, each with its containerd). Both are driven through the Docker
Engine API at version 1.41 on each node's unix socket, with one client (aiohttp) written once here, and the
real docker CLI where a user's command is timed. The `busybox` sample image (built from Debian packages) is
on every node before anything is timed: a global warm-up service runs it once per node and is removed.

Measured per system, in this order:

- `init_join_s`: `swarm init` on the first manager to every node Ready after the joins (`up_s`: the whole
  start, daemons and images included).
- `replicas_100_running_s`: `POST /services/create` of 100 replicas of `sleep 1000` (default placement:
  all 5 nodes) to 100 tasks in state running as `GET /tasks` on a manager shows them (polled every 0.1 s).
- memory with those 100 tasks running, as proportional set size (PSS, /proc/PID/smaps_rollup):
  `node_pss_mb` is one node's daemons (raftswarm: its `raftswarm-node` process; Docker: dockerd and its
  containerd), averaged over the nodes, also given idle (`node_idle_pss_mb`, before any task) and for
  dockerd alone (`dockerd_pss_mb`); `task_pss_mb` is what one task costs outside its node: its monitor
  (raftswarm: conmon; Docker: containerd-shim) and every process of its container, summed over all tasks and
  divided by their number; `cluster_pss_mb` is nodes and tasks together.
- `replicas_100_removed_s`: `DELETE /services/..` to the last task's monitor process gone from the machine.
- leader kill -9 (`--kills` times; medians, every run in `*_runs`): the leader's daemon gets SIGKILL, then at
  once and concurrently, on the surviving managers: `leader_kill_new_leader_s` until `GET /nodes` names
  another leader; `leader_kill_first_write_s` until a `POST /secrets/create` (a replicated write) succeeds,
  retried every 50 ms; `leader_kill_client_answer_s` until the docker CLI's `docker node ls` answers with
  success, run again at once whenever it fails (`client_first_attempt` says what its first run got). The
  killed node is started again and the swarm waited for (every node Ready, every manager reachable).

Prints one JSON line per system (`system`: `raftswarm`, `docker-swarm`) and a `summary` line with Docker's
figure divided by raftswarm's (for times: how many times faster raftswarm is; for memory: how many times
more Docker needs) against the targets: 100 replicas and failover at least 5x ahead, memory per task and
per node at most Docker's. Targets are reported, not asserted. Needs root (namespaces) and docker.io
(`./setup` installs it); everything is made in a temporary directory and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from raftswarm.localcluster.dockerswarm import API_VERSION, DockerSwarm, unavailable_reason
from raftswarm.localcluster.hostnet import ClusterError
from raftswarm.localcluster.swarm import SwarmCluster

from .procmem import pss_kb
from .schedule import BenchFailed

SYSTEMS = ("raftswarm", "docker-swarm")
MANAGERS, WORKERS = 3, 2
IMAGE = "busybox"
POLL = 0.1
WRITE_RETRY = 0.05
CALL_TIMEOUT = 2.0
CONVERGE_TIMEOUT = 180.0
FAILOVER_TIMEOUT = 60.0
SETTLE = 2.0
"""Seconds to wait after 100 tasks run before reading memory (their processes have finished starting)."""
TARGET_AHEAD = 5.0


# -- one client for both -----------------------------------------------------------------------------------


class Engine:
    """The Docker Engine API of one node, on its unix socket, at dockerd 20.10's version."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def call(
        self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT
    ) -> tuple[int, Any]:
        """(status, decoded JSON or None); a connection failure or timeout is status 0."""
        connector = aiohttp.UnixConnector(path=str(self.socket))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                async with s.request(method, f"http://docker/v{API_VERSION}{path}", json=body) as response:
                    text = await response.text()
                    return response.status, json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return 0, None

    async def tasks(self, service: str) -> list[dict[str, Any]] | None:
        filters = quote(json.dumps({"service": [service], "desired-state": ["running"]}))
        status, body = await self.call("GET", f"/tasks?filters={filters}", timeout=10.0)
        return body if status == 200 else None

    async def nodes(self) -> list[dict[str, Any]] | None:
        status, body = await self.call("GET", "/nodes")
        return body if status == 200 else None


# -- the two systems, seen the same way --------------------------------------------------------------------


@dataclass
class Member:
    name: str
    role: str
    node_id: str
    engine: Engine
    pid: Callable[[], int | None]


@dataclass
class System:
    """What the workload needs of a running swarm, whichever it is."""

    name: str
    members: list[Member]
    directory: Path
    """Every node's files are below it (monitors name it in their command line)."""
    monitor: str
    """The start of a task monitor's command name (/proc/PID/comm)."""
    init_join_s: float
    up_s: float
    kill: Callable[[Member], None]
    restart: Callable[[Member], Awaitable[None]]
    cli_env: Callable[[Member], dict[str, str]]

    @property
    def managers(self) -> list[Member]:
        return [m for m in self.members if m.role == "manager"]


async def raftswarm_system(workdir: Path) -> tuple[System, Callable[[], None]]:
    cluster = await SwarmCluster.up(f"bsw{os.getpid()}", MANAGERS, WORKERS, base_dir=workdir, network="netns")
    nodes = {node.name: node for node in cluster.nodes}
    members = [
        Member(n.name, n.role, n.node_id, Engine(n.socket), lambda n=n: n.pid if n.running() else None)
        for n in cluster.nodes
    ]

    def env(member: Member) -> dict[str, str]:
        return _cli_env(workdir, f"unix://{nodes[member.name].socket}")

    async def restart(member: Member) -> None:
        await cluster.restart(nodes[member.name])

    system = System(
        "raftswarm", members, cluster.directory, "conmon", cluster.form_seconds or 0.0, cluster.up_seconds or 0.0,
        lambda m: cluster.kill(nodes[m.name]), restart, env,
    )  # fmt: skip
    return system, cluster.down


async def docker_system(workdir: Path) -> tuple[System, Callable[[], None]]:
    swarm = await DockerSwarm.up(workdir, MANAGERS, WORKERS, images=(IMAGE,))
    nodes = {node.name: node for node in swarm.nodes}
    members = [
        Member(
            n.name, n.role, n.node_id, Engine(n.socket),
            lambda n=n: n.process.pid if n.process is not None and n.running() else None,
        )  # fmt: skip
        for n in swarm.nodes
    ]

    async def restart(member: Member) -> None:
        await swarm.restart(nodes[member.name])

    system = System(
        "docker-swarm", members, swarm.directory, "containerd-shim", swarm.form_seconds or 0.0,
        swarm.up_seconds or 0.0, lambda m: swarm.kill(nodes[m.name]), restart,
        lambda m: swarm.env(nodes[m.name]),
    )  # fmt: skip
    return system, swarm.down


def _cli_env(workdir: Path, host: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "DOCKER_CONFIG": str(workdir / "docker-config"),
        "DOCKER_HOST": host,
        "DOCKER_API_VERSION": API_VERSION,
    }


# -- processes and their memory ------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue
            comm = text[text.index("(") + 1 : text.rindex(")")]
            found[int(entry)] = (int(text[text.rindex(")") + 2 :].split()[1]), comm)
    return found


def _children(table: dict[int, tuple[int, str]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    return children


def _descendants(roots: set[int], children: dict[int, list[int]]) -> set[int]:
    found, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def _monitors(system: System, table: dict[int, tuple[int, str]]) -> set[int]:
    marker = str(system.directory).encode()
    found = set()
    for pid, (_, comm) in table.items():
        if comm.startswith(system.monitor):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if marker in cmdline.read():
                        found.add(pid)
            except OSError:
                continue
    return found


def memory(system: System) -> dict[str, Any]:
    """PSS of each node's daemons and of all task processes (monitors and what runs below them)."""
    table = _processes()
    children = _children(table)
    monitors = _monitors(system, table)
    tasks = _descendants(monitors, children)
    node_kb, daemon_kb = [], []
    for member in system.members:
        pid = member.pid()
        if pid is None:
            continue
        node_kb.append(pss_kb(_descendants({pid}, children) - tasks))
        daemon_kb.append(pss_kb({pid}))
    return {
        "node_kb": node_kb,
        "daemon_kb": daemon_kb,
        "tasks_kb": pss_kb(tasks),
        "task_processes": len(tasks),
        "monitors": len(monitors),
    }


# -- the workload --------------------------------------------------------------------------------------------


def _service(name: str, mode: dict[str, Any]) -> dict[str, Any]:
    return {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": IMAGE, "Args": ["sleep", "1000"]}}, "Mode": mode}


async def _create(engine: Engine, spec: dict[str, Any]) -> str:
    status, body = await engine.call("POST", "/services/create", spec, timeout=30.0)
    if status != 201:
        raise BenchFailed(f"service create {spec['Name']} answered {status}: {body}")
    return body["ID"]


async def _until_running(engine: Engine, name: str, count: int, since: float) -> float:
    while time.monotonic() - since < CONVERGE_TIMEOUT:
        tasks = await engine.tasks(name) or []
        if sum(task["Status"]["State"] == "running" for task in tasks) >= count:
            return time.monotonic() - since
        await asyncio.sleep(POLL)
    raise BenchFailed(f"{name}: {count} tasks not running within {CONVERGE_TIMEOUT:g} s")


async def _remove(system: System, engine: Engine, service_id: str) -> float:
    """DELETE the service; seconds until no task monitor is left on the machine."""
    started = time.monotonic()
    status, body = await engine.call("DELETE", f"/services/{service_id}", timeout=30.0)
    if status != 200:
        raise BenchFailed(f"service rm answered {status}: {body}")
    while time.monotonic() - started < CONVERGE_TIMEOUT:
        if not _monitors(system, _processes()):
            return time.monotonic() - started
        await asyncio.sleep(POLL)
    raise BenchFailed(f"tasks of the removed service still run after {CONVERGE_TIMEOUT:g} s")


async def warm_up(system: System) -> None:
    """A global service puts the image on every node and starts one task there; then it goes."""
    engine = system.managers[0].engine
    service = await _create(engine, _service("warmup", {"Global": {}}))
    await _until_running(engine, "warmup", len(system.members), time.monotonic())
    await _remove(system, engine, service)


async def replicas(system: System, count: int, say) -> dict[str, Any]:
    engine = system.managers[0].engine
    idle = memory(system)
    started = time.monotonic()
    service = await _create(engine, _service("bench100", {"Replicated": {"Replicas": count}}))
    running_s = await _until_running(engine, "bench100", count, started)
    say(f"  {system.name}: {count} replicas running in {running_s:.2f} s")
    await asyncio.sleep(SETTLE)
    loaded = memory(system)
    if loaded["monitors"] != count:
        raise BenchFailed(f"{loaded['monitors']} task monitors run for {count} tasks")
    removed_s = await _remove(system, engine, service)
    say(f"  {system.name}: removed in {removed_s:.2f} s")
    node_kb = statistics.mean(loaded["node_kb"])
    return {
        "replicas": count,
        "replicas_100_running_s": round(running_s, 2),
        "replicas_100_removed_s": round(removed_s, 2),
        "task_pss_mb": _mb(loaded["tasks_kb"] / count),
        "node_pss_mb": _mb(node_kb),
        "node_idle_pss_mb": _mb(statistics.mean(idle["node_kb"])),
        "daemon_pss_mb": _mb(statistics.mean(loaded["daemon_kb"])),
        "cluster_pss_mb": _mb(sum(loaded["node_kb"]) + loaded["tasks_kb"]),
        "processes_per_task": round(loaded["task_processes"] / count, 2),
    }


async def leader_of(system: System, among: list[Member]) -> str | None:
    """The node ID of the leader as the first of `among` that answers names it."""
    for member in among:
        for node in await member.engine.nodes() or []:
            if (node.get("ManagerStatus") or {}).get("Leader"):
                return node["ID"]
    return None


async def _timed(since: float, attempt: Callable[[], Awaitable[bool]], pause: float) -> float:
    while time.monotonic() - since < FAILOVER_TIMEOUT:
        if await attempt():
            return time.monotonic() - since
        await asyncio.sleep(pause)
    raise BenchFailed(f"nothing succeeded within {FAILOVER_TIMEOUT:g} s of the leader's kill")


async def _docker_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, (err or out).decode(errors="replace").strip()


async def leader_kill(system: System, run: int, say) -> dict[str, Any]:
    leader_id = await leader_of(system, system.managers)
    leader = next((m for m in system.managers if m.node_id == leader_id), None)
    if leader is None:
        raise BenchFailed(f"no leader before kill {run} (GET /nodes named {leader_id!r})")
    survivors = [m for m in system.managers if m is not leader]
    secret = {"Data": base64.b64encode(b"x").decode()}
    status, body = await survivors[0].engine.call("POST", "/secrets/create", {**secret, "Name": f"before-{run}"})
    if status != 201:
        raise BenchFailed(f"the swarm takes no write before kill {run}: {status} {body}")
    writes = iter(range(1_000_000))
    first_attempt: list[str] = []

    async def new_leader() -> bool:
        named = await leader_of(system, survivors)
        return named is not None and named != leader.node_id

    async def write() -> bool:
        n = next(writes)
        name = f"after-{run}-{n}"
        status, _ = await survivors[n % 2].engine.call("POST", "/secrets/create", {**secret, "Name": name})
        return status == 201

    async def node_ls() -> bool:
        code, text = await _docker_cli(system.cli_env(survivors[1]), "node", "ls", "-q")
        if not first_attempt:
            first_attempt.append("ok" if code == 0 else text.splitlines()[-1] if text else f"exit {code}")
        return code == 0

    system.kill(leader)
    killed = time.monotonic()
    elected, written, answered = await asyncio.gather(
        _timed(killed, new_leader, WRITE_RETRY), _timed(killed, write, WRITE_RETRY), _timed(killed, node_ls, 0.0)
    )
    say(
        f"  {system.name} kill {run}: new leader {elected:.2f} s, first write {written:.2f} s, "
        f"docker node ls {answered:.2f} s (first attempt: {first_attempt[0]})"
    )
    await system.restart(leader)
    await _whole_again(system)
    return {"new_leader_s": elected, "first_write_s": written, "client_answer_s": answered, "first": first_attempt[0]}


async def _whole_again(system: System) -> None:
    """Until a manager shows every node Ready, every manager reachable and a leader."""
    started = time.monotonic()
    while time.monotonic() - started < CONVERGE_TIMEOUT:
        for member in system.managers:
            nodes = await member.engine.nodes()
            if nodes and len(nodes) == len(system.members) and all(_whole(node) for node in nodes):
                if any((node.get("ManagerStatus") or {}).get("Leader") for node in nodes):
                    return
        await asyncio.sleep(0.5)
    raise BenchFailed(f"{system.name} was not whole again within {CONVERGE_TIMEOUT:g} s of a restart")


def _whole(node: dict[str, Any]) -> bool:
    manager = node.get("ManagerStatus")
    return node["Status"]["State"] == "ready" and (manager is None or manager.get("Reachability") == "reachable")


async def measure(name: str, args: argparse.Namespace, workdir: Path, say) -> dict[str, Any]:
    say(f"{name}: starting {MANAGERS} managers + {WORKERS} workers ...")
    make = raftswarm_system if name == "raftswarm" else docker_system
    system, down = await make(workdir)
    try:
        say(f"  {name}: up in {system.up_s:.2f} s (init and joins {system.init_join_s:.2f} s)")
        await warm_up(system)
        record: dict[str, Any] = {
            "system": name,
            "managers": MANAGERS,
            "workers": WORKERS,
            "up_s": system.up_s,
            "init_join_s": system.init_join_s,
        }
        record.update(await replicas(system, args.replicas, say))
        kills = [await leader_kill(system, run, say) for run in range(1, args.kills + 1)]
        for key in ("new_leader_s", "first_write_s", "client_answer_s"):
            values = [kill[key] for kill in kills]
            record[f"leader_kill_{key}"] = round(statistics.median(values), 2)
            record[f"leader_kill_{key.removesuffix('_s')}_runs"] = [round(v, 2) for v in values]
        record["client_first_attempt"] = [kill["first"] for kill in kills]
        record["cpus"] = os.cpu_count()
        return record
    finally:
        await asyncio.to_thread(down)


AHEAD = ("replicas_100_running_s", "leader_kill_first_write_s", "leader_kill_client_answer_s")
AT_MOST = ("task_pss_mb", "node_pss_mb")


def summary(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ours, theirs = records["raftswarm"], records["docker-swarm"]
    targets = []
    for key in AHEAD:
        ratio = theirs[key] / ours[key] if ours[key] else None
        targets.append({"figure": key, "docker_over_raftswarm": _ratio(ratio), "target": f">= {TARGET_AHEAD:g}",
                        "met": ratio is not None and ratio >= TARGET_AHEAD})  # fmt: skip
    for key in AT_MOST:
        ratio = theirs[key] / ours[key] if ours[key] else None
        targets.append({"figure": key, "docker_over_raftswarm": _ratio(ratio), "target": ">= 1",
                        "met": ratio is not None and ratio >= 1.0})  # fmt: skip
    return {"summary": "swarm", "targets": targets, "met": all(t["met"] for t in targets)}


def _ratio(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def _mb(kb: float) -> float:
    return round(kb / 1024, 2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench swarm", description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: %(default)s")
    parser.add_argument("--replicas", type=int, default=100, help="tasks of the timed service (%(default)s)")
    parser.add_argument("--kills", type=int, default=3, help="leader kills per system (%(default)s)")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SYSTEMS]
    if unknown or not chosen or args.replicas < 1 or args.kills < 1:
        parser.error(f"--systems takes {', '.join(SYSTEMS)}; --replicas and --kills at least 1")
    if os.geteuid() != 0:
        print("bench swarm needs root: each node runs in a network namespace of its own", file=sys.stderr)
        return 1
    if "docker-swarm" in chosen and (reason := unavailable_reason()) is not None:
        print(f"cannot run Docker swarm here: {reason}", file=sys.stderr)
        return 1
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    records = {}
    with tempfile.TemporaryDirectory(prefix="rsw-bench-swarm-", dir="/tmp") as workdir:
        for name in chosen:
            try:
                records[name] = asyncio.run(measure(name, args, Path(workdir), say))
            except (BenchFailed, ClusterError) as exc:
                print(f"{name} could not be measured: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(records[name]), flush=True)
    if len(records) == len(SYSTEMS):
        print(json.dumps(summary(records)), flush=True)
    return 0
