"""`python -m bench raft`: Raft write latency and throughput of raftswarm against pysyncobj, same machine, same run.

For each system it starts 3 member processes on 127.0.0.1 -- raftswarm managers on their real code path
(mutual TLS 1.3, AES-GCM encrypted WAL, fdatasync per group commit; `bench.raft_member`), pysyncobj nodes
with their defaults (`bench.pysyncobj_member`) -- and the member that leads runs the workloads of
`bench.workload` in its own process, so neither system pays a client hop. The systems are measured one
after the other, never at once, so they do not compete for the CPUs.

Prints one JSON line per system and scenario on stdout, and a summary against the targets on stderr:
raftswarm's sequential p50 <= 2 ms and p99 <= 10 ms, and its pipelined throughput at least pysyncobj's.
Targets are reported, not asserted; the exit status is non-zero only if a system could not be measured.
Everything runs in a temporary directory that is removed afterwards; every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from raftswarm.localcluster.managers import LocalCluster, free_port

from .workload import WRITE_TIMEOUT, WorkloadPlan

SYSTEMS = ("raftswarm", "pysyncobj")
MEMBERS = 3

TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0

STARTUP_SECONDS = 30.0
"""For the members to start, elect a leader and warm up: imports take about a second, an election 1-3 s."""

STOP_GRACE = 5.0
"""Seconds a member has to exit after SIGTERM before it gets SIGKILL."""

LOG_TAIL_LINES = 20

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BenchFailed(Exception):
    """A system could not be measured; the message says why, with its members' logs."""


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    plan = WorkloadPlan.from_args(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        print(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}, not {args.systems!r}", file=sys.stderr)
        return 2
    if "pysyncobj" in systems and importlib.util.find_spec("pysyncobj") is None:
        print("pysyncobj is not installed: pip install pysyncobj (or pip install -e '.[bench]')", file=sys.stderr)
        return 2
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    records: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="raftswarm-bench-") as workdir:
        for system in systems:
            say(f"measuring {system}: {MEMBERS} members on 127.0.0.1 ...")
            try:
                measured = measure(system, plan, Path(workdir) / system)
            except BenchFailed as exc:
                print(f"{system} could not be measured: {exc}", file=sys.stderr)
                failed = True
                continue
            for record in measured:
                print(json.dumps(record), flush=True)
            records.extend(measured)
    say(summary(records, plan))
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench raft", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated, measured in this order (default %(default)s)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines; no summary on stderr")
    WorkloadPlan.add_arguments(parser)
    return parser


# -- one system ----------------------------------------------------------------------------------------


def raftswarm_members(directory: Path, plan: WorkloadPlan) -> list[list[str]]:
    """Managers laid out as `LocalCluster` does: one root CA, a certificate, KEK and encrypted log each."""
    cluster = LocalCluster(directory)
    cluster.provision(MEMBERS)
    return [
        ["-m", "bench.raft_member", "--state-dir", str(m.state_dir), "--port", str(m.port), *plan.as_arguments()]
        for m in cluster.managers
    ]


def pysyncobj_members(directory: Path, plan: WorkloadPlan) -> list[list[str]]:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(MEMBERS)]
    return [
        [
            "-m", "bench.pysyncobj_member", "--self", address,
            *(arg for other in addresses if other != address for arg in ("--partner", other)),
            *plan.as_arguments(),
        ]
        for address in addresses
    ]


LAYOUTS: dict[str, Callable[[Path, WorkloadPlan], list[list[str]]]] = {
    "raftswarm": raftswarm_members,
    "pysyncobj": pysyncobj_members,
}


def measure(system: str, plan: WorkloadPlan, directory: Path) -> list[dict]:
    """Lay out and start the system's members, return what its leader measured, and end every member."""
    directory.mkdir(parents=True)
    member_args = LAYOUTS[system](directory, plan)
    logs = [directory / f"member{i + 1}.log" for i in range(len(member_args))]
    # Warm-up and both scenarios, each bounded by max_seconds plus one write's timeout.
    timeout = STARTUP_SECONDS + 3 * (plan.max_seconds + WRITE_TIMEOUT)
    try:
        with contextlib.ExitStack() as files:
            stderrs = [files.enter_context(open(log, "wb")) for log in logs]
            records = asyncio.run(run_members(member_args, stderrs, directory, timeout))
    except BenchFailed as exc:
        raise BenchFailed(f"{exc}\n{_log_tails(logs)}") from None  # the same failure, with the members' logs
    return [{**record, "members": MEMBERS, "cpus": os.cpu_count()} for record in records]


