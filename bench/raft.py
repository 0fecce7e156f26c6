"""`python -m bench raft`: Raft write latency and throughput of raftswarm, etcd and pysyncobj, 3 members each.

All run on this machine's 127.0.0.1 in the same run. Each system is measured through its client API by one
client implementation (`bench.api_writes`: aiohttp, 100-byte writes, the same concurrency control and clock
for all): raftswarm through its node API's store endpoint (3 `raftswarm-node` managers: mutual TLS 1.3 Raft,
AES-GCM encrypted WAL, fdatasync per group commit), etcd through its v3 JSON gateway (`bench.etcd_cluster`:
Debian's etcd-server, fsync on, no TLS). Their lines also say how the client connected (`transport`) and the
CPU seconds the client and the members spent (`client_cpu_s`, `members_cpu_s`): on a small machine the
client's share is not negligible. pysyncobj has no network client API: its leader's own process calls its
replicated method, and its lines say so in `note`. raftswarm is also measured leader-local, as the control
loops write: the leader's process calls `ReplicatedStore.transact` with no client hop (`bench.raft_member`).
The systems and paths are measured one after the other, never at once, so they do not compete for the CPUs.

Prints on stdout, once every system is measured, one JSON line per system, path (`api`, `leader-local`)
and scenario (`sequential`, `in-flight-N`; see `bench.workload`) with `p50_ms`, `p99_ms` and `ops_per_s`;
each raftswarm line has `vs_etcd`, its figures over etcd's in the same scenario. A system that is not
installed gets a line with `skipped` saying what to install. With `--rounds N` every system is measured N
times in turn and each line gives the medians (see `merge_rounds`). On stderr, progress and a summary against
the targets: raftswarm's leader-local sequential p50 <= 2 ms and p99 <= 10 ms, its in-flight throughput at
least pysyncobj's, and through the API a sequential p50 and p99 no higher than etcd's and an in-flight
throughput no lower. Targets are reported, not asserted; the exit status is non-zero only if
an installed system could not be measured. Everything runs in a temporary directory that is removed
afterwards; every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from raftswarm import eventloop
from raftswarm.errors import RaftswarmError
from raftswarm.localcluster.managers import LocalCluster, free_port

from .api_writes import etcd_put, measure_api, raftswarm_transact
from .etcd_cluster import INSTALL_HINT as ETCD_INSTALL_HINT
from .etcd_cluster import EtcdCluster, EtcdFailed, etcd_binary, etcd_version
from .workload import QUICK_PLAN, WRITE_TIMEOUT, WorkloadPlan, WriteFailed, in_flight_scenario, positive

SYSTEMS = ("raftswarm", "etcd", "pysyncobj")
MEMBERS = 3

API, LEADER_LOCAL = "api", "leader-local"

PYSYNCOBJ_INSTALL_HINT = "pysyncobj is not installed: pip install pysyncobj (or pip install -e '.[bench]')"
PYSYNCOBJ_NOTE = (
    "in-process: pysyncobj has no network client API; its leader's own process calls the replicated method "
    "(bench.pysyncobj_member), so these writes pay no client hop"
)

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
    args = _parser(quick="--quick" in argv).parse_args(argv)
    plan = WorkloadPlan.from_args(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        print(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}, not {args.systems!r}", file=sys.stderr)
        return 2
    say = (lambda _: None) if args.json_only else (lambda text: print(text, file=sys.stderr, flush=True))
    rounds, failed = [], False
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            say(f"round {number} of {args.rounds}")
        records, failed_now = asyncio.run(measure_all(systems, plan, say))
        rounds.append(records)
        failed = failed or failed_now
    records = merge_rounds(rounds)
    for record in with_ratios(records):
        print(json.dumps(record), flush=True)
    say(summary(records, plan))
    return 1 if failed else 0


def _parser(quick: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench raft", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated, measured in this order (default %(default)s)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines; no summary on stderr")
    parser.add_argument(
        "--quick", action="store_true",
        help="tiny counts that check every path in seconds, not figures to quote "
        f"({' '.join(QUICK_PLAN.as_arguments())}; the options below still override them)",
    )
    parser.add_argument(
        "--rounds", type=positive, default=1,
        help="measure every system this many times, in turn (raftswarm, etcd, raftswarm, etcd, ...); each line "
        "gives the median of the rounds, and their values in <figure>_rounds (default %(default)s)",
    )
    WorkloadPlan.add_arguments(parser, QUICK_PLAN if quick else None)
    return parser


ROUND_FIGURES = ("p50_ms", "p99_ms", "ops_per_s")


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One record per system, path and scenario: with one round, as measured; with more, the first round's
    record with the median of each of `ROUND_FIGURES` over the rounds that measured it, and the rounds'
    values as `<figure>_rounds`. On a shared machine one round's figures move by 10-20% from run to run;
    interleaved rounds expose every system to the same drift."""
    if len(rounds) == 1:
        return rounds[0]
    first: dict[tuple, dict] = {}  # a system skipped in every round keeps its `skipped` line
    measured: dict[tuple, list[dict]] = {}
    for records in rounds:
        for record in records:
            key = (record["system"], record.get("path"), record.get("scenario"))
            first.setdefault(key, record)
            if "skipped" not in record:
                measured.setdefault(key, []).append(record)
    return [_medians(measured[key]) if key in measured else record for key, record in first.items()]


