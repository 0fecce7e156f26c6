"""A deterministic in-process network for the gossip cores, for tests and chaos runs.

Each node is a `Membership` plus a `NetworkTables` wired together the way a daemon wires them
(member events feed the tables). Every packet really goes through `Keyring.seal`/`open`, travels with a
fixed latency on a simulated clock, and can be dropped: to or from one node, across a partition, or for
a killed node, which neither ticks nor receives. A seed makes every run repeat exactly.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from .membership import MemberEvent, Membership, MembershipConfig
from .table import NetworkTables, TableConfig, TableEvent
from .wire import Keyring, MessageType

TABLE_TYPES = frozenset(
    {MessageType.TABLE_EVENT, MessageType.NETWORK_EVENT, MessageType.NETWORK_SYNC, MessageType.ATTACHMENTS}
)


@dataclass
class SimNode:
    membership: Membership
    tables: NetworkTables
    keyring: Keyring
    member_events: list[tuple[float, MemberEvent]] = field(default_factory=list)
    table_events: list[tuple[float, TableEvent]] = field(default_factory=list)
    killed: bool = False


class Simulation:
    def __init__(
        self,
        seed: int = 0,
        config: MembershipConfig | None = None,
        table_config: TableConfig | None = None,
        key: bytes = b"k" * 32,
        latency: float = 0.01,
        tick_every: float = 0.05,
    ):
        self.rng = random.Random(seed)
        self.config = config or MembershipConfig()
        self.table_config = table_config or TableConfig()
        self.key = key
        self.latency = latency
        self.tick_every = tick_every
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}  # address -> node
        self.silenced: set[str] = set()  # addresses whose packets (either way) are dropped
        self.partitions: list[set[str]] | None = None
        self.delivered = 0
        self._queue: list[tuple[float, int, str, str, bytes]] = []
        self._seq = 0

    # -- building and breaking ---------------------------------------------------------------------------

    def add(self, name: str, seeds: list[str] = (), meta: bytes = b"") -> str:
        addr = f"{name}:7946"
        node = SimNode(
            Membership(name, addr, self.config, meta),
            NetworkTables(name, self.table_config),
            Keyring([self.key]),
        )
        self.nodes[addr] = node
        self._apply(addr, node.membership.join(list(seeds), self.now))
        return addr

    def kill(self, addr: str) -> None:
        self.nodes[addr].killed = True

    def partition(self, *groups: set[str]) -> None:
        self.partitions = [set(g) for g in groups]

    def heal(self) -> None:
        self.partitions = None
        self.silenced.clear()

    def node(self, addr: str) -> SimNode:
        return self.nodes[addr]

    def live(self) -> list[str]:
        return [a for a, n in self.nodes.items() if not n.killed]

    # -- driving -----------------------------------------------------------------------------------------

    def step_tables(self, addr: str, step) -> None:
        self._apply(addr, step)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + self.tick_every, 6)
            self._deliver_until(self.now)
            for addr in sorted(self.live()):
                node = self.nodes[addr]
                self._apply(addr, node.membership.tick(self.now, self.rng))
                self._apply(addr, node.tables.tick(self.now, self.rng))

    def run_until(self, condition, timeout: float) -> float:
        """Run until `condition()` holds; returns the simulated time it took (fails the caller's assert
        by returning None if it never did)."""
        start = self.now
        while self.now - start < timeout:
            if condition():
                return self.now - start
            self.run(self.tick_every)
        return self.now - start if condition() else None

    def _deliver_until(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t:
            _, _, src, dst, data = heapq.heappop(self._queue)
            node = self.nodes.get(dst)
            if node is None or node.killed or self._blocked(src, dst):
                continue
            message = node.keyring.open(data)
            self.delivered += 1
            if message.type in TABLE_TYPES:
                self._apply(dst, node.tables.receive(src, message, self.now))
            else:
                self._apply(dst, node.membership.receive(src, message, self.now, self.rng))

    def _blocked(self, src: str, dst: str) -> bool:
        if src in self.silenced or dst in self.silenced:
            return True
        if self.partitions is not None:
            return not any(src in g and dst in g for g in self.partitions)
        return False

    def _apply(self, addr: str, step) -> None:
        node = self.nodes[addr]
        for dst, message in step.packets:
            if node.killed:
                break
            self._seq += 1
            heapq.heappush(self._queue, (self.now + self.latency, self._seq, addr, dst, node.keyring.seal(message)))
        for event in step.events:
            if isinstance(event, MemberEvent):
                node.member_events.append((self.now, event))
                self._apply(addr, node.tables.on_member_event(event, self.now))
            else:
                node.table_events.append((self.now, event))
