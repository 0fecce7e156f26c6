"""An in-memory cluster for driving `RaftCore` in tests: no sockets, no threads, no clock.

`Network` owns one core per node together with what a real driver would keep beside it: the node's disk
(a `PersistedState` updated from every Ready exactly as `messages.Ready` prescribes), its state machine
(the committed entries it applied), and the read states it was handed. Messages travel through one FIFO
queue; a test decides when they are delivered (all, some, or one round trip per tick with
`tick_all_with_latency`), and can lose them by node (`isolate`, `crash`) or by predicate (`drop_if`,
`drop_next`). A crashed node is rebuilt by `restart` from its disk alone.

Every apply is checked against what any node applied at that index before (State Machine Safety, Raft
paper §5.4.3) and for gaps, so any test that moves entries also guards those two properties.
"""

from __future__ import annotations

import copy
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raftswarm.raft.core import RaftConfig, RaftCore
from raftswarm.raft.messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    PersistedState,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

MT = MessageType

# A runaway exchange (two cores answering each other forever) is a core bug; stop it instead of hanging.
MAX_DELIVERIES = 200_000


def new_core(node_id: int, voters: Iterable[int] = (1, 2, 3), seed: int = 0, **config: object) -> RaftCore:
    """A freshly bootstrapped core, for tests that feed it messages by hand."""
    return RaftCore(RaftConfig(node_id, **config), RaftCore.bootstrap(voters), random.Random(seed * 1000 + node_id))


def persist(disk: PersistedState, ready: Ready) -> None:
    """Write a Ready to disk in the order `messages.Ready` prescribes. A snapshot from the leader replaces the
    whole log (the core's in-memory log holds nothing past it either), as etcd's MemoryStorage does."""
    if ready.snapshot is not None:
        disk.snapshot = ready.snapshot
        disk.entries = []
    if ready.entries:
        first = ready.entries[0].index
        disk.entries = [e for e in disk.entries if e.index < first] + list(ready.entries)
    if ready.hard_state is not None:
        disk.hard_state = ready.hard_state


@dataclass
class Node:
    core: RaftCore
    disk: PersistedState
    restored_from: Snapshot | None = None
    """The snapshot the state machine was last restored from (at a restart or an InstallSnapshot)."""
    applied: list[Entry] = field(default_factory=list)
    """Entries applied since the state machine was last restored."""
    read_states: list[ReadState] = field(default_factory=list)
    restarts: int = 0

    @property
    def applied_index(self) -> int:
        if self.applied:
            return self.applied[-1].index
        return self.restored_from.meta.index if self.restored_from else 0

    def applied_data(self) -> list[bytes]:
        """The payloads of applied NORMAL entries, skipping the leaders' empty no-ops."""
        return [e.data for e in self.applied if e.type is EntryType.NORMAL and e.data]


