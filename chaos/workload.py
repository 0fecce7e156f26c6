"""The simulated clients: unique writes and linearizable reads sent to random nodes, often to the leader."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from chaos.scenario import Scenario

if TYPE_CHECKING:
    from chaos.sim import SimNode, Simulator

MAX_UNCOMMITTED = 64
"""A client holds its write while the node it would go to has this many uncommitted entries (a driver bounds
proposals in flight the same way); isolated leaders still collect divergent entries up to this bound."""

BIG_WRITE_BYTES = (200, 3000)
"""Payload sizes of big writes: several of them exceed the snapshot chunk size and max_size_per_msg."""


class ClientWorkload:
    """One client operation per call: a write (proposal) or a ReadIndex read."""

    def __init__(self, sim: Simulator, scenario: Scenario, rng: random.Random) -> None:
        self._sim = sim
        self._scenario = scenario
        self._rng = rng
        self._writes = 0

    def act(self) -> None:
        node = self._pick_node()
        if node is None:
            self._sim.record("client", "no node is up")
        elif self._rng.random() < self._scenario.read_share:
            self._sim.read(node)
        elif node.core.last_index - node.core.commit_index >= MAX_UNCOMMITTED:
            self._sim.record("client", f"node {node.id} has {MAX_UNCOMMITTED} uncommitted entries: write held")
        else:
            self._sim.propose(node, self._next_write())

    def _pick_node(self) -> SimNode | None:
        leader = self._sim.leader()
        if leader is not None and self._rng.random() < self._scenario.leader_share:
            return leader
        live = self._sim.live_nodes()
        return self._rng.choice(live) if live else None

    def _next_write(self) -> bytes:
        self._writes += 1
        write = b"write-%d" % self._writes
        if self._rng.random() < self._scenario.big_write_share:
            write += b":" + b"x" * self._rng.randint(*BIG_WRITE_BYTES)
        return write