async def run_members(member_args: list[list[str]], stderrs: list[BinaryIO], cwd: Path, timeout: float) -> list[dict]:
    pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    processes: list[asyncio.subprocess.Process] = []
    try:
        for args, stderr in zip(member_args, stderrs, strict=True):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=stderr, env=env, cwd=cwd,
                )
            )
        try:
            async with asyncio.timeout(timeout):
                return await leader_report(processes)
        except TimeoutError:
            raise BenchFailed(f"no results within {timeout:.0f} s") from None
    finally:
        await _stop(processes)


async def leader_report(processes: list[asyncio.subprocess.Process]) -> list[dict]:
    """The measurements some member reports on stdout, up to its `done`; its `error`, or every member
    exiting first, fails the run."""
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def forward(process: asyncio.subprocess.Process) -> None:
        async for line in process.stdout:
            await lines.put(line)
        await lines.put(None)

    readers = [asyncio.create_task(forward(p), name=f"bench-member-{p.pid}") for p in processes]
    records = []
    open_streams = len(readers)
    try:
        while open_streams:
            line = await lines.get()
            if line is None:
                open_streams -= 1
                continue
            try:
                message = json.loads(line)
            except ValueError:
                raise BenchFailed(f"a member printed something that is not JSON: {line[:200]!r}") from None
            if "error" in message:
                raise BenchFailed(f"the leader failed: {message['error']}")
            if message.get("done"):
                return records
            records.append(message)
        raise BenchFailed("every member exited before the leader reported")
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM to every member, then SIGKILL to those still running once the grace period is over."""
    for process in processes:
        if process.returncode is None:
            process.terminate()
    deadline = asyncio.get_running_loop().time() + STOP_GRACE
    for process in processes:
        try:
            async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def _log_tails(logs: list[Path]) -> str:
    parts = []
    for log in logs:
        try:
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            tail = ["(no log)"]
        parts.append(f"--- {log.name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


# -- the summary -----------------------------------------------------------------------------------------


def summary(records: list[dict], plan: WorkloadPlan) -> str:
    """The measurements as a table, then each target with its measured value and whether it was met."""
    requested = {"sequential": plan.writes, "pipelined": plan.pipelined_writes}
    rows = [
        f"  {r['system']:10} {r['scenario']:11} {r['writes']:6d} writes  {r['in_flight']:5d} in flight  "
        f"p50 {_fmt_ms(r['p50_ms'])}  p99 {_fmt_ms(r['p99_ms'])}  {r['writes_per_s']:9,.0f} writes/s"
        + (f"  (stopped after {plan.max_seconds:g} s)" if r["writes"] < requested[r["scenario"]] else "")
        for r in records
    ]
    found = {(r["system"], r["scenario"]): r for r in records}
    targets = []
    sequential = found.get(("raftswarm", "sequential"))
    if sequential is not None:
        for name, limit in (("p50_ms", TARGET_P50_MS), ("p99_ms", TARGET_P99_MS)):
            value = sequential[name]
            verdict = "met" if value is not None and value <= limit else f"MISSED ({value / limit:.1f}x the target)"
            targets.append(f"  raftswarm sequential {name[:3]} <= {limit:g} ms: {_fmt_ms(value).strip()}  {verdict}")
    ours, theirs = found.get(("raftswarm", "pipelined")), found.get(("pysyncobj", "pipelined"))
    if ours is not None and theirs is not None:
        ratio = ours["writes_per_s"] / theirs["writes_per_s"] if theirs["writes_per_s"] else float("inf")
        verdict = "met" if ratio >= 1 else "MISSED"
        targets.append(
            f"  raftswarm pipelined >= pysyncobj pipelined: {ours['writes_per_s']:,.0f} vs "
            f"{theirs['writes_per_s']:,.0f} writes/s ({ratio:.2f}x)  {verdict}"
        )
    return "\n".join(["raft benchmark, 3 members each on 127.0.0.1:", *rows, "targets:", *targets])


def _fmt_ms(value: float | None) -> str:
    return "     n/a" if value is None else f"{value:7.2f} ms"
