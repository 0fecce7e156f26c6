"""Consensus: Raft written from scratch.

- `messages`: the data the core consumes and produces (entries, messages, the Ready batch).
- `log`, `progress`: the core's in-memory log and the leader's per-follower replication state.
- `core`: `RaftCore`, the pure deterministic state machine (no I/O, no clock, injected randomness).
- `storage`, `wal`, `keys`: the encrypted write-ahead log and snapshots under `<state-dir>/raft/`.
- `wire`, `transport`: Raft messages as frames, over mutual TLS on 2377.
- `pipeline`: what is written, sent and applied in which order (sans I/O); `driver` runs it all on asyncio.
"""

from .core import RaftConfig, RaftCore
from .messages import ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, PersistedState, Ready, Role

__all__ = [
    "ConfChange",
    "ConfChangeType",
    "Entry",
    "EntryType",
    "Message",
    "MessageType",
    "PersistedState",
    "RaftConfig",
    "RaftCore",
    "Ready",
    "Role",
]
