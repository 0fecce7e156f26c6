"""What a simulated node keeps: its Raft disk (`SimDisk`) and its application state (`AppliedLog`).

The disk holds exactly what the driver's completed writes persisted, so a crash loses everything else (a
write still in progress included) and a restart rebuilds the core from `SimDisk.persisted_state()`. The application is deliberately the simplest one
that can be checked: the list of every entry applied, in order; its snapshot is that list as JSON.
"""

from __future__ import annotations

import json

from chaos.checks import READY_CONTRACT, InvariantViolation
from raftswarm.raft.messages import Entry, EntryType, HardState, PersistedState, Snapshot


class SimDisk:
    """One node's durable Raft state: hard state, latest snapshot, and the log entries after it."""

    __slots__ = ("entries", "hard_state", "node_id", "snapshot")

    def __init__(self, node_id: int, initial: PersistedState) -> None:
        self.node_id = node_id
        self.hard_state: HardState = initial.hard_state
        self.snapshot: Snapshot | None = initial.snapshot
        self.entries: list[Entry] = list(initial.entries)

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def term_at(self, index: int) -> int:
        """The term of the persisted entry at `index` (the snapshot's term at its own index, 0 before the log)."""
        offset = self.snapshot_index
        if index == offset:
            return self.snapshot.meta.term if self.snapshot is not None else 0
        return self.entries[index - offset - 1].term

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> int:
        """One write: a snapshot, entries and a hard state (from a Ready or a batch of them), in that order.

        Returns the term of the entry before `entries` (for the log matching check).
        """
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        prev_term = 0
        if entries:
            prev_term = self._append(entries)
        if hard_state is not None:
            self.hard_state = hard_state
        return prev_term

    def _append(self, entries: list[Entry]) -> int:
        first = entries[0].index
        offset = self.snapshot_index
        if not offset < first <= self.last_index + 1:
            raise InvariantViolation(
                READY_CONTRACT,
                f"node {self.node_id} asked to persist entries from {first}, but its disk holds a snapshot at "
                f"{offset} and entries up to {self.last_index}",
            )
        for expected, entry in enumerate(entries, first):
            if entry.index != expected:
                raise InvariantViolation(READY_CONTRACT, f"node {self.node_id} got non-contiguous entries to persist")
        del self.entries[first - offset - 1 :]
        prev_term = self.term_at(first - 1)
        self.entries.extend(entries)
        return prev_term

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the log up to the snapshot's index by the snapshot; later entries stay."""
        keep_from = snapshot.meta.index - self.snapshot_index
        self.entries = self.entries[keep_from:]
        self.snapshot = snapshot

    def persisted_state(self) -> PersistedState:
        """A copy of what is on disk, for a core to start from (the core may keep and grow the list)."""
        return PersistedState(self.hard_state, self.snapshot, list(self.entries))


class AppliedLog:
    """The simulated application: every entry applied so far, in log order (entries[i - 1] is index i)."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries: list[Entry] = entries if entries is not None else []

    @property
    def applied_index(self) -> int:
        return len(self.entries)

    def snapshot_data(self, index: int) -> bytes:
        """The state as of `index`, serialized deterministically (term, type, payload per entry)."""
        state = [[e.term, int(e.type), e.data.decode("latin-1")] for e in self.entries[:index]]
        return json.dumps(state, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> list[Entry]:
        """The applied entries a snapshot holds; empty data is the empty state."""
        if not data:
            return []
        state = json.loads(data)
        return [
            Entry(index, term, EntryType(kind), payload.encode("latin-1"))
            for index, (term, kind, payload) in enumerate(state, 1)
        ]