def _medians(records: list[dict]) -> dict:
    merged = {**records[0], "rounds": len(records)}
    for figure in ROUND_FIGURES:
        figures = [r[figure] for r in records if r.get(figure) is not None]
        merged[figure] = statistics.median(figures) if figures else None
        merged[f"{figure}_rounds"] = figures
    return merged


async def measure_all(systems: list[str], plan: WorkloadPlan, say: Callable[[str], None]) -> tuple[list[dict], bool]:
    """Every path of every system in turn: their records (a `skipped` one for a system not installed), and
    whether any installed system failed to be measured."""
    records: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="raftswarm-bench-") as workdir:
        for system in systems:
            missing = MISSING[system]()
            if missing is not None:
                say(f"skipping {system}: {missing}")
                records.append({"system": system, "skipped": missing})
                continue
            for path, measure in PATHS[system]:
                say(f"measuring {system} ({path}): {MEMBERS} members on 127.0.0.1 ...")
                directory = Path(workdir) / f"{system}-{path}"
                directory.mkdir()
                load = os.getloadavg()[0]  # other work on the machine skews every figure: the line says how much
                try:
                    measured = await measure(plan, directory)
                except BenchFailed as exc:
                    print(f"{system} ({path}) could not be measured: {exc}", file=sys.stderr)
                    failed = True
                    continue
                records.extend(
                    {
                        "system": system, "path": path, **record,
                        "members": MEMBERS, "cpus": os.cpu_count(), "load_1m_before": round(load, 2),
                    }
                    for record in measured
                )
    return records, failed


# -- through the client API ------------------------------------------------------------------------------


def _api_timeout(plan: WorkloadPlan) -> float:
    """Startup, then warm-up and both scenarios, each bounded by max_seconds plus one write's timeout."""
    return STARTUP_SECONDS + 3 * (plan.max_seconds + WRITE_TIMEOUT)


async def raftswarm_api(plan: WorkloadPlan, directory: Path) -> list[dict]:
    """3 `raftswarm-node` managers (`LocalCluster`), written to through the leader's node API socket."""
    cluster = LocalCluster(directory)
    cluster.provision(MEMBERS)
    timeout = _api_timeout(plan)
    try:
        async with asyncio.timeout(timeout):
            cluster.start_all()
            for manager in cluster.managers:
                await cluster.wait_ready(manager)
            leader = await cluster.leader()
            pids = [m.process.pid for m in cluster.managers]
            return await measure_api("raftswarm", raftswarm_transact(leader.socket), plan, pids)
    except (WriteFailed, RaftswarmError, TimeoutError) as exc:
        logs = "\n".join(f"--- {m.name} ---\n{cluster.log_tail(m, LOG_TAIL_LINES)}" for m in cluster.managers)
        raise BenchFailed(f"{_reason(exc, timeout)}\n{logs}") from None
    finally:
        cluster.close()


