"""One raftswarm manager of the benchmark cluster: `python -m bench.raft_member --state-dir D --port P ...`.

It runs the real manager code path -- `Manager` with Raft over mutual TLS 1.3, the AES-GCM encrypted WAL
with an fdatasync per group commit, and the replicated store -- from a state directory the parent laid out.
The member that the first elected leader turns out to be runs the workloads in-process, writing through
`ReplicatedStore.transact` as the control loops will, and reports on stdout (see `bench.workload`); the
others only serve. Every member runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from raftswarm import eventloop
from raftswarm.errors import RaftswarmError
from raftswarm.node.manager_role import Manager, ManagerConfig
from raftswarm.node.state_dir import StateDir
from raftswarm.raft.messages import NONE
from raftswarm.store.state import put
from raftswarm.store.store import ReplicatedStore

from .workload import (
    PAYLOAD_BYTES,
    SEQUENTIAL,
    WRITE_TIMEOUT,
    Measurement,
    WorkloadPlan,
    emit,
    in_flight_scenario,
    sequential_writes,
    windowed_writes,
)

SYSTEM = "raftswarm"
KIND = "bench"

LEADER_POLL = 0.01
"""Seconds between looks at who leads while the cluster elects its first leader."""


async def serve(state_dir: Path, port: int, plan: WorkloadPlan) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    directory = StateDir(state_dir)
    manager = Manager(directory, ManagerConfig("127.0.0.1", port), directory.load_kek())
    await manager.start()
    try:
        driver = manager.driver
        while driver.leader_id == NONE and not stop.is_set():
            await asyncio.sleep(LEADER_POLL)
        if driver.is_leader:
            try:
                for measurement in await run_workloads(manager.store, plan):
                    emit(measurement.record())
                emit({"done": True})
            except RaftswarmError as exc:  # a failed write makes the run invalid: say why, let the parent stop
                emit({"error": f"{type(exc).__name__}: {exc}"})
        await stop.wait()
    finally:
        await manager.close()


async def run_workloads(store: ReplicatedStore, plan: WorkloadPlan) -> list[Measurement]:
    value = os.urandom(PAYLOAD_BYTES)

    async def write(key: str) -> None:
        await store.transact([put(KIND, key, value)], WRITE_TIMEOUT)

    await sequential_writes(SYSTEM, "warmup", write, plan.warmup, plan.max_seconds)
    return [
        await sequential_writes(SYSTEM, SEQUENTIAL, write, plan.writes, plan.max_seconds),
        await windowed_writes(
            SYSTEM, in_flight_scenario(plan.in_flight), write, plan.pipelined_writes, plan.in_flight,
            plan.max_seconds,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raft_member", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="laid out by raftswarm.node.provision")
    parser.add_argument("--port", type=int, required=True, help="Raft port on 127.0.0.1, as provisioned")
    WorkloadPlan.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    eventloop.tune_collector()  # as a node does (raftswarm.node.main)
    eventloop.run(lambda: serve(args.state_dir, args.port, WorkloadPlan.from_args(args)))


if __name__ == "__main__":
    main()