class Network:
    def __init__(
        self,
        voters: Iterable[int] = (1, 2, 3),
        *,
        seed: int = 0,
        disks: dict[int, PersistedState] | None = None,
        **config: object,
    ) -> None:
        """A cluster of `voters` bootstrapped together, or, with `disks`, of nodes started from those disks."""
        self.seed = seed
        self.config = config
        self.nodes: dict[int, Node] = {}
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []
        """Every message any node sent, in order (delivered or not)."""
        self.isolated: set[int] = set()
        self.down: set[int] = set()
        self.filters: list[Callable[[Message], bool]] = []
        self.chosen: dict[int, Entry] = {}
        """The entry each index was applied with, on whichever node applied it first."""
        if disks is None:
            ids = sorted(set(voters))
            disks = {node_id: RaftCore.bootstrap(ids) for node_id in ids}
        for node_id, disk in sorted(disks.items()):
            self._start(node_id, disk)

    # -- nodes -----------------------------------------------------------------------------------------

    def _start(self, node_id: int, disk: PersistedState, restarts: int = 0) -> Node:
        rng = random.Random(self.seed * 1_000_003 + node_id * 101 + restarts)
        core = RaftCore(RaftConfig(node_id, **self.config), disk, rng)
        node = Node(core, disk, restored_from=disk.snapshot, restarts=restarts)
        self.nodes[node_id] = node
        return node

    def add_node(self, node_id: int) -> Node:
        """A new machine that will join through a membership change: it starts with an empty disk and learns
        the cluster from the leader's log (or snapshot)."""
        return self._start(node_id, PersistedState())

    def __getitem__(self, node_id: int) -> RaftCore:
        return self.nodes[node_id].core

    def crash(self, node_id: int) -> None:
        """The node stops: messages to it are lost, and it gets no input until `restart`."""
        self.down.add(node_id)

    def restart(self, node_id: int) -> RaftCore:
        """Rebuild the node's core from its disk alone; the state machine restarts from the disk's snapshot."""
        self.down.discard(node_id)
        old = self.nodes[node_id]
        disk = PersistedState(old.disk.hard_state, old.disk.snapshot, list(old.disk.entries))
        return self._start(node_id, disk, old.restarts + 1).core

    # -- the network -----------------------------------------------------------------------------------

    def isolate(self, *node_ids: int) -> None:
        self.isolated.update(node_ids)

    def drop_if(self, predicate: Callable[[Message], bool]) -> Callable[[Message], bool]:
        """Drop every message matching `predicate` until `heal` (or until removed from `filters`)."""
        self.filters.append(predicate)
        return predicate

    def drop_next(self, predicate: Callable[[Message], bool]) -> None:
        """Drop only the first message matching `predicate` (one lost packet)."""
        lost: list[Message] = []

        def first_match(m: Message) -> bool:
            if not lost and predicate(m):
                lost.append(m)
                return True
            return False

        self.filters.append(first_match)

    def heal(self) -> None:
        self.isolated.clear()
        self.filters.clear()

    def _lost(self, m: Message) -> bool:
        return m.to in self.down or m.frm in self.isolated or m.to in self.isolated or any(f(m) for f in self.filters)

    def take(self, predicate: Callable[[Message], bool] = lambda m: True) -> list[Message]:
        """Remove the queued messages matching `predicate` without delivering them (to inspect or to hold)."""
        taken = [m for m in self.queue if predicate(m)]
        self.queue = deque(m for m in self.queue if not predicate(m))
        return taken

    def deliver(self, predicate: Callable[[Message], bool] | None = None) -> list[Message]:
        """Deliver queued messages, and whatever they cause, until nothing (matching) is in flight. Returns
        the messages delivered. With `predicate`, only matching ones move; the rest stay queued."""
        delivered: list[Message] = []
        held: deque[Message] = deque()
        while self.queue:
            if len(delivered) >= MAX_DELIVERIES:
                raise AssertionError("messages never stopped flowing: the cores answer each other forever")
            m = self.queue.popleft()
            if predicate is not None and not predicate(m):
                held.append(m)
                continue
            if self.step(m):
                delivered.append(m)
        self.queue.extendleft(reversed(held))
        return delivered

    def step(self, m: Message) -> bool:
        """Deliver one message now (unless the network loses it). True if it arrived."""
        if self._lost(m) or m.to not in self.nodes:
            return False
        self.handle(m.to, self[m.to].step(copy.copy(m)))
        return True

    # -- inputs ----------------------------------------------------------------------------------------

    def handle(self, node_id: int, ready: Ready) -> Ready:
        """Do what a driver does with a Ready: persist, send, restore/apply, record read states. (Dropped reads
        are left for the test to read from the returned Ready.)"""
        node = self.nodes[node_id]
        persist(node.disk, ready)
        for m in ready.messages:
            self.sent.append(m)
            self.queue.append(m)
        if ready.snapshot is not None:
            node.restored_from = ready.snapshot
            node.applied = []
        for entry in ready.committed_entries:
            assert entry.index == node.applied_index + 1, (
                f"node {node_id} was given entry {entry.index} to apply after {node.applied_index}"
            )
            first = self.chosen.setdefault(entry.index, entry)
            assert first == entry, f"State Machine Safety: index {entry.index} applied as {first} and as {entry}"
            node.applied.append(entry)
        node.read_states.extend(ready.read_states)
        return ready

    def tick(self, node_id: int, times: int = 1) -> list[Ready]:
        return [self.handle(node_id, self[node_id].tick()) for _ in range(times)]

    def tick_all(self, rounds: int = 1, deliver: bool = True) -> None:
        """Tick every running node once per round, delivering everything in flight after each round."""
        for _ in range(rounds):
            for node_id in sorted(self.nodes):
                if node_id not in self.down:
                    self.tick(node_id)
            if deliver:
                self.deliver()

    def tick_all_with_latency(self, rounds: int, latency: int = 1, until: Callable[[], bool] | None = None) -> int:
        """Like `tick_all`, but over a slow link: a message sent in one round arrives `latency` rounds later
        (a round being one tick of every node). Stops early once `until()` holds; returns the rounds run.
        Messages still on the wire at the end are left queued."""
        wire: deque[list[Message]] = deque([] for _ in range(latency))
        ran = 0
        while ran < rounds and not (until is not None and until()):
            ran += 1
            for m in wire.popleft():
                self.step(m)
            for node_id in sorted(self.nodes):
                if node_id not in self.down:
                    self.tick(node_id)
            wire.append(self.take())
        for batch in wire:
            self.queue.extend(batch)
        return ran

    def campaign(self, node_id: int) -> Ready:
        return self.handle(node_id, self[node_id].campaign())

    def propose(self, node_id: int, data: bytes) -> Ready:
        return self.handle(node_id, self[node_id].propose(data))

    def propose_conf_change(self, node_id: int, kind: ConfChangeType, target: int) -> Ready:
        return self.handle(node_id, self[node_id].propose_conf_change(ConfChange(kind, target)))

    def read_index(self, node_id: int, request_id: bytes) -> Ready:
        return self.handle(node_id, self[node_id].read_index(request_id))

    def transfer_leadership(self, node_id: int, target: int) -> Ready:
        return self.handle(node_id, self[node_id].transfer_leadership(target))

    def compact(self, node_id: int, data: bytes, index: int | None = None) -> Snapshot:
        """Snapshot the node's state machine at `index` (default: all it applied) and persist it."""
        node = self.nodes[node_id]
        snapshot = node.core.compact(node.core.applied_index if index is None else index, data)
        node.disk.snapshot = snapshot
        node.disk.entries = [e for e in node.disk.entries if e.index > snapshot.meta.index]
        return snapshot

    # -- views -----------------------------------------------------------------------------------------

    def elect(self, node_id: int) -> RaftCore:
        """Have `node_id` campaign now and deliver everything; it must end up leader."""
        self.campaign(node_id)
        self.deliver()
        core = self[node_id]
        assert core.role is Role.LEADER, f"node {node_id} campaigned but is {core.role.value} in term {core.term}"
        return core

    def leaders(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if i not in self.down and n.core.role is Role.LEADER)

    def leader(self) -> int:
        """The one running leader of the highest term among running nodes, or NONE."""
        running = [n.core for i, n in self.nodes.items() if i not in self.down]
        top = max(c.term for c in running)
        leaders = [c.id for c in running if c.role is Role.LEADER and c.term == top]
        assert len(leaders) <= 1, f"two leaders in term {top}: {leaders}"
        return leaders[0] if leaders else NONE

    def terms(self) -> dict[int, int]:
        return {i: n.core.term for i, n in self.nodes.items()}

    def sent_by(self, node_id: int, kind: MessageType | None = None, to: int | None = None) -> list[Message]:
        return [
            m for m in self.sent if m.frm == node_id and (kind is None or m.type is kind) and (to is None or m.to == to)
        ]


def win_election(core: RaftCore) -> Ready:
    """Make a lone core leader by campaigning and feeding it granted (pre-)votes from its peers, one at a time.
    Returns the Ready in which it became leader (it holds the first APPENDs)."""
    ready = core.campaign()
    peers = sorted(core.conf_state.voters - {core.id})
    while core.role is not Role.LEADER:
        role = core.role
        if role is Role.PRE_CANDIDATE:
            kind, term = MT.PRE_VOTE_RESP, core.term + 1
        elif role is Role.CANDIDATE:
            kind, term = MT.VOTE_RESP, core.term
        else:
            raise AssertionError(f"node {core.id} did not campaign: it is {role.value}")
        for peer in peers:
            ready = core.step(Message(kind, to=core.id, frm=peer, term=term))
            if core.role is not role:
                break
        else:
            raise AssertionError(f"node {core.id} got every vote and is still {role.value}")
    return ready


def messages_of(ready: Ready, kind: MessageType, to: int | None = None) -> list[Message]:
    return [m for m in ready.messages if m.type is kind and (to is None or m.to == to)]
