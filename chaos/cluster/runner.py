"""One chaos run: a fresh local swarm, clients and service churn, a scenario's faults, then checks and a report.

The phases of `run_scenario`:
1. `SwarmCluster.up` of 3 managers + 2 workers, a network namespace each (root only: partitions are nftables
   rules inside them), 1 s heartbeats, nodes started with the fault hooks on (RAFTSWARM_TEST_HOOKS=1);
2. a secret used by a one-replica service pinned to worker1, and a churned service (`ServiceChurn`);
3. `duration` seconds of faults while the register clients run and samplers record each manager's view of
   the leader (every 0.25 s) and each node's agent (its tasks and the secrets it holds, every second);
4. everything healed; the clock runs until the swarm has converged (one leader all managers agree on, each
   manager applied all that is committed, the churned service running its newest spec) or the bound passes;
5. final linearizable reads of every register and the `chaos-acks` listing, then the checks (`checkers`,
   `linearizability`) and any the scenario asked for;
6. the report: `<out>/<scenario>.json`, a text summary (returned, printed by the CLI) and `<scenario>.png`.

The cluster is always taken down, also when the run fails; the report then says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raftswarm.api.client import ApiError
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster

from . import checkers, linearizability
from .faults import TEST_HOOKS_ENV, Nemesis, find_leader
from .history import History
from .scenarios import SCENARIOS
from .workload import ACKS, REGISTERS, RegisterClients, ServiceChurn

HEARTBEAT_PERIOD = 1.0
LEADER_SAMPLE_INTERVAL = 0.25
AGENT_SAMPLE_INTERVAL = 1.0
SECRET_NAME = "chaos-secret"
SECRET_SERVICE = "chaos-secretive"
ERRORS_KEPT = 2000
"""Client errors listed in the report (all are counted): enough for the timeline, bounded for long soaks."""


@dataclass
class RunOptions:
    duration: float = 30.0
    seed: int | None = None
    clients: int = 6
    keys: int = 4
    stale_reads: bool = False
    """Test only: reads served from the node's local copy (see `workload`); the checker must catch it."""
    convergence_bound: float = 30.0
    linearizability_timeout: float = 60.0
    out: Path = field(default_factory=lambda: Path("chaos-reports"))
    clusters_dir: Path | None = None
    keep_failed: bool = False
    """Leave the swarm of a failed run up for inspection (the report says how to remove it)."""


