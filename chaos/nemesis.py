"""The nemesis: one fault per call, chosen by the scenario's weights, plus faults timed to a leader's moves.

Faults: crashes (of any node, of the leader, or torn in the middle of handling a Ready); partitions (an
isolated node or leader, a split, one-way links, a flapping link); slow nodes; forced leadership changes
(transfer, campaign); compaction at random points; membership churn (add a learner, promote it, remove a
member). Timed faults cut a leader off at the two moments where losing it hurts most (ELECTED, COMMITTED),
which is what makes leader churn with divergent logs -- and so Figure 8 -- common.

With the driver's pipeline (persistence mode `driver`), writes take time, and three more faults aim at the
writes in progress: slow disks, correlated crashes of several nodes at once, and a crash timed to the moment
a node has sent a batch's messages ahead of its write (which the crash then loses).

The nemesis keeps the cluster repairable: it takes down at most a minority of the voters (a majority in
scenarios that allow it, until the downed nodes restart), never removes below MIN_VOTERS voters, and never
grows the cluster by more than MAX_EXTRA_NODES.
"""

from __future__ import annotations

import random
from itertools import accumulate
from typing import TYPE_CHECKING

from chaos.network import Partition
from chaos.scenario import ELECTION_TICKS, TICK_MS, Scenario
from raftswarm.raft.messages import ConfChange, ConfChangeType

if TYPE_CHECKING:
    from chaos.sim import SimNode, Simulator

MIN_VOTERS = 3
MAX_EXTRA_NODES = 2
PARTITION_MS = (50, 600)
DANGER_PARTITION_MS = (2 * ELECTION_TICKS * TICK_MS, 6 * ELECTION_TICKS * TICK_MS)
"""A leader cut off at a dangerous moment stays away long enough for the others to elect without it."""
FLAP_MS = (10, 60)
SLOW_MS = (100, 1000)
SLOW_TICK_FACTORS = (2, 3, 5)
SLOW_EXTRA_DELAY_MS = (0, 5, 20, 50)
SLOW_DISK_WRITE_MS = (30, 300)
"""A write on a slow disk (a saturated or failing volume) takes longer than several network round trips: a
node that sends before its write returns has a long window in which to crash with the write lost."""

ELECTED, COMMITTED = "as it is elected", "as it commits entries of earlier terms"
"""The most dangerous moments to lose a leader: before its first APPEND of the term lands (its log diverges
from everyone's), and when it alone knows that entries of earlier terms are committed (Figure 8)."""

BEFORE_PERSIST, BEFORE_SEND, BEFORE_APPLY = "before persist", "before send", "before apply"
CRASH_STAGES = (BEFORE_PERSIST, BEFORE_SEND, BEFORE_APPLY)
"""Where a torn crash interrupts the handling of the next Ready (persistence `sync`) or batch (`driver`) that
has something to write. With the driver, BEFORE_PERSIST comes after the messages it may send early, and the
write is lost; BEFORE_SEND and BEFORE_APPLY come after the write returns."""


