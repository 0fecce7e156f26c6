"""The write workloads of `python -m bench raft`, their shape shared by every system and path, and what one
measurement reports.

Scenarios, after a warm-up:

    sequential     one client, each write waits for its commit before the next is issued: latency
    in-flight-N    a window of N writes in flight (a new one is issued as soon as one commits): throughput,
                   and the latency a write sees under that load

Every write stores a `PAYLOAD_BYTES` value under a key of its own. Each scenario stops at its write count
or after `max_seconds`, whichever comes first, and reports the writes it actually completed.

`sequential_writes` and `windowed_writes` run a scenario over any `Write`: the client-API path
(`bench.api_writes`) and raftswarm's leader-local member (`bench.raft_member`) use them. pysyncobj's member
(`bench.pysyncobj_member`) has loops of its own of the same shape, because its writes are a blocking call and
a commit callback on pysyncobj's thread rather than coroutines; it names its scenarios alike.

Members talk to the parent on stdout, one JSON object a line: a measurement (`Measurement.record()`), then
`{"done": true}`, or `{"error": "..."}` if the leader could not finish. Followers print nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PAYLOAD_BYTES = 100

WRITE_TIMEOUT = 10.0
"""Seconds one write may take before the run is declared failed: several election timeouts of either system,
far above any commit on a healthy loopback cluster."""

SEQUENTIAL = "sequential"

Write = Callable[[str], Awaitable[None]]
"""Issues one write of the workload's value under the given key and returns once it has committed; raises
`WriteFailed` if it did not."""


def in_flight_scenario(in_flight: int) -> str:
    return f"in-flight-{in_flight}"


@dataclass(frozen=True)
class WorkloadPlan:
    warmup: int = 200
    """Writes before measuring: connections are up and followers caught up by then."""
    writes: int = 2_000
    """Sequential writes."""
    pipelined_writes: int = 20_000
    """Writes of the in-flight scenario."""
    in_flight: int = 64
    """Writes outstanding at once in the in-flight scenario."""
    max_seconds: float = 20.0
    """Per scenario: a system with ~100 ms commits would otherwise take minutes for 2,000 sequential writes."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, defaults: WorkloadPlan | None = None) -> None:
        defaults = defaults or cls()
        add = parser.add_argument
        add("--warmup", type=_count, default=defaults.warmup, help="writes before measuring (default %(default)s)")
        add("--writes", type=_count, default=defaults.writes, help="sequential writes (default %(default)s)")
        add(
            "--pipelined-writes", type=_count, default=defaults.pipelined_writes,
            help="writes of the in-flight scenario (default %(default)s)",
        )
        add(
            "--in-flight", type=positive, default=defaults.in_flight,
            help="writes outstanding at once in the in-flight scenario (default %(default)s)",
        )
        add(
            "--max-seconds", type=float, default=defaults.max_seconds,
            help="stop a scenario after this long, reporting the writes done (default %(default)s)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkloadPlan:
        return cls(args.warmup, args.writes, args.pipelined_writes, args.in_flight, args.max_seconds)

    def as_arguments(self) -> list[str]:
        """The command-line options that give this plan back through `add_arguments` and `from_args`."""
        return [
            "--warmup", str(self.warmup),
            "--writes", str(self.writes),
            "--pipelined-writes", str(self.pipelined_writes),
            "--in-flight", str(self.in_flight),
            "--max-seconds", str(self.max_seconds),
        ]


QUICK_PLAN = WorkloadPlan(warmup=20, writes=50, pipelined_writes=500, max_seconds=10.0)
"""`--quick`: enough writes to exercise every path (the tests use it), too few for figures worth quoting.
10 s per scenario lets pysyncobj's ~100 ms commits finish 50 sequential writes."""


class WriteFailed(Exception):
    """A benchmark write did not commit: the run measures nothing and says why."""


@dataclass
class Measurement:
    system: str
    scenario: str
    latencies: list[float]
    """Seconds from issuing each completed write to its commit being reported to the writer."""
    seconds: float
    """Wall time of the whole scenario, first write issued to last write committed."""
    in_flight: int
    """The most writes that were outstanding at once."""

    def record(self) -> dict:
        ordered = sorted(self.latencies)
        writes = len(ordered)
        return {
            "system": self.system,
            "scenario": self.scenario,
            "writes": writes,
            "in_flight": self.in_flight,
            "seconds": round(self.seconds, 4),
            "ops_per_s": round(writes / self.seconds, 1) if self.seconds > 0 else 0.0,
            "p50_ms": _ms(percentile(ordered, 0.50)),
            "p99_ms": _ms(percentile(ordered, 0.99)),
            "max_ms": _ms(ordered[-1] if ordered else math.nan),
            "payload_bytes": PAYLOAD_BYTES,
        }


async def sequential_writes(system: str, scenario: str, write: Write, writes: int, max_seconds: float) -> Measurement:
    """One writer: each write is issued once the one before has committed."""
    latencies = []
    start = time.perf_counter()
    deadline = start + max_seconds
    for i in range(writes):
        issued = time.perf_counter()
        await write(key_of(scenario, i))
        committed = time.perf_counter()
        latencies.append(committed - issued)
        if committed > deadline:
            break
    return Measurement(system, scenario, latencies, time.perf_counter() - start, 1)


async def windowed_writes(
    system: str, scenario: str, write: Write, writes: int, in_flight: int, max_seconds: float
) -> Measurement:
    """`in_flight` writers share one sequence of writes, so exactly that many are outstanding until the end."""
    latencies = []
    indexes = iter(range(writes))
    outstanding = peak = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def writer() -> None:
        nonlocal outstanding, peak
        for i in indexes:
            issued = time.perf_counter()
            if issued > deadline:
                return
            outstanding += 1
            peak = max(peak, outstanding)
            await write(key_of(scenario, i))
            outstanding -= 1
            latencies.append(time.perf_counter() - issued)

    try:
        async with asyncio.TaskGroup() as writers:
            for _ in range(min(in_flight, writes)):
                writers.create_task(writer())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # the writers fail alike (say, the leader died): one says why
    return Measurement(system, scenario, latencies, time.perf_counter() - start, peak)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN for no samples)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def key_of(scenario: str, i: int) -> str:
    return f"{scenario}-{i}"


def emit(message: dict) -> None:
    """One line to the parent; flushed at once, since the parent waits on it."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number