async def etcd_api(plan: WorkloadPlan, directory: Path) -> list[dict]:
    """3 etcd members (`EtcdCluster`), written to through the leader's v3 JSON gateway."""
    binary = etcd_binary()
    version = etcd_version(binary)
    cluster = EtcdCluster(binary, directory, MEMBERS)
    timeout = _api_timeout(plan)
    try:
        async with asyncio.timeout(timeout), cluster:
            records = await measure_api("etcd", etcd_put(cluster.leader_url), plan, cluster.pids)
    except (WriteFailed, EtcdFailed, TimeoutError) as exc:
        raise BenchFailed(f"{_reason(exc, timeout)}\n{cluster.log_tails()}") from None
    return [{**record, "version": version} for record in records]


def _reason(exc: Exception, timeout: float) -> str:
    return f"no results within {timeout:.0f} s" if isinstance(exc, TimeoutError) else str(exc)


# -- in the leader's own process ---------------------------------------------------------------------------


async def raftswarm_leader_local(plan: WorkloadPlan, directory: Path) -> list[dict]:
    return await leader_local(raftswarm_members(directory, plan), plan, directory)


async def pysyncobj_in_process(plan: WorkloadPlan, directory: Path) -> list[dict]:
    records = await leader_local(pysyncobj_members(directory, plan), plan, directory)
    return [{**record, "note": PYSYNCOBJ_NOTE} for record in records]


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


async def leader_local(member_args: list[list[str]], plan: WorkloadPlan, directory: Path) -> list[dict]:
    """Start the members, return what their leader measured in its own process, and end every member."""
    logs = [directory / f"member{i + 1}.log" for i in range(len(member_args))]
    # Warm-up and both scenarios, each bounded by max_seconds plus one write's timeout.
    timeout = STARTUP_SECONDS + 3 * (plan.max_seconds + WRITE_TIMEOUT)
    try:
        with contextlib.ExitStack() as files:
            stderrs = [files.enter_context(open(log, "wb")) for log in logs]
            return await run_members(member_args, stderrs, directory, timeout)
    except BenchFailed as exc:
        raise BenchFailed(f"{exc}\n{_log_tails(logs)}") from None  # the same failure, with the members' logs


Measure = Callable[[WorkloadPlan, Path], Awaitable[list[dict]]]

PATHS: dict[str, list[tuple[str, Measure]]] = {
    "raftswarm": [(API, raftswarm_api), (LEADER_LOCAL, raftswarm_leader_local)],
    "etcd": [(API, etcd_api)],
    "pysyncobj": [(API, pysyncobj_in_process)],
}

MISSING: dict[str, Callable[[], str | None]] = {
    "raftswarm": lambda: None,
    "etcd": lambda: None if etcd_binary() else ETCD_INSTALL_HINT,
    "pysyncobj": lambda: None if importlib.util.find_spec("pysyncobj") else PYSYNCOBJ_INSTALL_HINT,
}
"""What to install for a system that is not there, None for one that is."""


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


# -- ratios and the summary -------------------------------------------------------------------------------


def with_ratios(records: list[dict]) -> list[dict]:
    """The records, each raftswarm one with the event loop its members ran on (`raftswarm.eventloop`) and
    `vs_etcd`: its p50 and p99 over etcd's (2.0: twice etcd's
    latency) and its ops_per_s over etcd's (0.5: half etcd's throughput), against etcd's API line of the same
    scenario; None if etcd was not measured."""
    etcd = {r["scenario"]: r for r in records if r["system"] == "etcd" and "skipped" not in r}
    return [
        {**r, "vs_etcd": _ratios(r, etcd.get(r["scenario"])), "event_loop": eventloop.name()}
        if r["system"] == "raftswarm"
        else r
        for r in records
    ]


