"""The persistence pipeline between the Raft core and the disk, without I/O: what `raft.driver` runs on
asyncio and `chaos.sim` runs on its simulated clock.

Readies pile up in the open batch; the flusher takes the oldest batch, persists it with one write (group
commit), then sends its messages, then applies its committed entries, then serves its reads. Batches are
flushed strictly in order, and while batch N is being written, batch N+1 fills up. Three rules make it wait
less:

- `may_send_before_persisting` (Raft thesis §10.2.1): a batch with no snapshot, whose hard state keeps the
  persisted term and vote, and whose messages all claim nothing about what the sender has on disk
  (`SENDABLE_BEFORE_PERSIST`) sends them before its write completes -- unless the core already counted the
  batch's own unwritten entries toward a commit (a lone voter is a quorum by itself).
- `must_sync` (etcd's MustSync): a batch with no entries and no snapshot whose hard state moved only the
  commit index is not written at all; that commit index rides along with the next write.

- `appliable_before_persisting` (etcd applies while it saves): a batch's committed entries that were written
  by an earlier batch are applied, and their proposers answered, while this batch's write runs, not after it.
  An entry committed in the batch that writes it (a lone voter; a follower told of the commit with the
  entries) is applied after the write.

Why it is safe: whatever depends on the leader's copy being durable -- applying, answering clients,
announcing a commit index that counted the leader -- happens only in later batches, which are flushed after
this one's write returns. An entry applied early is committed: a majority has it on disk, this node's copy
counted only once an earlier batch's write returned. Replies that promise durability (votes, acks) always
wait for the write. The deterministic simulator checks this, with crashes between a batch's early send and
its write returning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .messages import Entry, HardState, Message, MessageType, ReadState, Ready, Snapshot

SENDABLE_BEFORE_PERSIST = frozenset(
    {
        MessageType.APPEND,
        MessageType.HEARTBEAT,
        MessageType.SNAPSHOT,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX_RESP,
        MessageType.PROPOSE,
        MessageType.READ_INDEX,
        MessageType.COMMIT,
    }
)
"""Messages that claim nothing about what the sender has on disk (see `Pipeline.may_send_before_persisting`)."""


@dataclass(slots=True)
class Batch:
    """Readies merged for one group commit. A Ready with a snapshot always starts a
    new batch, so within a batch the snapshot (if any) comes before every entry."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[bytes] = field(default_factory=list)

    def add(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.entries:
            first = ready.entries[0].index
            entries = self.entries
            while entries and entries[-1].index >= first:
                entries.pop()  # overwritten by a later Ready of this batch
            entries.extend(ready.entries)
        self.messages.extend(ready.messages)
        self.committed.extend(ready.committed_entries)
        self.read_states.extend(ready.read_states)
        self.dropped_reads.extend(ready.dropped_reads)

    def needs_persisting(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot)

    def is_empty(self) -> bool:
        return not (
            self.needs_persisting() or self.messages or self.committed or self.read_states or self.dropped_reads
        )


class Pipeline:
    """One node's batches and flush rules; rebuilt from disk after a crash.

    The driver (or the simulator) feeds it every Ready (`feed`), takes batches in order (`take_batch`), asks
    the two rules about each, and reports each completed write (`written`). Subclasses in tests break a rule
    on purpose.
    """

    sendable_before_persist: frozenset[MessageType] = SENDABLE_BEFORE_PERSIST

    __slots__ = ("batches", "carried_commit", "persisted_hard_state", "writing")

    def __init__(self, persisted: HardState) -> None:
        self.batches: deque[Batch] = deque([Batch()])
        self.persisted_hard_state = persisted
        self.carried_commit: HardState | None = None
        self.writing: Batch | None = None
        """The batch whose write is in progress: the flusher waits for it before taking the next one."""

    def feed(self, ready: Ready) -> None:
        """Merge a Ready into the open batch (a snapshot starts a new one)."""
        batch = self.batches[-1]
        if ready.snapshot is not None:
            if not batch.is_empty():
                batch = Batch()
                self.batches.append(batch)
            batch.snapshot = ready.snapshot
        batch.add(ready)

    def take_batch(self) -> Batch | None:
        """The flusher loop's next batch, oldest first, unless a write is in progress or nothing is pending."""
        if self.writing is not None or self.batches[0].is_empty():
            return None
        batch = self.batches.popleft()
        if not self.batches:
            self.batches.append(Batch())  # the batch that fills while this one is flushed
        return batch

    def is_idle(self) -> bool:
        return self.writing is None and self.batches[0].is_empty()

    def must_sync(self, batch: Batch) -> bool:
        """Persist only what Raft needs durable (entries, snapshot, term, vote).
        A moved commit index alone is volatile state (Raft paper, Figure 2): it rides along with the next save."""
        if batch.entries or batch.snapshot is not None:
            return True
        hard_state, persisted = batch.hard_state, self.persisted_hard_state
        if hard_state is None:
            return False
        if (hard_state.term, hard_state.vote) != (persisted.term, persisted.vote):
            return True
        batch.hard_state = None
        self.carried_commit = hard_state
        return False

    def start_write(self, batch: Batch) -> HardState | None:
        """The flusher writes `batch` and waits: returns the hard state to write, the batch's own or the commit
        index carried so far."""
        self.writing = batch
        return batch.hard_state or self.carried_commit

    def written(self, hard_state: HardState | None) -> None:
        """The write in progress returned, with `hard_state` (what `start_write` gave) on disk."""
        self.persisted_hard_state = hard_state or self.persisted_hard_state
        self.carried_commit = None
        self.writing = None

    def appliable_before_persisting(self, batch: Batch) -> list[Entry]:
        """The batch's committed entries that may be applied -- their proposers answered -- while its write
        is still running: all of them below its first unwritten entry. See the module docstring."""
        if batch.snapshot is not None:
            return []  # the snapshot replaces the state machine first, after its write
        if not batch.entries:
            return batch.committed
        first_unwritten = batch.entries[0].index
        return [entry for entry in batch.committed if entry.index < first_unwritten]

    def may_send_before_persisting(self, batch: Batch) -> bool:
        """Raft thesis §10.2.1: see the module docstring."""
        if batch.snapshot is not None:
            return False
        hard_state, persisted = batch.hard_state, self.persisted_hard_state
        if batch.entries and hard_state is not None and hard_state.commit >= batch.entries[0].index:
            return False  # the core counted this batch's own unwritten entries (a lone voter commits alone)
        if hard_state is not None and (hard_state.term, hard_state.vote) != (persisted.term, persisted.vote):
            return False
        sendable = self.sendable_before_persist
        return all(m.type in sendable for m in batch.messages)
