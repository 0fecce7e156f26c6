"""The write workloads of `python -m bench raft`, their shape shared by both systems' member programs, and
what one measurement reports.

Scenarios, run by the leader of a 3-member cluster in its own process after a warm-up:

    sequential   one client, each write waits for its commit before the next is issued: latency
    pipelined    a window of writes in flight (a new one is issued as soon as one commits): throughput

Every write stores a `PAYLOAD_BYTES` value under a key of its own. Each scenario stops at its write count
or after `max_seconds`, whichever comes first, and reports the writes it actually completed.

Members talk to the parent on stdout, one JSON object a line: a measurement (`Measurement.record()`), then
`{"done": true}`, or `{"error": "..."}` if the leader could not finish. Followers print nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass

PAYLOAD_BYTES = 100

WRITE_TIMEOUT = 10.0
"""Seconds one write may take before the run is declared failed: several election timeouts of either system,
far above any commit on a healthy loopback cluster."""


@dataclass(frozen=True)
class WorkloadPlan:
    warmup: int = 200
    """Writes before measuring: connections are up and followers caught up by then."""
    writes: int = 2_000
    """Sequential writes."""
    pipelined_writes: int = 20_000
    in_flight: int = 1_000
    """Pipelined writes outstanding at once."""
    max_seconds: float = 30.0
    """Per scenario: a system with ~100 ms commits would otherwise take minutes for 2,000 sequential writes."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        defaults = cls()
        add = parser.add_argument
        add("--warmup", type=_count, default=defaults.warmup, help="writes before measuring (default %(default)s)")
        add("--writes", type=_count, default=defaults.writes, help="sequential writes (default %(default)s)")
        add(
            "--pipelined-writes", type=_count, default=defaults.pipelined_writes,
            help="pipelined writes (default %(default)s)",
        )
        add(
            "--in-flight", type=_positive, default=defaults.in_flight,
            help="pipelined writes outstanding at once (default %(default)s)",
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
            "writes_per_s": round(writes / self.seconds, 1) if self.seconds > 0 else 0.0,
            "p50_ms": _ms(percentile(ordered, 0.50)),
            "p99_ms": _ms(percentile(ordered, 0.99)),
            "max_ms": _ms(ordered[-1] if ordered else math.nan),
            "payload_bytes": PAYLOAD_BYTES,
        }


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


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number
