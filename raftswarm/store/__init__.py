"""The replicated cluster state: typed objects with versions, atomic compare-and-set transactions,
gap-free watches, linearizable reads, snapshot and restore.

- `state`: `ClusterState`, the deterministic state machine every manager applies, and the transaction format.
- `store`: `ReplicatedStore`, the async API over a `raft.driver.RaftDriver`.
"""

from .state import (
    ABSENT,
    ANY_VERSION,
    Action,
    Change,
    ClusterState,
    Committed,
    Conflict,
    Operation,
    StoreError,
    WatchCompacted,
    check,
    create,
    delete,
    put,
    update,
)
from ..objects.stored import StoredObject
from .store import ReplicatedStore

__all__ = [
    "ABSENT",
    "ANY_VERSION",
    "Action",
    "Change",
    "ClusterState",
    "Committed",
    "Conflict",
    "Operation",
    "ReplicatedStore",
    "StoreError",
    "StoredObject",
    "WatchCompacted",
    "check",
    "create",
    "delete",
    "put",
    "update",
]
