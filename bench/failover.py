"""`python -m bench failover`: how long a swarm is without a leader when its leader dies, and how long a dead
worker's tasks take to run elsewhere.

- leader: a local cluster of 3 managers + 2 workers (a network namespace per node as root, loopback
  addresses otherwise) with raftswarm's default Raft timeouts (100 ms ticks, elections after 10-20 ticks).
  Each run writes to the store through a follower until it succeeds, kills the leader with SIGKILL, and
  times, from the kill, (1) a new leader as the surviving managers report it and (2) the first write
  committed through a surviving manager (writes retried every few milliseconds). Client-visible failover:
  at the kill, one `node ls` and one write are sent to a surviving manager's API as a user would (no retry,
  the API's own 30 s timeout), timed to their answer; the write may fail fast when its outcome is unknown.
  The killed manager is started again and caught up before the next run. Reported: p50 and p99 of each over
  `--runs`. Target: first committed write p50 <= 1.5 s (Docker's defaults take about 10 s); a client's read
  should answer within about 2 s of the kill.
- worker: `bench schedule`'s failover scenario on the same cluster (1 s heartbeat): 100 replicas RUNNING,
  worker2 killed, timed to 100 RUNNING again elsewhere. Target 5 s.

Prints one JSON line per scenario and a `summary` line judging the targets (reported, not asserted).
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
from pathlib import Path
from typing import Any

from raftswarm.api.client import ApiError
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster

from .schedule import HEARTBEAT_PERIOD, BenchFailed, failover_scenario

TARGET_LEADER_S = 1.5
WRITE_RETRY = 0.005
RUN_TIMEOUT = 30.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="leader kills (%(default)s)")
    parser.add_argument("--replicas", type=int, default=100, help="worker scenario service size (%(default)s)")
    parser.add_argument("--network", choices=("auto", "netns", "loopback"), default="auto")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="rsw-bench-failover-") as workdir:
        try:
            records = asyncio.run(_run(args, Path(workdir), say))
        except BenchFailed as exc:
            print(f"could not be measured: {exc}", file=sys.stderr)
            return 1
        finally:
            for cluster in SwarmCluster.existing(workdir):
                cluster.down()
    for record in records:
        print(json.dumps(record), flush=True)
    leader, worker = records
    summary = {
        "summary": "failover",
        "targets": [
            {"scenario": "leader", "target": "first committed write after the leader's kill, p50", "value_s": leader["first_write_p50_s"], "target_s": TARGET_LEADER_S, "met": leader["met"]},
            {"scenario": "worker", "target": worker["target"], "value_s": worker["running_s"], "target_s": worker["target_s"], "met": worker["met"]},
        ],
    }
    print(json.dumps(summary), flush=True)
    return 0


async def _run(args: argparse.Namespace, workdir: Path, say) -> list[dict[str, Any]]:
    say("starting 3 managers + 2 workers ...")
    cluster = await SwarmCluster.up(f"bfail{os.getpid()}", 3, 2, base_dir=workdir, network=args.network, heartbeat_period=HEARTBEAT_PERIOD)
    try:
        leader_record = await leader_scenario(cluster, args.runs, say)
        worker_record = await failover_scenario(cluster, args.replicas, say)
        return [leader_record, worker_record]
    finally:
        await asyncio.to_thread(cluster.down)


async def _write(node: ClusterNode, cluster: SwarmCluster, key: str, timeout: float = 1.0) -> bool:
    try:
        async with cluster.client(node, timeout + 1.0) as api:
            await api.transact([["put", "bench-registers", key, {"at": time.time()}, -1]], timeout=timeout)
        return True
    except (ApiError, OSError, TimeoutError):
        return False


async def _read_once(node: ClusterNode, cluster: SwarmCluster) -> bool:
    try:
        async with cluster.client(node, 30.0) as api:
            await api.node_list()
        return True
    except (ApiError, OSError, TimeoutError):
        return False


async def _answered(call, since: float) -> tuple[float, bool]:
    """Seconds from `since` until `call` answered, and whether it succeeded."""
    ok = await call
    return time.monotonic() - since, ok


async def leader_scenario(cluster: SwarmCluster, runs: int, say) -> dict[str, Any]:
    elected, written = [], []
    client_reads: list[float] = []
    client_writes: list[float] = []
    client_read_failures = client_write_failures = 0
    for run in range(1, runs + 1):
        leader = await cluster.leader()
        if leader is None:
            raise BenchFailed("no leader before the kill")
        survivors = [m for m in cluster.managers if m is not leader]
        if not await _write(survivors[0], cluster, f"before-{run}"):
            raise BenchFailed("the swarm does not take writes before the kill")
        cluster.kill(leader)
        killed = time.monotonic()
        client_read = asyncio.create_task(_answered(_read_once(survivors[1], cluster), killed))
        client_write = asyncio.create_task(_answered(_write(survivors[1], cluster, f"client-{run}", 30.0), killed))
        new_leader_s = first_write_s = None
        while first_write_s is None or new_leader_s is None:
            now = time.monotonic() - killed
            if now > RUN_TIMEOUT:
                raise BenchFailed(f"run {run}: no new leader or write within {RUN_TIMEOUT:g} s")
            if new_leader_s is None:
                statuses = await asyncio.gather(*(cluster.raft_status(m) for m in survivors))
                if any(s is not None and s["role"] == "leader" for s in statuses):
                    new_leader_s = time.monotonic() - killed
            if first_write_s is None and await _write(survivors[run % 2], cluster, f"after-{run}"):
                first_write_s = time.monotonic() - killed
            await asyncio.sleep(WRITE_RETRY)
        elected.append(new_leader_s)
        written.append(first_write_s)
        (read_s, read_ok), (write_s, write_ok) = await client_read, await client_write
        client_reads.append(read_s)
        client_writes.append(write_s)
        client_write_failures += not write_ok
        client_read_failures += not read_ok
        say(
            f"  run {run}: new leader {new_leader_s:.3f} s, first write {first_write_s:.3f} s; a client's node ls "
            f"answered at {read_s:.3f} s, its write at {write_s:.3f} s ({'ok' if write_ok else 'failed'})"
        )
        await cluster.restart(leader)
        await _caught_up(cluster, leader)
    return {
        "scenario": "leader",
        "runs": runs,
        "new_leader_p50_s": round(statistics.median(elected), 3),
        "new_leader_p99_s": round(_p99(elected), 3),
        "first_write_p50_s": round(statistics.median(written), 3),
        "first_write_p99_s": round(_p99(written), 3),
        "client_read_p50_s": round(statistics.median(client_reads), 3),
        "client_read_p99_s": round(_p99(client_reads), 3),
        "client_read_failures": client_read_failures,
        "client_write_p50_s": round(statistics.median(client_writes), 3),
        "client_write_p99_s": round(_p99(client_writes), 3),
        "client_write_failures": client_write_failures,
        "target_s": TARGET_LEADER_S,
        "met": statistics.median(written) <= TARGET_LEADER_S,
        "network": cluster.network,
        "cpus": os.cpu_count(),
    }


async def _caught_up(cluster: SwarmCluster, node: ClusterNode) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        leader = await cluster.leader()
        mine, theirs = await cluster.raft_status(node), (await cluster.raft_status(leader)) if leader else None
        if mine and theirs and mine["role"] == "follower" and mine["applied"] >= theirs["commit"]:
            return
        await asyncio.sleep(0.1)
    raise BenchFailed(f"{node.name} did not catch up after its restart")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
