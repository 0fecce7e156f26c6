"""The fault schedules of `python -m chaos run`, one function per scenario, all against a 3+2 swarm.

A scenario injects its fault, holds it for a while, undoes it, and repeats until the run's fault phase ends
(`run.hold` returns early then, so the undo always happens). What a scenario expects of the swarm beyond the
common checks (a corrupted node refusing to start, a torn tail being cut off) it records with `run.expect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .faults import find_leader

if TYPE_CHECKING:
    from raftswarm.localcluster.swarm import ClusterNode

    from .runner import Run

REFUSAL_WAIT = 20.0
"""How long a node started on a corrupted WAL has to exit (it reads the whole WAL first)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    inject: Callable[[Run], Awaitable[None]]


async def _cycle(
    run: Run,
    name: str,
    pick: Callable[[Run], Awaitable[ClusterNode]],
    inject: Callable[[ClusterNode], object],
    undo: Callable[[ClusterNode], object],
    held: tuple[float, float] = (3, 5),
) -> None:
    """Every few seconds: pick a node, inject the fault into it, hold it for `held` seconds, undo it."""
    while await run.hold(run.rng.uniform(2, 4)):
        node = await pick(run)
        async with run.fault(name, [node]):
            inject(node)
            await run.hold(run.rng.uniform(*held))
            if asyncio.iscoroutine(done := undo(node)):
                await done


async def _leader(run: Run) -> ClusterNode:
    return await find_leader(run.cluster)


async def _follower(run: Run) -> ClusterNode:
    return await run.follower()


async def _worker(run: Run) -> ClusterNode:
    return run.rng.choice(run.cluster.workers)


async def leader_kill(run: Run) -> None:
    await _cycle(run, "kill -9 leader", _leader, run.nemesis.kill, run.nemesis.start)


async def follower_kill(run: Run) -> None:
    await _cycle(run, "kill -9 follower", _follower, run.nemesis.kill, run.nemesis.start)


async def worker_kill(run: Run) -> None:
    await _cycle(run, "kill -9 worker", _worker, run.nemesis.kill, run.nemesis.start, held=(4, 6))


async def leader_pause(run: Run) -> None:
    """SIGSTOP the leader for longer than an election takes; it wakes up believing it still leads."""
    await _cycle(run, "SIGSTOP leader", _leader, run.nemesis.pause, run.nemesis.resume)


async def partition_leader(run: Run) -> None:
    await _cycle(run, "leader isolated", _leader, run.nemesis.isolate, _heal(run), held=(3, 6))


async def partition_follower(run: Run) -> None:
    await _cycle(run, "follower isolated", _follower, run.nemesis.isolate, _heal(run), held=(3, 6))


def _heal(run: Run) -> Callable[[ClusterNode], None]:
    return lambda _: run.nemesis.heal_network()