class Run:
    """What a scenario works with: the cluster, the nemesis, the clock, and the record of faults."""

    def __init__(self, scenario: str, cluster: SwarmCluster, options: RunOptions, seed: int) -> None:
        self.scenario = scenario
        self.cluster = cluster
        self.options = options
        self.seed = seed
        self.rng = random.Random(seed)
        self.nemesis = Nemesis(cluster, random.Random(self.rng.random()))
        self.history = History()
        self.started = time.monotonic()
        self.duration = options.duration
        self.fault_phase_ends = self.started + options.duration
        self.faults: list[dict[str, Any]] = []
        self.leaders: list[dict[str, Any]] = []
        self.agent_samples: list[dict[str, Any]] = []
        self.task_secrets: dict[str, set[str]] = {}
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self.expectations: list[dict[str, Any]] = []
        self._later: list[tuple[str, Callable[[], Awaitable[tuple[bool, str]]]]] = []
        self.clients: RegisterClients | None = None
        self.healed_at: float | None = None
        self.convergence: dict[str, Any] = {}
        self.present_acks: set[str] = set()
        self._commit_seen: int | None = None

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    async def hold(self, seconds: float) -> bool:
        """Sleep up to `seconds`, never past the fault phase; False once it is over."""
        left = self.fault_phase_ends - time.monotonic()
        await asyncio.sleep(max(0.0, min(seconds, left)))
        return time.monotonic() < self.fault_phase_ends

    @contextlib.asynccontextmanager
    async def fault(self, name: str, targets: list[ClusterNode]) -> AsyncIterator[dict[str, Any]]:
        record = {"name": name, "targets": [n.name for n in targets], "start": self.now(), "end": None, "detail": ""}
        self.faults.append(record)
        try:
            yield record
        finally:
            record["end"] = self.now()

    async def follower(self) -> ClusterNode:
        leader = await find_leader(self.cluster)
        return self.rng.choice([m for m in self.cluster.managers if m is not leader])

    def expect(self, what: str, ok: bool, detail: str) -> None:
        self.expectations.append({"what": what, "ok": ok, "t": self.now(), "detail": detail})

    def expect_later(self, what: str, check: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        """A check to make once the swarm has converged."""
        self._later.append((what, check))

    def error(self, t: float, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append({"t": round(t, 3), "message": message})

    async def exits_within(self, node: ClusterNode, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while node.running():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def swarm_update(self, spec: dict[str, Any], rotate_root: bool = False) -> None:
        leader = await find_leader(self.cluster)
        async with self.cluster.client(leader, 10.0) as api:
            swarm = await api.swarm_inspect()
            merged = {**swarm["Spec"], **{k: {**swarm["Spec"].get(k, {}), **v} for k, v in spec.items()}}
            if rotate_root:
                merged["CAConfig"]["ForceRotate"] = merged["CAConfig"].get("ForceRotate", 0) + 1
            await api.swarm_update(swarm["Version"]["Index"], merged)

    async def all_renewed(self) -> tuple[bool, str]:
        counts = {n.name: self.cluster.log_tail(n, 100_000).count("renewed this node's certificate") for n in self.cluster.nodes}
        return all(counts.values()), ", ".join(f"{name} {count}" for name, count in counts.items())

    async def run_later_checks(self) -> None:
        for what, check in self._later:
            ok, detail = await check()
            self.expect(what, ok, detail)

    # -- samplers --------------------------------------------------------------------------------------

    async def sample_leaders(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = self.now()
            managers = list(self.cluster.managers)
            names = {m.raft_id: m.name for m in managers}
            statuses = await asyncio.gather(*(self.cluster.raft_status(m, 0.5) for m in managers))
            view = {m.name: names.get(s["leader"]) if s["leader"] else None for m, s in zip(managers, statuses) if s}
            self.leaders.append({"t": t, "view": view})
            await _sleep_unless(stop, LEADER_SAMPLE_INTERVAL)

    async def sample_agents(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.gather(*(self._sample_agent(node) for node in self.cluster.nodes), self._learn_tasks())
            await _sleep_unless(stop, AGENT_SAMPLE_INTERVAL)

    async def _sample_agent(self, node: ClusterNode) -> None:
        if not node.running():
            return
        t = self.now()
        try:
            async with self.cluster.client(node, 1.0) as api:
                status = await api.request("GET", "/raftswarm/agent")
        except (ApiError, OSError, TimeoutError):
            return
        self.agent_samples.append({"t": t, "node": node.name, "tasks": sorted(status["tasks"]), "secrets": sorted(status["secrets"])})

    async def _learn_tasks(self) -> None:
        for manager in self.cluster.managers:
            try:
                async with self.cluster.client(manager, 1.0) as api:
                    tasks = await api.task_list()
            except (ApiError, OSError, TimeoutError):
                continue
            for task in tasks:
                references = task["Spec"].get("ContainerSpec", {}).get("Secrets") or []
                self.task_secrets[task["ID"]] = {ref["SecretID"] for ref in references}
            return

    # -- after the faults ------------------------------------------------------------------------------

    async def converge(self, churn: ServiceChurn) -> dict[str, Any]:
        """From the heal on: time until the swarm is whole again, up to the bound."""
        healed = time.monotonic()
        bound = self.options.convergence_bound
        deadline = healed + bound
        try:
            await churn.settle(bound)
        except TimeoutError as exc:
            return {"ok": False, "bound_s": bound, "seconds": None, "waiting_for": str(exc)}
        waiting_for = ""
        while time.monotonic() < deadline:
            waiting_for = await self._not_yet_converged(churn)
            if not waiting_for:
                return {"ok": True, "bound_s": bound, "seconds": round(time.monotonic() - healed, 2)}
            await asyncio.sleep(0.2)
        return {"ok": False, "bound_s": bound, "seconds": None, "waiting_for": waiting_for}

    async def _not_yet_converged(self, churn: ServiceChurn) -> str:
        managers = self.cluster.managers
        statuses = await asyncio.gather(*(self.cluster.raft_status(m) for m in managers))
        silent = [m.name for m, s in zip(managers, statuses) if s is None]
        if silent:
            return f"managers not answering: {', '.join(silent)}"
        leaders = {s["leader"] for s in statuses}
        if len(leaders) != 1 or 0 in leaders:
            return f"managers disagree on the leader: {sorted(leaders)}"
        # Under load the leader's commit index moves on between two answers: a manager has caught up when it
        # applied what was committed by the previous poll.
        target, self._commit_seen = self._commit_seen, max(s["commit"] for s in statuses)
        behind = [m.name for m, s in zip(managers, statuses) if target is None or s["applied"] < target]
        if behind:
            return f"managers not caught up to commit index {target}: {', '.join(behind)}"
        return await churn.unconverged()

    async def final_reads(self, keys: list[str]) -> set[str]:
        """Each register read once more (linearizably, recorded), and the IDs of every `chaos-acks` object."""
        leader = await find_leader(self.cluster)
        process = -1
        async with self.cluster.client(leader, 10.0) as api:
            for key in keys:
                invoked = self.history.invoke(process, "read", key, None, self.now())
                found = await api.get(REGISTERS, key)
                self.history.complete(invoked, "ok", self.now(), value=found["data"]["value"] if found else None)
            return {o["id"] for o in await api.list(ACKS)}


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def run_scenario(name: str, options: RunOptions, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run one scenario on a fresh swarm; returns the report (also written under `options.out`)."""
    scenario = SCENARIOS[name]
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
    clusters_dir = options.clusters_dir or Path(tempfile.mkdtemp(prefix="rsw-chaos-"))
    cluster_name = f"chaos{os.getpid() % 100000}-{name}"[:32]
    report: dict[str, Any] = {"scenario": name, "summary": scenario.summary, "seed": seed, "duration_s": options.duration}
    report["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    say(f"{name}: starting 3 managers + 2 workers (seed {seed}) ...")
    previous = os.environ.get(TEST_HOOKS_ENV)
    os.environ[TEST_HOOKS_ENV] = "1"
    try:
        cluster = await SwarmCluster.up(cluster_name, 3, 2, base_dir=clusters_dir, network="netns", heartbeat_period=HEARTBEAT_PERIOD)
    finally:
        if previous is None:
            os.environ.pop(TEST_HOOKS_ENV, None)
        else:
            os.environ[TEST_HOOKS_ENV] = previous
    run = Run(name, cluster, options, seed)
    try:
        await _exercise(run, scenario.inject, say)
        report.update(_judge(run))
    except Exception as exc:  # noqa: BLE001 -- a run that could not finish is reported as failed, with why
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        report["ok"] = False
        report.update(_evidence(run))
    finally:
        run.nemesis.teardown()
        if options.keep_failed and not report.get("ok"):
            report["kept_cluster"] = f"raftswarm cluster --clusters-dir {clusters_dir} down --name {cluster.name}"
            say(f"{name}: failed; the cluster stays up for inspection: {report['kept_cluster']} removes it")
        else:
            await asyncio.to_thread(cluster.down)
            if options.clusters_dir is None:
                with contextlib.suppress(OSError):
                    clusters_dir.rmdir()
    _write(report, options.out)
    return report


async def _exercise(run: Run, inject: Callable[[Run], Awaitable[None]], say: Callable[[str], None]) -> None:
    cluster, options = run.cluster, run.options
    say(f"{run.scenario}: creating a secret, a service using it on worker1, and a churned service ...")
    leader = await find_leader(cluster)
    async with cluster.client(leader, 10.0) as api:
        secret = await api.secret_create({"Name": SECRET_NAME, "Data": "Y2hhb3M="})
        worker1 = cluster.workers[0].node_id
        await api.service_create(
            {
                "Name": SECRET_SERVICE,
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "busybox",
                        "Command": ["sleep", "3600"],
                        "Secrets": [{"SecretID": secret["ID"], "SecretName": SECRET_NAME, "File": {"Name": "s", "UID": "0", "GID": "0", "Mode": 0o400}}],
                    },
                    "Placement": {"Constraints": [f"node.id=={worker1}"]},
                },
                "Mode": {"Replicated": {"Replicas": 1}},
            }
        )
    churn = ServiceChurn(cluster, random.Random(run.rng.random()), lambda message: run.error(run.now(), message))
    await churn.create()
    clients = RegisterClients(
        cluster, run.history, run.now, random.Random(run.rng.random()),
        clients=options.clients, keys=options.keys, stale_reads=options.stale_reads, on_error=run.error,
    )
    run.clients = clients
    stop_clients, stop_samplers, stop_churn = asyncio.Event(), asyncio.Event(), asyncio.Event()
    run.started = time.monotonic()
    run.fault_phase_ends = run.started + options.duration
    say(f"{run.scenario}: {options.duration:g} s of faults under load ...")
    async with asyncio.TaskGroup() as group:
        group.create_task(run.sample_leaders(stop_samplers))
        group.create_task(run.sample_agents(stop_samplers))
        group.create_task(clients.run(stop_clients))
        group.create_task(churn.run(stop_churn))
        try:
            await inject(run)
            await run.hold(math.inf)
        finally:
            stop_churn.set()
            await run.nemesis.heal()
        run.healed_at = run.now()
        say(f"{run.scenario}: healed at {run.healed_at:g} s; waiting for the swarm to converge ...")
        run.convergence = await run.converge(churn)
        stop_clients.set()
        stop_samplers.set()
    await run.run_later_checks()
    run.present_acks = await run.final_reads(clients.keys)


def _judge(run: Run) -> dict[str, Any]:
    verdict = linearizability.check(run.history, timeout=run.options.linearizability_timeout)
    checks = {
        "linearizability": verdict.to_json(),
        "acknowledged_writes": checkers.acknowledged_writes(run.clients.acks, run.present_acks),
        "leaders_per_term": checkers.leaders_per_term({n.name: n.log_path for n in run.cluster.managers}),
        "convergence": run.convergence,
        "secret_exposure": checkers.secret_exposure(run.agent_samples, run.task_secrets),
        "scenario_expectations": {"ok": all(e["ok"] for e in run.expectations), "expectations": run.expectations},
    }
    checks["linearizability"]["ok"] = verdict.result == "linearizable"
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks, **_evidence(run)}


def _evidence(run: Run) -> dict[str, Any]:
    operations = run.history.operations()
    buckets: dict[int, dict[str, int]] = {}
    for op in operations:
        end = op.ret if op.status != "info" or math.isfinite(op.ret) else op.call
        bucket = buckets.setdefault(int(end), {"t": int(end), "ok": 0, "fail": 0, "info": 0})
        bucket[op.status] += 1
    return {
        "nodes": [n.name for n in run.cluster.nodes],
        "managers": [n.name for n in run.cluster.managers],
        "operations": run.history.summary(),
        "faults": run.faults,
        "leaders": run.leaders,
        "throughput": [buckets[t] for t in sorted(buckets)],
        "errors": run.errors,
        "error_count": run.error_count,
        "failover": _failover(run),
        "healed_at_s": run.healed_at,
        "history": run.history.to_json(),
    }


def _failover(run: Run) -> dict[str, Any]:
    """Per fault that takes the leader away: seconds until a manager other than the old leader is reported
    leader by the other managers, and the longest stretch without an acknowledged write."""
    times = []
    for fault in run.faults:
        if not fault["name"].startswith(("kill -9 leader", "SIGSTOP leader", "leader isolated", "leader deaf", "kill -9 all")):
            continue
        old = set(fault["targets"]) if not fault["name"].startswith("kill -9 all") else set()
        for sample in run.leaders:
            if sample["t"] < fault["start"]:
                continue
            elected = {leader for name, leader in sample["view"].items() if name not in old and leader and leader not in old}
            if fault["name"].startswith("kill -9 all") and sample["t"] <= (fault["end"] or 0):
                continue
            if elected:
                times.append(round(sample["t"] - fault["start"], 2))
                break
    writes = sorted(op.ret for op in run.history.operations() if op.status == "ok" and op.f in ("write", "cas"))
    gaps = [b - a for a, b in zip(writes, writes[1:])]
    return {
        "leader_losses": len(times),
        "new_leader_p50_s": round(statistics.median(times), 2) if times else None,
        "new_leader_max_s": max(times) if times else None,
        "longest_write_gap_s": round(max(gaps), 2) if gaps else None,
    }


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{report['scenario']}.json").write_text(json.dumps(report, indent=1, default=sorted) + "\n")
    (out / f"{report['scenario']}.txt").write_text(summary(report) + "\n")
    try:
        from .timeline import render

        render(report, out / f"{report['scenario']}.png")
    except Exception as exc:  # noqa: BLE001 -- a plot that fails must not hide the verdicts
        report["timeline_error"] = f"{type(exc).__name__}: {exc}"


def summary(report: dict[str, Any]) -> str:
    """The short text version of a report."""
    ops = report.get("operations", {})
    total = sum(sum(by_type.values()) for by_type in ops.values()) if ops else 0
    head = f"{report['scenario']}: {'PASS' if report.get('ok') else 'FAIL'}  seed {report['seed']}  {report['duration_s']:g} s"
    lines = [head, f"  operations {total} {_counts(ops)}, faults {len(report.get('faults', []))}, client errors {report.get('error_count', 0)}"]
    if "error" in report:
        lines.append(f"  the run failed: {report['error']}")
    checks = report.get("checks", {})
    if "linearizability" in checks:
        lin = checks["linearizability"]
        lines.append(f"  linearizability: {lin['result']} ({lin.get('checked_operations', 0)} operations, {lin.get('elapsed_s', 0):.1f} s)")
    if "acknowledged_writes" in checks:
        acks = checks["acknowledged_writes"]
        lines.append(f"  acknowledged writes: {'ok' if acks['ok'] else 'VIOLATED'} ({acks['acknowledged']} acknowledged, {acks['lost_count']} lost, {acks['unknown_outcome']} unknown)")
    if "leaders_per_term" in checks:
        terms = checks["leaders_per_term"]
        lines.append(f"  leaders per term: {'ok' if terms['ok'] else 'VIOLATED'} ({terms['terms_with_a_leader']} terms with a leader)")
    if "convergence" in checks:
        conv = checks["convergence"]
        said = f"in {conv['seconds']} s" if conv["ok"] else f"not within {conv['bound_s']:g} s: {conv.get('waiting_for', '')}"
        lines.append(f"  convergence after heal: {said}")
    if "secret_exposure" in checks:
        sec = checks["secret_exposure"]
        lines.append(f"  secrets: {'ok' if sec['ok'] else 'VIOLATED'} ({sec['samples']} agent samples, held by {', '.join(sec['held_by']) or 'none'})")
    for expectation in checks.get("scenario_expectations", {}).get("expectations", []):
        lines.append(f"  {'ok' if expectation['ok'] else 'VIOLATED'}: {expectation['what']} ({expectation['detail']})")
    failover = report.get("failover") or {}
    if failover.get("leader_losses"):
        lines.append(
            f"  failover: {failover['leader_losses']} leader losses, new leader p50 {failover['new_leader_p50_s']} s, "
            f"max {failover['new_leader_max_s']} s; longest gap between acknowledged writes {failover['longest_write_gap_s']} s"
        )
    return "\n".join(lines)


def _counts(ops: dict[str, dict[str, int]]) -> str:
    totals = {"ok": 0, "fail": 0, "info": 0}
    for by_type in ops.values():
        for kind, count in by_type.items():
            totals[kind] = totals.get(kind, 0) + count
    return f"(ok {totals['ok']}, fail {totals['fail']}, info {totals['info']})"
