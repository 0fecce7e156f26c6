"""A scenario: the per-seed mix of network conditions, faults, client load and Raft limits.

Drawing the mix from the seed (rather than fixing one mix for all seeds) spreads the seeds over calm and
hostile clusters: some lose and duplicate messages, some crash leaders every few election timeouts, some
replicate one entry per message so that a commit point is crossed entry by entry (where the "commit only in
the current term" rule matters), some send snapshots in 64-byte chunks.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from chaos.driver import DRIVER
from raftswarm.raft.core import RaftConfig

TICK_MS = 10
"""Virtual milliseconds between two ticks of a node at normal speed."""

ELECTION_TICKS = 10
HEARTBEAT_TICKS = 1

FAULTS = {
    # name: base weight; the scenario scales each weight by a random factor.
    "crash_node": 3,
    "crash_leader": 4,
    "torn_crash": 2,
    "isolate_node": 2,
    "isolate_leader": 4,
    "split_network": 2,
    "one_way_links": 2,
    "flapping_link": 1,
    "slow_node": 2,
    "transfer_leadership": 2,
    "campaign": 1,
    "compact": 3,
    "add_learner": 5,
    "promote_learner": 5,
    "remove_member": 4,
}

DRIVER_FAULTS = {
    # Faults aimed at writes in progress, drawn only in persistence mode `driver` (see with_driver_knobs).
    "slow_disk": 1,
    "crash_many": 2,
}

CRASH_UNWRITTEN = (0.0, 0.005, 0.02, 0.05)
"""A leader sends ahead of its write many times a second: a small chance per batch already crashes often."""

DISK_WRITE_MS = ((0, 1), (1, 4), (2, 12), (5, 30))
"""Ranges of one write's latency (write + fsync): a fast SSD, a slower one, a cloud volume, a busy disk.
The busiest overlaps the network's delays, so a peer often hears a leader before the leader's write returns."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One seed's setting; `draw` picks every knob from the seed's random stream."""

    loss: float
    duplication: float
    min_delay_ms: int
    max_delay_ms: int
    fault_gap_ms: tuple[int, int]
    client_gap_ms: tuple[int, int]
    read_share: float
    leader_share: float
    """How often a client goes to the leader rather than a random node (writes to an isolated leader diverge)."""
    big_write_share: float
    compact_every: int
    """Entries applied between automatic compactions on a node."""
    majority_loss: bool
    """Whether the nemesis may take down a majority of the voters at once."""
    isolate_elected: float
    """Chance that a new leader is cut off the moment it is elected, before its first APPEND lands."""
    isolate_committing: float
    """Chance that a leader is cut off the moment it commits entries of earlier terms (Figure 8)."""
    faults: tuple[tuple[str, float], ...]
    snapshot_chunk_size: int
    max_size_per_msg: int
    max_inflight_msgs: int
    max_inflight_bytes: int
    pre_vote: bool
    check_quorum: bool
    disk_write_ms: tuple[int, int] = (0, 0)
    """How long one write takes at normal speed (persistence mode `driver`; `sync` writes take no time)."""
    crash_unwritten: float = 0.0
    """Chance that a node which has just sent a batch's messages ahead of its write crashes before the write
    returns (persistence mode `driver`)."""

    @classmethod
    def draw(cls, rng: random.Random, persistence: str = DRIVER) -> Scenario:
        min_delay = rng.randint(1, 3)
        fault_gap = rng.choice((10, 30, 60))
        return cls(
            loss=rng.choice((0.0, 0.0, 0.01, 0.05, 0.15)),
            duplication=rng.choice((0.0, 0.01, 0.05)),
            min_delay_ms=min_delay,
            max_delay_ms=min_delay + rng.choice((2, 5, 15, 40)),
            fault_gap_ms=(fault_gap, fault_gap * 4),
            client_gap_ms=(1, rng.choice((5, 15, 40))),
            read_share=rng.choice((0.1, 0.3, 0.5)),
            leader_share=rng.choice((0.3, 0.7, 0.9)),
            big_write_share=rng.choice((0.0, 0.02, 0.1)),
            compact_every=rng.choice((5, 20, 60, 1 << 30)),
            majority_loss=rng.random() < 0.25,
            isolate_elected=rng.choice((0.0, 0.3, 0.6, 0.9)),
            isolate_committing=rng.choice((0.0, 0.5, 1.0, 1.0)),
            faults=tuple((name, weight * rng.choice((0.25, 0.5, 1, 2))) for name, weight in FAULTS.items()),
            snapshot_chunk_size=rng.choice((64, 256, 1024, 4096)),
            max_size_per_msg=rng.choice((1, 1, 256, 4096, 1 << 20)),
            max_inflight_msgs=rng.choice((1, 2, 8, 256)),
            max_inflight_bytes=rng.choice((512, 8192, 32 << 20)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
        ).with_driver_knobs(rng, persistence)

    def with_driver_knobs(self, rng: random.Random, persistence: str) -> Scenario:
        """Draw the knobs of persistence mode `driver` last, so that a seed in mode `sync` draws exactly what
        it drew before that mode existed (a replay command from then replays with `--persistence sync`)."""
        if persistence != DRIVER:
            return self
        disk_write_ms = rng.choice(DISK_WRITE_MS)
        crash_unwritten = rng.choice(CRASH_UNWRITTEN)
        faults = tuple((name, weight * rng.choice((0.5, 1, 2))) for name, weight in DRIVER_FAULTS.items())
        return dataclasses.replace(
            self, disk_write_ms=disk_write_ms, crash_unwritten=crash_unwritten, faults=self.faults + faults
        )

    def raft_config(self, node_id: int) -> RaftConfig:
        return RaftConfig(
            id=node_id,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            max_inflight_bytes=self.max_inflight_bytes,
            snapshot_chunk_size=self.snapshot_chunk_size,
        )