async def partition_split(run: Run) -> None:
    """A random minority of managers (with some workers) against the rest: it may or may not hold the leader."""
    while await run.hold(run.rng.uniform(2, 4)):
        managers = list(run.cluster.managers)
        run.rng.shuffle(managers)
        minority = managers[: (len(managers) - 1) // 2] or managers[:1]
        workers = [w for w in run.cluster.workers if run.rng.random() < 0.5]
        side = minority + workers
        rest = [n for n in run.cluster.nodes if n not in side]
        async with run.fault("minority | majority", side):
            run.nemesis.partition(side, rest)
            await run.hold(run.rng.uniform(3, 6))
            run.nemesis.heal_network()


async def partition_one_way(run: Run) -> None:
    """The leader's packets reach everyone; nothing reaches the leader (its peers' answers are lost)."""

    def deafen(leader: ClusterNode) -> None:
        run.nemesis.one_way(leader, [n for n in run.cluster.nodes if n is not leader])

    await _cycle(run, "leader deaf (one-way)", _leader, deafen, _heal(run), held=(3, 6))


async def partition_flapping(run: Run) -> None:
    """One node's links go down and up every half second or so."""
    while await run.hold(run.rng.uniform(1, 3)):
        node = run.rng.choice(run.cluster.managers)
        async with run.fault("flapping links", [node]):
            for _ in range(run.rng.randint(4, 10)):
                run.nemesis.isolate(node)
                if not await run.hold(run.rng.uniform(0.3, 0.8)):
                    break
                run.nemesis.heal_network()
                if not await run.hold(run.rng.uniform(0.3, 0.8)):
                    break
            run.nemesis.heal_network()


async def restart_all(run: Run) -> None:
    """Every manager killed at once and started again: the swarm must come back with nothing acknowledged lost."""
    while await run.hold(run.rng.uniform(3, 5)):
        managers = list(run.cluster.managers)
        async with run.fault("kill -9 all managers", managers):
            for manager in managers:
                run.nemesis.kill(manager)
            await run.hold(run.rng.uniform(1, 2))
            await asyncio.gather(*(run.nemesis.start(m) for m in managers))


async def slow_disk(run: Run) -> None:
    while await run.hold(run.rng.uniform(2, 3)):
        node = await find_leader(run.cluster) if run.rng.random() < 0.5 else await run.follower()
        delay = run.rng.choice([0.05, 0.2, 0.5])
        async with run.fault(f"fsync +{delay * 1000:g} ms", [node]):
            run.nemesis.slow_disk(node, delay)
            await run.hold(run.rng.uniform(4, 6))
            run.nemesis.fast_disk(node)


async def torn_tail(run: Run) -> None:
    """A node killed, its WAL given a half-written last record, started: it must cut the record off and serve."""
    while await run.hold(run.rng.uniform(2, 4)):
        node = await find_leader(run.cluster) if run.rng.random() < 0.5 else await run.follower()
        async with run.fault("torn WAL tail", [node]) as fault:
            run.nemesis.kill(node)
            fault["detail"] = run.nemesis.tear_wal_tail(node)
            try:
                await run.nemesis.start(node)
                started = True
            except Exception as exc:  # noqa: BLE001 -- recorded as a failed expectation
                started = False
                fault["detail"] += f"; did not start: {exc}"
            repaired = "cut off a torn write" in run.cluster.log_tail(node, 400)
            run.expect("a torn WAL tail is cut off and the node serves again", started and repaired, f"{node.name}: {fault['detail']}")


async def wal_corruption(run: Run) -> None:
    """A bit flipped in acknowledged WAL data of a stopped follower: it must refuse to start (never serve what is
    left), and is then replaced by a fresh manager."""
    while await run.hold(run.rng.uniform(2, 4)):
        node = await run.follower()
        async with run.fault("flipped WAL bit", [node]) as fault:
            run.nemesis.kill(node)
            fault["detail"] = run.nemesis.flip_wal_byte(node)
            run.cluster.start(node)
            refused = await run.exits_within(node, REFUSAL_WAIT)
            said = run.cluster.log_tail(node, 5)
            run.expect(
                "a node whose WAL is corrupted refuses to start",
                refused and "corrupt" in said.lower(),
                f"{node.name}: {fault['detail']}; {'exited' if refused else 'still running'}: {said.strip()[-300:]}",
            )
            if not refused:
                run.nemesis.kill(node)
            await run.nemesis.replace_manager(node, await find_leader(run.cluster))


async def manager_readd(run: Run) -> None:
    while await run.hold(run.rng.uniform(2, 4)):
        node = await run.follower()
        async with run.fault("manager removed, re-added", [node]):
            await run.nemesis.replace_manager(node, await find_leader(run.cluster))


async def cert_expiry(run: Run) -> None:
    """Node certificates made to last one minute (the minimum) and the root CA rotated under load: every node
    renews at once, then again every 30-48 s."""
    async with run.fault("root rotation, 60 s certificates", run.cluster.nodes):
        await run.swarm_update({"CAConfig": {"NodeCertExpiry": 60 * 10**9}}, rotate_root=True)
        await run.hold(run.duration)
    run.expect_later("every node renewed its certificate", run.all_renewed)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("leader-kill", "kill -9 the leader, start it again", leader_kill),
        Scenario("follower-kill", "kill -9 a follower, start it again", follower_kill),
        Scenario("worker-kill", "kill -9 a worker, start it again", worker_kill),
        Scenario("leader-pause", "SIGSTOP the leader past an election, SIGCONT", leader_pause),
        Scenario("partition-leader", "isolate the leader from every node", partition_leader),
        Scenario("partition-follower", "isolate a follower from every node", partition_follower),
        Scenario("partition-split", "a minority of managers and some workers against the rest", partition_split),
        Scenario("partition-one-way", "nothing reaches the leader; its own packets go out", partition_one_way),
        Scenario("partition-flapping", "a manager's links go down and up every half second", partition_flapping),
        Scenario("restart-all", "kill -9 every manager at once, start them again", restart_all),
        Scenario("slow-disk", "fsync delayed 50-500 ms on the leader or a follower", slow_disk),
        Scenario("torn-tail", "a killed node's WAL ends in a half-written record", torn_tail),
        Scenario("wal-corruption", "a bit flipped in a stopped follower's WAL; replaced", wal_corruption),
        Scenario("manager-readd", "a follower demoted, removed, wiped and joined again", manager_readd),
        Scenario("cert-expiry", "60 s node certificates and a root CA rotation under load", cert_expiry),
    )
}

CI_SUBSET = ("leader-kill", "partition-leader", "restart-all", "torn-tail")
