"""The simulated network: per-message delay with jitter (so reordering), loss, duplication and partitions.

A partition is a set of blocked directed links, so one type covers symmetric splits, one-way links and
isolated nodes; a flapping partition is one that the nemesis cuts and mends repeatedly. A message is dropped
if its link is blocked when it is sent or when it would arrive.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class Partition:
    """Directed links (from, to) that carry nothing while the partition is active."""

    links: frozenset[tuple[int, int]]
    active: bool = False


class SimNetwork:
    """Decides, per message, whether and when it arrives."""

    def __init__(self, rng: random.Random, loss: float, duplication: float, min_delay: int, max_delay: int) -> None:
        self._rng = rng
        self.loss = loss
        self.duplication = duplication
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._blocked: dict[tuple[int, int], int] = {}
        self._active: list[Partition] = []

    def deliveries(self, frm: int, to: int, extra_delay: int) -> tuple[int, ...]:
        """Delays (ms) after which copies of a message from `frm` to `to` arrive: none, one, or two."""
        if self._blocked and (frm, to) in self._blocked:
            return ()
        rng = self._rng
        if self.loss and rng.random() < self.loss:
            return ()
        delay = rng.randint(self.min_delay, self.max_delay) + extra_delay
        if self.duplication and rng.random() < self.duplication:
            return delay, rng.randint(self.min_delay, self.max_delay) + extra_delay
        return (delay,)

    def is_blocked(self, frm: int, to: int) -> bool:
        return bool(self._blocked) and (frm, to) in self._blocked

    def cut(self, partition: Partition) -> None:
        if partition.active:
            return
        partition.active = True
        self._active.append(partition)
        for link in partition.links:
            self._blocked[link] = self._blocked.get(link, 0) + 1

    def mend(self, partition: Partition) -> None:
        if not partition.active:
            return
        partition.active = False
        self._active.remove(partition)
        for link in partition.links:
            left = self._blocked[link] - 1
            if left:
                self._blocked[link] = left
            else:
                del self._blocked[link]

    def heal(self) -> None:
        """End every partition and make the network perfect apart from delay."""
        for partition in list(self._active):
            self.mend(partition)
        self.loss = 0.0
        self.duplication = 0.0
