"""Raft's safety properties, checked incrementally after every simulation step.

Each check looks only at what the step changed (the entries a node just persisted or applied, the node that
just took an input), against global records kept for the whole run: which node led each term, what every
(index, term) pair carried, and the history of applied entries. That keeps a check O(change), so the
simulator can afford to run all of them after every step. Names follow Figure 3 of the Raft paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from raftswarm.raft.messages import Entry, EntryType, Role, SnapshotMeta

if TYPE_CHECKING:
    from raftswarm.raft.core import RaftCore

ELECTION_SAFETY = "election safety"
LOG_MATCHING = "log matching"
LEADER_COMPLETENESS = "leader completeness"
STATE_MACHINE_SAFETY = "state machine safety"
DURABILITY = "durability"
LINEARIZABLE_READS = "linearizable reads"
APPLY_ORDER = "apply order"
COMMIT_WITHIN_LOG = "commit within log"
PERSIST_BEFORE_SEND = "persist before send"
PERSIST_BEFORE_APPLY = "persist before apply"
COMMIT_WITHIN_DISK = "commit within disk"
NOTHING_UNWRITTEN = "nothing unwritten"
READY_CONTRACT = "ready contract"
LIVENESS = "liveness"
CORE_ERROR = "core error"


class InvariantViolation(Exception):
    """A run broke one of the properties above; `invariant` names which one, `detail` says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class SafetyChecker:
    """Global bookkeeping for the invariants, fed by the simulator as nodes persist, apply and read."""

    def __init__(self) -> None:
        self.checks = 0
        self.history: list[Entry] = []
        """The applied history: history[i - 1] is the entry every node must apply at index i."""
        self.acked_index: dict[bytes, int] = {}
        """Client payload -> the index where it was first applied (the moment a client would hear "ok")."""
        self._leader_of_term: dict[int, int] = {}
        self._log: dict[tuple[int, int], tuple[EntryType, bytes, int]] = {}
        self._read_floor: dict[bytes, int] = {}
        self._leader_term_checked: dict[int, int] = {}
        self._core_applied: dict[int, int] = {}

    # --- log matching -------------------------------------------------------------------------------------

    def entries_persisted(self, node_id: int, entries: Sequence[Entry], prev_term: int) -> None:
        """Entries with the same (index, term) carry the same data and follow the same term, everywhere, forever."""
        log = self._log
        for entry in entries:
            if entry.term < prev_term:
                raise InvariantViolation(
                    LOG_MATCHING, f"node {node_id} persisted {_show(entry)} after an entry of term {prev_term}"
                )
            record = (entry.type, entry.data, prev_term)
            seen = log.setdefault((entry.index, entry.term), record)
            if seen != record:
                raise InvariantViolation(
                    LOG_MATCHING,
                    f"node {node_id} persisted {_show(entry)} after term {prev_term}; another log holds "
                    f"({entry.index}, {entry.term}) as {seen[0].name} {seen[1][:40]!r} after term {seen[2]}",
                )
            prev_term = entry.term
        self.checks += len(entries)

    # --- per-input node state -----------------------------------------------------------------------------

    def node_stepped(self, node_id: int, core: RaftCore) -> None:
        """Election safety and leader completeness on every leader seen, plus bounds on commit and apply."""
        term = core.term
        if core.role is Role.LEADER:
            holder = self._leader_of_term.setdefault(term, node_id)
            if holder != node_id:
                raise InvariantViolation(ELECTION_SAFETY, f"term {term} has two leaders: {holder} and {node_id}")
            if self._leader_term_checked.get(node_id) != term:
                self._leader_term_checked[node_id] = term
                self._check_leader_completeness(node_id, core)
        commit, last = core.commit_index, core.last_index
        if commit > last:
            raise InvariantViolation(COMMIT_WITHIN_LOG, f"node {node_id} commit index {commit} > last index {last}")
        applied = core.applied_index
        if applied < self._core_applied.get(node_id, 0):
            raise InvariantViolation(
                APPLY_ORDER, f"node {node_id} applied index went back from {self._core_applied[node_id]} to {applied}"
            )
        self._core_applied[node_id] = applied
        self.checks += 4

    def node_restarted(self, node_id: int) -> None:
        """A restart rebuilds the node from disk: its applied index may legitimately start lower again."""
        self._core_applied.pop(node_id, None)
        self._leader_term_checked.pop(node_id, None)

    def _check_leader_completeness(self, node_id: int, core: RaftCore) -> None:
        history = self.history
        first = 1
        meta = core.snapshot_meta
        if meta is not None and meta.index > 0:
            if meta.index <= len(history) and history[meta.index - 1].term != meta.term:
                raise InvariantViolation(
                    LEADER_COMPLETENESS,
                    f"leader {node_id} of term {core.term} has a snapshot at ({meta.index}, {meta.term}) but "
                    f"committed entry {meta.index} has term {history[meta.index - 1].term}",
                )
            first = meta.index + 1
        if core.last_index < len(history):
            raise InvariantViolation(
                LEADER_COMPLETENESS,
                f"leader {node_id} of term {core.term} ends at index {core.last_index} but "
                f"{len(history)} entries are committed",
            )
        term_at = core.term_at
        for index in range(first, len(history) + 1):
            if term_at(index) != history[index - 1].term:
                raise InvariantViolation(
                    LEADER_COMPLETENESS,
                    f"leader {node_id} of term {core.term} has term {term_at(index)} at index {index}, "
                    f"but the committed entry there is {_show(history[index - 1])}",
                )
        self.checks += len(history) - first + 1

    # --- state machine safety -----------------------------------------------------------------------------

    def entry_applied(self, node_id: int, entry: Entry) -> None:
        """No two nodes apply different entries at one index."""
        history = self.history
        index = entry.index
        if index <= len(history):
            if history[index - 1] != entry:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"node {node_id} applied {_show(entry)} where {_show(history[index - 1])} was applied before",
                )
        elif index == len(history) + 1:
            history.append(entry)
            if entry.type is EntryType.NORMAL and entry.data:
                self.acked_index.setdefault(entry.data, index)
        else:
            raise InvariantViolation(
                STATE_MACHINE_SAFETY, f"node {node_id} applied index {index} but nobody has applied {len(history) + 1}"
            )
        self.checks += 1

    def snapshot_restored(self, node_id: int, meta: SnapshotMeta, entries: Sequence[Entry]) -> None:
        """A snapshot holds exactly the applied history up to its index."""
        if len(entries) != meta.index or (entries and entries[-1].term != meta.term):
            last = _show(entries[-1]) if entries else "nothing"
            raise InvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id} restored a snapshot labelled ({meta.index}, {meta.term}) holding {len(entries)} "
                f"entries ending with {last}",
            )
        for entry in entries:
            self.entry_applied(node_id, entry)

    # --- linearizable reads -------------------------------------------------------------------------------

    def read_invoked(self, request_id: bytes) -> None:
        """Remember which writes were acknowledged when the read started: it must observe all of them."""
        self._read_floor[request_id] = len(self.history)

    def read_served(self, node_id: int, request_id: bytes, applied_index: int) -> None:
        floor = self._read_floor.get(request_id)
        if floor is None:
            raise InvariantViolation(LINEARIZABLE_READS, f"node {node_id} answered unknown read {request_id!r}")
        if applied_index < floor:
            raise InvariantViolation(
                LINEARIZABLE_READS,
                f"node {node_id} served read {request_id.decode()} at applied index {applied_index}, but index "
                f"{floor} was acknowledged before the read started",
            )
        self.checks += 1

    # --- end of run ---------------------------------------------------------------------------------------

    def check_durability(self, applied_logs: Iterable[tuple[int, Sequence[Entry]]]) -> None:
        """Every acknowledged write is still at its index, on every node that has applied that far."""
        history = self.history
        logs = list(applied_logs)
        for data, index in self.acked_index.items():
            if history[index - 1].data != data:
                raise InvariantViolation(DURABILITY, f"acknowledged write {data[:40]!r} left index {index}")
            for node_id, applied in logs:
                if len(applied) >= index and applied[index - 1].data != data:
                    raise InvariantViolation(
                        DURABILITY,
                        f"node {node_id} has {_show(applied[index - 1])} where acknowledged write "
                        f"{data[:40]!r} was applied",
                    )
            self.checks += len(logs)


def _show(entry: Entry) -> str:
    return f"({entry.index}, {entry.term}) {entry.type.name} {entry.data[:40]!r}"
