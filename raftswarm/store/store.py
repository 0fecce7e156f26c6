"""`ReplicatedStore`: the cluster state as the rest of the control plane uses it.

Writes go through Raft (a follower's proposal is forwarded to the leader by the core) and return once
applied on this manager. Reads are linearizable by default (ReadIndex: the leader confirms it still leads
and this manager catches up to the confirmed commit index before reading); `linearizable=False` reads
whatever this manager has applied. Watches stream every change after a version, without gaps.

The store is the driver's state machine: it applies entries to `ClusterState` and tells watchers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from ..raft.driver import RaftDriver
from .state import Change, ClusterState, Committed, Operation, StoreError, encode_transaction
from ..objects.stored import StoredObject

WATCH_BACKLOG = 10_000
"""Transactions buffered per watcher. One that falls further behind resumes from the state's history
(or gets WatchCompacted if even that has moved on) rather than holding memory without bound."""


class _Watcher:
    def __init__(self, kinds: frozenset[str] | None) -> None:
        self.kinds = kinds
        """The object kinds it wants, or None for all: a commit that changes none of them does not wake it."""
        self.pending: deque[Committed] = deque()
        self.overflowed = False
        self.wakeup = asyncio.Event()

    def wants(self, change: Change) -> bool:
        return self.kinds is None or change.object.kind in self.kinds

    def push(self, committed: Committed) -> None:
        if self.kinds is not None and not any(map(self.wants, committed.changes)):
            return
        if len(self.pending) >= WATCH_BACKLOG:
            self.pending.clear()
            self.overflowed = True
        else:
            self.pending.append(committed)
        self.wakeup.set()


class ReplicatedStore:
    """Construct it with a `ClusterState`, give it to a `RaftDriver` as its state machine, then `attach`."""

    def __init__(self, state: ClusterState | None = None) -> None:
        self.state = state or ClusterState()
        self.driver: RaftDriver | None = None
        self._watchers: set[_Watcher] = set()

    def attach(self, driver: RaftDriver) -> None:
        self.driver = driver

    # -- the driver's state machine --------------------------------------------------------------------

    def apply(self, index: int, payload: bytes) -> Committed | StoreError:
        result = self.state.apply(index, payload)
        if isinstance(result, Committed) and result.changes:
            for watcher in self._watchers:
                watcher.push(result)
        return result

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, data: bytes) -> None:
        self.state.restore(data)
        for watcher in self._watchers:
            watcher.overflowed = True  # their next read finds the history gone: WatchCompacted
            watcher.wakeup.set()

    # -- the API ---------------------------------------------------------------------------------------

    async def transact(self, operations: list[Operation], timeout: float | None = None) -> Committed:
        """Apply `operations` atomically; raises Conflict (nothing changed) if an expected version is stale.
        (The driver raises the StoreError that applying returned.)"""
        return await self._driver().propose(encode_transaction(operations), timeout)

    async def get(self, kind: str, object_id: str, linearizable: bool = True) -> StoredObject | None:
        if linearizable:
            await self._driver().read_barrier()
        return self.state.get(kind, object_id)

    async def list(self, kind: str, linearizable: bool = True) -> list[StoredObject]:
        if linearizable:
            await self._driver().read_barrier()
        return self.state.list(kind)

    async def watch(self, since: int, kinds: frozenset[str] | None = None) -> AsyncIterator[Change]:
        """Every change after version `since`, in order, then live ones as they are applied; with `kinds`,
        only changes to objects of those kinds."""
        watcher = _Watcher(kinds)
        self._watchers.add(watcher)  # before reading history: nothing applied from here on can be missed
        last = since
        try:
            backlog = self.state.committed_since(since)
            while True:
                for committed in backlog:
                    if committed.version > last:
                        last = committed.version
                        for change in committed.changes:
                            if watcher.wants(change):
                                yield change
                while not watcher.pending and not watcher.overflowed:
                    watcher.wakeup.clear()
                    await watcher.wakeup.wait()
                if watcher.overflowed:
                    watcher.overflowed = False
                    watcher.pending.clear()
                    backlog = self.state.committed_since(last)
                else:
                    backlog = list(watcher.pending)
                    watcher.pending.clear()
        finally:
            self._watchers.discard(watcher)

    def _driver(self) -> RaftDriver:
        if self.driver is None:
            raise StoreError("the store is not attached to a Raft node yet")
        return self.driver
