"""One pysyncobj node of the benchmark cluster: `python -m bench.pysyncobj_member --self A --partner B ...`.

The baseline: a `SyncObj` with its default `SyncObjConf` (in-memory journal, no encryption, batched
appends sent on its 50-100 ms tick) whose state is a dict with one `@replicated` put. The node that the
first elected leader turns out to be runs the same workloads as `bench.raft_member` in-process --
sequential writes with `sync=True`, pipelined writes with commit callbacks -- and reports on stdout (see
`bench.workload`); the others only serve. Every node runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import threading
import time

from pysyncobj import FAIL_REASON, SyncObj, SyncObjException, replicated

from .workload import (
    PAYLOAD_BYTES,
    SEQUENTIAL,
    WRITE_TIMEOUT,
    Measurement,
    WorkloadPlan,
    WriteFailed,
    emit,
    in_flight_scenario,
    key_of,
)

SYSTEM = "pysyncobj"

LEADER_POLL = 0.01
"""Seconds between looks at who leads while the cluster elects its first leader."""

STOP_POLL = 0.5
"""Seconds between looks at the stop flag, which the SIGTERM handler sets: a bounded wait sees it promptly
without relying on the handler waking a blocked one."""


class KeyValue(SyncObj):
    def __init__(self, self_address: str, partners: list[str]) -> None:
        super().__init__(self_address, partners)
        self._values: dict[str, bytes] = {}

    @replicated
    def put(self, key: str, value: bytes) -> None:
        self._values[key] = value


def serve(self_address: str, partners: list[str], plan: WorkloadPlan) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    node = KeyValue(self_address, partners)
    try:
        while node._getLeader() is None and not stop.is_set():
            time.sleep(LEADER_POLL)
        if node._isLeader():
            try:
                for measurement in run_workloads(node, plan):
                    emit(measurement.record())
                emit({"done": True})
            except (SyncObjException, WriteFailed) as exc:  # the run is invalid: say why, let the parent stop
                emit({"error": f"{type(exc).__name__}: {exc}"})
        while not stop.wait(STOP_POLL):
            pass
    finally:
        node.destroy()


def run_workloads(node: KeyValue, plan: WorkloadPlan) -> list[Measurement]:
    value = os.urandom(PAYLOAD_BYTES)
    sequential(node, "warmup", plan.warmup, value, plan.max_seconds)
    return [
        sequential(node, SEQUENTIAL, plan.writes, value, plan.max_seconds),
        pipelined(node, plan.pipelined_writes, plan.in_flight, value, plan.max_seconds),
    ]


def sequential(node: KeyValue, scenario: str, writes: int, value: bytes, max_seconds: float) -> Measurement:
    latencies = []
    start = time.perf_counter()
    deadline = start + max_seconds
    for i in range(writes):
        issued = time.perf_counter()
        node.put(key_of(scenario, i), value, sync=True, timeout=WRITE_TIMEOUT)
        committed = time.perf_counter()
        latencies.append(committed - issued)
        if committed > deadline:
            break
    return Measurement(SYSTEM, scenario, latencies, time.perf_counter() - start, 1)


def pipelined(node: KeyValue, writes: int, in_flight: int, value: bytes, max_seconds: float) -> Measurement:
    """A semaphore of `in_flight` is taken per write and given back by its commit callback (which pysyncobj
    calls on its tick thread), so that many writes are outstanding until the end."""
    scenario = in_flight_scenario(in_flight)
    latencies: list[float] = []
    failures: list[int] = []
    window = threading.BoundedSemaphore(in_flight)
    lock = threading.Lock()
    outstanding = peak = 0

    def on_commit(issued: float, result: object, reason: int) -> None:
        nonlocal outstanding
        if reason == FAIL_REASON.SUCCESS:
            latencies.append(time.perf_counter() - issued)
        else:
            failures.append(reason)
        with lock:
            outstanding -= 1
        window.release()

    start = time.perf_counter()
    deadline = start + max_seconds
    for i in range(writes):
        if not window.acquire(timeout=WRITE_TIMEOUT):
            raise WriteFailed(f"no pipelined write committed within {WRITE_TIMEOUT} s")
        issued = time.perf_counter()
        if issued > deadline:
            window.release()
            break
        with lock:
            outstanding += 1
            peak = max(peak, outstanding)
        node.put(key_of(scenario, i), value, callback=functools.partial(on_commit, issued))
    for _ in range(in_flight):  # every slot back: every write issued has had its callback
        if not window.acquire(timeout=WRITE_TIMEOUT):
            raise WriteFailed(f"pipelined writes still uncommitted after {WRITE_TIMEOUT} s")
    if failures:
        raise WriteFailed(f"{len(failures)} pipelined writes failed (pysyncobj FAIL_REASON {sorted(set(failures))})")
    return Measurement(SYSTEM, scenario, latencies, time.perf_counter() - start, peak)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pysyncobj_member", description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="self_address", required=True, help="this node's 127.0.0.1:PORT")
    parser.add_argument("--partner", dest="partners", action="append", required=True, help="another 127.0.0.1:PORT")
    WorkloadPlan.add_arguments(parser)
    args = parser.parse_args()
    serve(args.self_address, args.partners, WorkloadPlan.from_args(args))


if __name__ == "__main__":
    main()
