"""A replicated store without Raft, for tests of what managers decide: `InstantLeader` plays a driver that
leads and whose proposals apply at once, `instant_store()` gives a store attached to one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from raftswarm.raft.driver import Timeout
from raftswarm.store import ReplicatedStore, StoreError


class InstantLeader:
    """What the manager's APIs and loops read of a Raft driver; `failing_reads` read barriers time out first."""

    def __init__(self, store: ReplicatedStore) -> None:
        self.store = store
        self.is_leader = True
        self.leader_id = 1
        self.core = SimpleNamespace(term=3)
        self.failing_reads = 0

    def peer_addresses(self) -> dict[int, tuple[str, int]]:
        return {1: ("10.0.0.1", 2377)}

    async def read_barrier(self, timeout: float | None = None) -> int:
        if self.failing_reads:
            self.failing_reads -= 1
            raise Timeout("no leader was elected in time; a majority of managers may be unreachable")
        return self.store.state.version

    async def propose(self, payload: bytes, timeout: float | None = None) -> Any:
        result = self.store.apply(self.store.state.version + 1, payload)
        if isinstance(result, StoreError):
            raise result
        return result


def instant_store() -> tuple[ReplicatedStore, InstantLeader]:
    store = ReplicatedStore()
    driver = InstantLeader(store)
    store.attach(driver)  # type: ignore[arg-type]
    return store, driver
