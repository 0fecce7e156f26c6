"""The chaos suite's command line, `python -m chaos <command>`.

`sim` runs the deterministic simulator over many seeds for each cluster size, in parallel processes, and
exits non-zero if any check failed anywhere; each failure is printed with the one command that replays it.

`run` injects faults into real local clusters (root: a network namespace per node) under a client workload,
one fresh 3+2 swarm per scenario, and checks what the clients saw (`chaos.cluster`); it writes a JSON report,
a text summary and a PNG timeline per scenario and exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Self, TextIO

from chaos.cluster.runner import RunOptions, run_scenario, summary
from chaos.cluster.scenarios import CI_SUBSET, SCENARIOS
from chaos.driver import DRIVER, PERSISTENCE_MODES
from chaos.sim import TRACE_LEN, Result, run_seed
from raftswarm.localcluster.hostnet import netns_unavailable_reason as cluster_unavailable_reason
from raftswarm.raft.core import RaftCore

SIZES = (3, 5, 7)
DEFAULT_SEEDS = 500
DEFAULT_STEPS = 2000
FAILURES_SHOWN = 5
"""Failures printed in full; the seeds of the rest are listed (the first ones are usually the clearest)."""

STATS_SHOWN = (
    "committed",
    "leaders_elected",
    "crashes",
    "partitions",
    "snapshots_installed",
    "membership_changes",
    "transfers",
    "reads_served",
    "proposals_dropped",
    "writes_lost_after_send",
)


def main(argv: Sequence[str] | None = None, core_cls: type[RaftCore] = RaftCore) -> int:
    """Entry point; `core_cls` lets tests run the simulator against deliberately broken cores."""
    args = _parser().parse_args(argv)
    return args.command(args, core_cls, sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands", required=True)
    sim = commands.add_parser(
        "sim",
        help="deterministic simulation of the Raft core under faults, many seeds",
        description="Simulate Raft clusters under faults and check safety after every step and liveness at the end.",
    )
    sim.add_argument("--nodes", type=int, choices=SIZES, help="cluster size (default: each of 3, 5 and 7)")
    sim.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per size, 0..N-1 (default %(default)s)")
    sim.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="chaos steps per seed (default %(default)s)")
    sim.add_argument("--seed", type=int, help="run exactly this seed (to replay a failure)")
    sim.add_argument(
        "--persistence",
        choices=PERSISTENCE_MODES,
        default=DRIVER,
        help="how nodes persist: 'driver' runs the production driver's batched, asynchronous writes; 'sync' "
        "writes each Ready before acting on it (default %(default)s)",
    )
    sim.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    sim.add_argument("--verbose", action="store_true", help="a line per seed; with --seed, the whole trace")
    sim.set_defaults(command=run_sim)

    real = commands.add_parser(
        "run",
        help="faults injected into real local clusters under load, histories checked",
        description="Run fault scenarios against real local swarms (as root) and check the clients' histories.",
    )
    which = real.add_mutually_exclusive_group()
    which.add_argument("--scenario", action="append", metavar="NAME", help="a scenario to run (repeatable); see --list")
    which.add_argument("--all", action="store_true", help="every scenario (a soak run with a long --duration)")
    which.add_argument("--ci", action="store_true", help="the CI subset: " + ", ".join(CI_SUBSET) + " (the default)")
    which.add_argument("--list", action="store_true", help="list the scenarios and exit")
    real.add_argument("--duration", type=float, default=30.0, help="seconds of faults per scenario (default %(default)s)")
    real.add_argument("--seed", type=int, help="random seed of the fault schedule and workload (default: random)")
    real.add_argument("--clients", type=int, default=6, help="concurrent register clients (default %(default)s)")
    real.add_argument("--out", type=Path, default=Path("chaos-reports"), help="report directory (default %(default)s)")
    real.add_argument("--keep-failed", action="store_true", help="leave the swarm of a failed scenario up for inspection")
    real.add_argument(
        "--stale-reads",
        action="store_true",
        help="TEST ONLY: serve reads from the node's local copy; the linearizability check must then fail",
    )
    real.set_defaults(command=run_real)
    return parser


def run_real(args: argparse.Namespace, core_cls: type[RaftCore], out: TextIO) -> int:
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:20} {scenario.summary}{'  [ci]' if scenario.name in CI_SUBSET else ''}", file=out)
        return 0
    names = list(SCENARIOS) if args.all else args.scenario or list(CI_SUBSET)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.duration <= 0 or args.clients < 1:
        print("--duration must be positive and --clients at least 1", file=sys.stderr)
        return 2
    reason = cluster_unavailable_reason() or ("" if shutil.which("nft") else "nft is not installed (apt-get install nftables)")
    if reason:
        print(f"chaos run needs a network namespace per node: {reason}", file=sys.stderr)
        return 2
    options = RunOptions(duration=args.duration, seed=args.seed, clients=args.clients, stale_reads=args.stale_reads, out=args.out, keep_failed=args.keep_failed)
    say = functools.partial(print, file=sys.stderr, flush=True)
    started = time.perf_counter()
    reports = [asyncio.run(run_scenario(name, options, say)) for name in names]
    for report in reports:
        print(summary(report), file=out)
    failed = [r["scenario"] for r in reports if not r.get("ok")]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "every check held"
    print(f"\nchaos run: {len(reports)} scenarios, {time.perf_counter() - started:.0f} s: {verdict}; reports in {args.out}/", file=out)
    return 1 if failed else 0


def run_sim(args: argparse.Namespace, core_cls: type[RaftCore], out: TextIO) -> int:
    sizes = (args.nodes,) if args.nodes else SIZES
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    replay = args.seed is not None
    full_trace = replay and args.verbose
    run = functools.partial(
        _run_one,
        steps=args.steps,
        core_cls=core_cls,
        trace_len=None if full_trace else TRACE_LEN,
        persistence=args.persistence,
    )
    started = time.perf_counter()
    failures: list[Result] = []
    checks = 0
    with _workers(args.jobs, len(seeds)) as pool:
        for size in sizes:
            size_started = time.perf_counter()
            results = sorted(pool.imap_unordered(run, [(size, seed) for seed in seeds], chunksize=2), key=_seed_of)
            elapsed = time.perf_counter() - size_started
            for result in results:
                if args.verbose or replay:
                    _print_seed(result, full_trace, out)
            failures += [result for result in results if not result.ok]
            checks += sum(result.checks for result in results)
            _print_size(size, results, elapsed, out)
    for failure in failures[:FAILURES_SHOWN]:
        _print_failure(failure, out)
    if len(failures) > FAILURES_SHOWN:
        rest = ", ".join(f"{r.size}/{r.seed}" for r in failures[FAILURES_SHOWN:])
        print(f"\nalso failed (nodes/seed): {rest}", file=out)
    seconds = time.perf_counter() - started
    verdict = f"{len(failures)} FAILED" if failures else "all checks held"
    print(
        f"\nchaos sim, {args.persistence} persistence: sizes {','.join(map(str, sizes))}, {len(seeds)} seeds, "
        f"{args.steps} steps: {verdict}; "
        f"{seconds:.1f}s, {checks:,} checks",
        file=out,
    )
    return 1 if failures else 0


def _run_one(
    task: tuple[int, int], steps: int, core_cls: type[RaftCore], trace_len: int | None, persistence: str
) -> Result:
    size, seed = task
    return run_seed(seed, size, steps, core_cls, trace_len, persistence)


def _seed_of(result: Result) -> int:
    return result.seed


class _InProcess:
    """Stands in for a process pool when one process is enough (one seed, or --jobs 1)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def imap_unordered(self, fn, tasks, chunksize: int = 1):
        return map(fn, tasks)