def _ratios(ours: dict, theirs: dict | None) -> dict | None:
    if theirs is None:
        return None
    return {name: _ratio(ours[name], theirs[name]) for name in ("p50_ms", "p99_ms", "ops_per_s")}


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return round(ours / theirs, 2) if ours is not None and theirs else None


def summary(records: list[dict], plan: WorkloadPlan) -> str:
    """The measurements as a table, then each target with its measured value and whether it was met."""
    requested = {"sequential": plan.writes, in_flight_scenario(plan.in_flight): plan.pipelined_writes}
    rows = []
    for r in with_ratios(records):
        if "skipped" in r:
            rows.append(f"  {r['system']:10} skipped: {r['skipped']}")
            continue
        ratios = r.get("vs_etcd")
        versus = (
            f"  vs etcd: p50 {_fmt_ratio(ratios['p50_ms'])} p99 {_fmt_ratio(ratios['p99_ms'])} "
            f"ops/s {_fmt_ratio(ratios['ops_per_s'])}"
            if ratios else ""
        )
        stopped = f"  (stopped after {plan.max_seconds:g} s)" if r["writes"] < requested.get(r["scenario"], 0) else ""
        rows.append(
            f"  {r['system']:10} {r['path']:12} {r['scenario']:13} {r['writes']:6d} writes  "
            f"p50 {_fmt_ms(r['p50_ms'])}  p99 {_fmt_ms(r['p99_ms'])}  {r['ops_per_s']:9,.0f} ops/s{versus}{stopped}"
        )
    found = {(r["system"], r.get("path"), r.get("scenario")): r for r in records}
    targets = []
    sequential = found.get(("raftswarm", LEADER_LOCAL, "sequential"))
    if sequential is not None:
        for name, limit in (("p50_ms", TARGET_P50_MS), ("p99_ms", TARGET_P99_MS)):
            value = sequential[name]
            verdict = "met" if value is not None and value <= limit else f"MISSED ({value / limit:.1f}x the target)"
            targets.append(
                f"  raftswarm leader-local sequential {name[:3]} <= {limit:g} ms: {_fmt_ms(value).strip()}  {verdict}"
            )
    scenario = in_flight_scenario(plan.in_flight)
    ours, theirs = found.get(("raftswarm", LEADER_LOCAL, scenario)), found.get(("pysyncobj", API, scenario))
    if ours is not None and theirs is not None:
        ratio = ours["ops_per_s"] / theirs["ops_per_s"] if theirs["ops_per_s"] else float("inf")
        verdict = "met" if ratio >= 1 else "MISSED"
        targets.append(
            f"  raftswarm leader-local {scenario} >= pysyncobj {scenario}: {ours['ops_per_s']:,.0f} vs "
            f"{theirs['ops_per_s']:,.0f} ops/s ({ratio:.2f}x)  {verdict}"
        )
    for scenario_name, figure, better in (
        ("sequential", "p50_ms", "lower"), ("sequential", "p99_ms", "lower"), (scenario, "ops_per_s", "higher")
    ):
        ours, theirs = found.get(("raftswarm", API, scenario_name)), found.get(("etcd", API, scenario_name))
        if ours is None or theirs is None or ours.get(figure) is None or not theirs.get(figure):
            continue
        ratio = ours[figure] / theirs[figure]
        met = ratio <= 1 if better == "lower" else ratio >= 1
        unit = " ms" if figure.endswith("_ms") else " ops/s"
        targets.append(
            f"  raftswarm api {scenario_name} {figure.removesuffix('_ms')} {'<=' if better == 'lower' else '>='} "
            f"etcd's: {ours[figure]:,.2f} vs {theirs[figure]:,.2f}{unit} ({ratio:.2f}x)  {'met' if met else 'MISSED'}"
        )
    return "\n".join([f"raft benchmark, {MEMBERS} members each on 127.0.0.1:", *rows, "targets:", *targets])


def _fmt_ms(value: float | None) -> str:
    return "     n/a" if value is None else f"{value:7.2f} ms"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"