class Nemesis:
    """Injects faults into a running simulation."""

    def __init__(self, sim: Simulator, scenario: Scenario, rng: random.Random) -> None:
        self._sim = sim
        self._rng = rng
        self._isolate_elected = scenario.isolate_elected
        self._isolate_committing = scenario.isolate_committing
        self._crash_unwritten = scenario.crash_unwritten
        self._faults = [getattr(self, name) for name, _ in scenario.faults]
        self._cum_weights = list(accumulate(weight for _, weight in scenario.faults))
        self._majority_loss = scenario.majority_loss

    def strike(self) -> None:
        self._rng.choices(self._faults, cum_weights=self._cum_weights)[0]()

    # --- crashes ------------------------------------------------------------------------------------------

    def crash_node(self) -> None:
        node = self._pick_live()
        if node is None or not self._may_take_down():
            return self._skip("crash_node")
        self._sim.crash(node)

    def crash_leader(self) -> None:
        leader = self._sim.leader()
        if leader is None or not self._may_take_down():
            return self._skip("crash_leader")
        self._sim.crash(leader)

    def torn_crash(self) -> None:
        """Crash a node in the middle of handling its next Ready that has something to persist."""
        node = self._pick_live()
        if node is None or not self._may_take_down():
            return self._skip("torn_crash")
        node.crash_stage = self._rng.choice(CRASH_STAGES)
        self._sim.record("fault", f"node {node.id} will crash {node.crash_stage} of its next write")

    def sent_before_written(self, node: SimNode) -> None:
        """`node` (persistence mode `driver`) has just sent a batch's messages and started the write they go
        with: maybe crash it now, so the messages are out and the write is lost."""
        if self._crash_unwritten and self._rng.random() < self._crash_unwritten and self._may_take_down():
            self._sim.crash(node, "after sending, before its write returned")

    def crash_many(self) -> None:
        """A rack loses power: as many nodes as the scenario lets go down crash at the same instant, those with a
        write in progress first -- correlated crashes are what turn writes lost on several nodes into data loss."""
        live = self._sim.live_nodes()
        self._rng.shuffle(live)
        live.sort(key=lambda node: node.pipeline is None or node.pipeline.writing is None)
        crashed = 0
        for node in live:
            if not self._may_take_down():
                break
            self._sim.crash(node, "in a power loss")
            crashed += 1
        if not crashed:
            self._skip("crash_many")

    def _may_take_down(self) -> bool:
        voters = len(self._sim.membership().voters)
        allowed = voters - 1 if self._majority_loss else (voters - 1) // 2
        down = sum(1 for node in self._sim.nodes.values() if not node.removed and (not node.up or node.crash_stage))
        return down < allowed

    # --- partitions ---------------------------------------------------------------------------------------

    def isolate_node(self) -> None:
        node = self._pick_live()
        if node is None:
            return self._skip("isolate_node")
        self._partition(f"isolate node {node.id}", self._links_around({node.id}, both_ways=True))

    def isolate_leader(self) -> None:
        leader = self._sim.leader()
        if leader is None:
            return self._skip("isolate_leader")
        self._partition(f"isolate leader {leader.id}", self._links_around({leader.id}, both_ways=True))

    def split_network(self) -> None:
        ids = self._member_ids()
        self._rng.shuffle(ids)
        side = set(ids[: self._rng.randint(1, len(ids) // 2)])
        self._partition(f"split {sorted(side)} from the rest", self._links_around(side, both_ways=True))

    def one_way_links(self) -> None:
        """A node that can hear but not speak, or speak but not hear."""
        node_id = self._rng.choice(self._member_ids())
        links = self._links_around({node_id}, both_ways=False)
        if self._rng.random() < 0.5:
            self._partition(f"node {node_id} cannot send", links)
        else:
            self._partition(f"node {node_id} cannot receive", frozenset((to, frm) for frm, to in links))

    def flapping_link(self) -> None:
        node_id = self._rng.choice(self._member_ids())
        partition = Partition(self._links_around({node_id}, both_ways=True))
        until = self._sim.now + self._rng.randint(*PARTITION_MS) * 2
        self._sim.record("fault", f"node {node_id}'s links flap until {until}ms")
        self._sim.stats["partitions"] += 1
        self._flap(partition, until)

    def _flap(self, partition: Partition, until: int) -> bool:
        network = self._sim.network
        if not self._sim.chaos_on:
            return False
        if partition.active or self._sim.now >= until:
            network.mend(partition)
        else:
            network.cut(partition)
        self._sim.record("flap", "links cut" if partition.active else "links mended")
        if self._sim.now < until:
            self._sim.schedule(self._rng.randint(*FLAP_MS), self._flap, partition, until)
        return True

    def _partition(
        self, description: str, links: frozenset[tuple[int, int]], duration_ms: tuple[int, int] = PARTITION_MS
    ) -> None:
        duration = self._rng.randint(*duration_ms)
        self._sim.record("fault", f"{description} for {duration}ms")
        self._sim.stats["partitions"] += 1
        partition = Partition(links)
        self._sim.network.cut(partition)
        self._sim.schedule(duration, self._mend, partition)

    def _mend(self, partition: Partition) -> bool:
        if not partition.active:
            return False
        self._sim.network.mend(partition)
        self._sim.record("mend", f"{len(partition.links)} links carry messages again")
        return True

    def _links_around(self, side: set[int], both_ways: bool) -> frozenset[tuple[int, int]]:
        """Links from `side` to every other node (and back, if `both_ways`)."""
        others = [node_id for node_id in self._sim.nodes if node_id not in side]
        links = {(a, b) for a in side for b in others}
        if both_ways:
            links |= {(b, a) for a, b in links}
        return frozenset(links)

    def leader_at_risk(self, leader: SimNode, moment: str) -> None:
        """The leader is at a dangerous moment (ELECTED or COMMITTED): maybe cut it off right now."""
        chance = self._isolate_elected if moment == ELECTED else self._isolate_committing
        if chance and self._rng.random() < chance:
            links = self._links_around({leader.id}, both_ways=True)
            self._partition(f"isolate leader {leader.id} {moment}", links, DANGER_PARTITION_MS)

    # --- slowness and leadership --------------------------------------------------------------------------

    def slow_node(self) -> None:
        node = self._pick_live()
        if node is None:
            return self._skip("slow_node")
        node.slow_episode += 1
        node.tick_ms = TICK_MS * self._rng.choice(SLOW_TICK_FACTORS)
        node.delay_ms = self._rng.choice(SLOW_EXTRA_DELAY_MS)
        duration = self._rng.randint(*SLOW_MS)
        self._sim.record(
            "fault", f"node {node.id} slow for {duration}ms: ticks every {node.tick_ms}ms, +{node.delay_ms}ms delay"
        )
        self._sim.schedule(duration, self._restore_speed, node, node.slow_episode)

    def _restore_speed(self, node: SimNode, episode: int) -> bool:
        if node.slow_episode != episode:
            return False
        node.tick_ms = TICK_MS
        node.delay_ms = 0
        self._sim.record("speed", f"node {node.id} back to normal speed")
        return True

    def slow_disk(self) -> None:
        """Every write of one node takes SLOW_DISK_WRITE_MS for a while (persistence mode `driver` only)."""
        node = self._pick_live()
        if node is None:
            return self._skip("slow_disk")
        node.disk_episode += 1
        node.disk_write_ms = SLOW_DISK_WRITE_MS
        duration = self._rng.randint(*SLOW_MS)
        self._sim.record("fault", f"node {node.id}'s disk slow for {duration}ms: writes take {SLOW_DISK_WRITE_MS}ms")
        self._sim.schedule(duration, self._restore_disk, node, node.disk_episode)

    def _restore_disk(self, node: SimNode, episode: int) -> bool:
        if node.disk_episode != episode:
            return False
        node.disk_write_ms = self._sim.scenario.disk_write_ms
        self._sim.record("speed", f"node {node.id}'s disk back to normal speed")
        return True

    def transfer_leadership(self) -> None:
        leader = self._sim.leader()
        targets = sorted(leader.core.conf_state.voters - {leader.id}) if leader is not None else []
        if not targets:
            return self._skip("transfer_leadership")
        self._sim.transfer_leadership(leader, self._rng.choice(targets))

    def campaign(self) -> None:
        voters = self._sim.membership().voters
        candidates = [node for node in self._sim.live_nodes() if node.id in voters]
        if not candidates:
            return self._skip("campaign")
        self._sim.campaign(self._rng.choice(candidates))

    def compact(self) -> None:
        node = self._pick_live()
        if node is None:
            return self._skip("compact")
        first, last = self._sim.compactable(node)
        if last < first:
            return self._skip("compact")
        self._sim.compact(node, self._rng.randint(first, last))

    # --- membership ---------------------------------------------------------------------------------------

    def add_learner(self) -> None:
        leader = self._sim.leader()
        in_service = sum(1 for node in self._sim.nodes.values() if not node.removed)
        if leader is None or in_service >= self._sim.size + MAX_EXTRA_NODES:
            return self._skip("add_learner")
        change = ConfChange(ConfChangeType.ADD_LEARNER, self._sim.next_node_id)
        if self._sim.change_membership(leader, change):
            self._sim.next_node_id += 1

    def promote_learner(self) -> None:
        leader = self._sim.leader()
        learners = sorted(leader.core.conf_state.learners) if leader is not None else []
        if not learners:
            return self._skip("promote_learner")
        self._sim.change_membership(leader, ConfChange(ConfChangeType.ADD_VOTER, self._rng.choice(learners)))

    def remove_member(self) -> None:
        leader = self._sim.leader()
        if leader is None:
            return self._skip("remove_member")
        conf = leader.core.conf_state
        candidates = sorted(conf.learners)
        if len(conf.voters) > MIN_VOTERS:
            candidates += sorted(conf.voters - {leader.id})
        if not candidates:
            return self._skip("remove_member")
        self._sim.change_membership(leader, ConfChange(ConfChangeType.REMOVE, self._rng.choice(candidates)))

    # --- helpers ------------------------------------------------------------------------------------------

    def _pick_live(self) -> SimNode | None:
        live = self._sim.live_nodes()
        return self._rng.choice(live) if live else None

    def _member_ids(self) -> list[int]:
        return [node_id for node_id, node in self._sim.nodes.items() if not node.removed]

    def _skip(self, fault: str) -> None:
        self._sim.record("fault", f"{fault}: nothing to do")