def _workers(jobs: int, seeds: int):
    if jobs <= 1 or seeds <= 1:
        return _InProcess()
    return multiprocessing.Pool(jobs)


def _print_seed(result: Result, full_trace: bool, out: TextIO) -> None:
    verdict = "ok" if result.ok else f"FAILED ({result.violation.invariant})"
    counters = " ".join(f"{name}={result.stats[name]}" for name in STATS_SHOWN)
    print(f"nodes={result.size} seed={result.seed}: {verdict}; {counters}", file=out)
    if full_trace and result.ok:  # a failure prints its trace with the failure report
        print("\n".join(result.trace), file=out)


def _print_size(size: int, results: list[Result], elapsed: float, out: TextIO) -> None:
    failed = sum(1 for result in results if not result.ok)
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.stats)
    counters = ", ".join(f"{totals[name]:,} {name.replace('_', ' ')}" for name in STATS_SHOWN)
    rate = len(results) / elapsed if elapsed else float("inf")
    print(
        f"nodes {size}: {len(results)} seeds, {failed} failed, {elapsed:.1f}s ({rate:.1f} seeds/s, "
        f"{totals['steps_run'] / elapsed if elapsed else 0:,.0f} steps/s); {counters}",
        file=out,
    )


def _print_failure(result: Result, out: TextIO) -> None:
    violation = result.violation
    print(f"\nFAILED nodes={result.size} seed={result.seed}: {violation.invariant}", file=out)
    print(f"  {violation.detail}".replace("\n", "\n  "), file=out)
    print(f"  replay: {result.replay_command()}", file=out)
    print(f"  last {len(result.trace)} steps (step, virtual time, event):", file=out)
    for line in result.trace:
        print(f"    {line}", file=out)
