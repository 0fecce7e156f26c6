"""The vocabulary of the Raft core: log entries, messages, persistent state and the Ready batch.

Everything here is plain data. The core (`raftswarm.raft.core`) consumes and produces these values;
the driver persists `Ready.entries`/`Ready.hard_state`/`Ready.snapshot`, sends `Ready.messages`, applies
`Ready.committed_entries`, and answers `Ready.read_states` -- in that order, except where `raft.pipeline`'s
rules (sending before persisting, applying what an earlier write holds) allow otherwise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NONE = 0
"""The node ID meaning "nobody" (no vote cast, no known leader). Real node IDs are positive integers."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change; the payload of a CONF_CHANGE entry.

    ADD_VOTER of an existing learner promotes it. `context` is opaque to the core (the node layer puts the
    new member's address there).
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return bytes([int(self.type)]) + self.node_id.to_bytes(8, "big") + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < 9:
            raise ValueError("conf change payload too short")
        return cls(ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), bytes(data[9:]))


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership at some log index: who votes, who only learns."""

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def members(self) -> frozenset[int]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf_state: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application state as of `meta.index`, as opaque bytes of any size."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a restart besides the log: current term, vote in that term, commit index."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class MessageType(enum.IntEnum):
    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    """One chunk of an InstallSnapshot: `snapshot` carries the meta, `index` the byte offset, `entries` nothing."""
    SNAPSHOT_RESP = 10
    TIMEOUT_NOW = 11
    PROPOSE = 12
    """Entries a follower forwards to the leader."""
    READ_INDEX = 13
    READ_INDEX_RESP = 14
    COMMIT = 15
    """The leader's new commit index for a follower that has every entry sent to it; no reply."""


@dataclass(slots=True)
class Message:
    """One Raft message. Field use per type follows etcd's raftpb.Message.

    - APPEND: `log_term`/`index` are the term and index of the entry before `entries`; `commit` the leader's.
    - APPEND_RESP: `index` is the last index now matching (accept) or the rejected probe index (reject),
      `reject_hint`/`log_term` tell the leader where to look next (fast backtracking).
    - VOTE/PRE_VOTE: `log_term`/`index` are the candidate's last entry; `context` is TRANSFER_CONTEXT when
      the election follows a leadership transfer.
    - HEARTBEAT/HEARTBEAT_RESP: `commit` and `context` (a ReadIndex round's ID, echoed back).
    - COMMIT: as an APPEND without entries (`log_term`/`index` the last entry sent, `commit` the leader's),
      which the follower does not answer: what an answer would say, the leader has already heard.
    - SNAPSHOT: `snapshot_meta`, `index` = byte offset of `chunk`, `done` on the last chunk.
    - SNAPSHOT_RESP: `index` = bytes received so far (ack) or the offset expected (reject).
    - READ_INDEX/READ_INDEX_RESP: `context` = the request ID, `index` = the read index in the response.
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot_meta: SnapshotMeta | None = None
    chunk: bytes = b""
    done: bool = False


COMMIT_AWAITED = b"awaited"
"""COMMIT context: the commit takes in a proposal the follower forwarded, so a caller there waits for it; the
driver sends such a COMMIT at once instead of holding it back for an APPEND to carry."""

TRANSFER_CONTEXT = b"raft-transfer"
"""VOTE context marking an election started by TIMEOUT_NOW; such votes bypass the leader lease."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read became ready: once the state machine has applied `index`, serve `request_id`."""

    index: int
    request_id: bytes


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class Ready:
    """Everything one input produced, in order of obligation.

    1. Persist: `snapshot` (if any; the core sends one only when its log did not hold the snapshot's last
       entry, so it replaces the whole log), then `entries` (the first one
       may overwrite persisted entries from its index on: truncate there first), then `hard_state`.
    2. Send `messages`.
    3. Restore the state machine from `snapshot` (if any), then apply `committed_entries` in order.
    4. Serve the reads in `read_states` once their index is applied.

    `raft.pipeline` says which messages may go before step 1 is done, and which committed entries (those an
    earlier Ready's persisting put on disk) may be applied meanwhile.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[bytes] = field(default_factory=list)
    """Read requests the core gave up on (lost leadership, no leader known): the caller should retry them."""

    def is_empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.dropped_reads
        )


@dataclass(slots=True)
class PersistedState:
    """What a node has on disk for Raft; the core is rebuilt from exactly this after a restart."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    """The log entries after the snapshot (or from index 1 if there is none), contiguous."""
