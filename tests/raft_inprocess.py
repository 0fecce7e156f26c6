"""An in-process Raft cluster for tests: drivers in one event loop, an in-process network, memory disks.

It tests the driver's ordering (persist, send, apply, read) and what is built on it without sockets;
real processes are tested elsewhere.
"""

import asyncio
import random

import pytest

from raftswarm.raft.core import RaftConfig, RaftCore
from raftswarm.raft.driver import DriverConfig, RaftDriver, encode_address
from raftswarm.raft.messages import Entry, HardState, PersistedState, Snapshot


class MemoryStorage:
    def __init__(self, state: PersistedState) -> None:
        self.state = state
        self.saves = 0

    def load(self) -> PersistedState:
        return PersistedState(self.state.hard_state, self.state.snapshot, list(self.state.entries))

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        self.saves += 1
        if snapshot is not None:
            self.state.snapshot, self.state.entries = snapshot, []
        if entries:
            self.state.entries = [e for e in self.state.entries if e.index < entries[0].index] + list(entries)
        if hard_state is not None:
            self.state.hard_state = hard_state

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.state.snapshot = snapshot
        self.state.entries = [e for e in self.state.entries if e.index > snapshot.meta.index]


class ListMachine:
    def __init__(self) -> None:
        self.items: list[bytes] = []

    def apply(self, index: int, payload: bytes) -> int:
        self.items.append(payload)
        return len(self.items)

    def snapshot(self) -> bytes:
        return b"\n".join(self.items)

    def restore(self, data: bytes) -> None:
        self.items = data.split(b"\n") if data else []


class Network:
    """Delivers messages between drivers on the next loop iteration; `down` nodes neither send nor receive."""

    def __init__(self) -> None:
        self.drivers: dict[int, RaftDriver] = {}
        self.down: set[int] = set()

    def endpoint(self, raft_id: int) -> "Endpoint":
        return Endpoint(self, raft_id)

    def deliver(self, messages) -> None:
        for m in messages:
            target = self.drivers.get(m.to)
            if target is not None and m.to not in self.down and m.frm not in self.down:
                asyncio.get_running_loop().call_soon(target.receive, m)


class Endpoint:
    def __init__(self, network: Network, raft_id: int) -> None:
        self.network, self.raft_id, self.peers = network, raft_id, {}

    def send(self, messages, urgent: bool = True) -> None:
        if self.raft_id not in self.network.down:
            self.network.deliver(messages)

    def add_peer(self, raft_id, host, port) -> None:
        self.peers[raft_id] = (host, port)

    def remove_peer(self, raft_id) -> None:
        self.peers.pop(raft_id, None)


class Cluster:
    """`machine_factory` makes each node's state machine (default: a list of payloads)."""

    def __init__(self, size: int, machine_factory=None, **driver_config) -> None:
        self.machine_factory = machine_factory or ListMachine
        self.network = Network()
        self.config = DriverConfig(tick_interval=0.01, **driver_config)
        ids = list(range(1, size + 1))
        boot = RaftCore.bootstrap(ids, {i: encode_address("127.0.0.1", 2376 + i) for i in ids})
        self.storages = {i: MemoryStorage(PersistedState(boot.hard_state, None, list(boot.entries))) for i in ids}
        self.machines: dict[int, ListMachine] = {}

    async def start(self, raft_id: int) -> RaftDriver:
        if raft_id not in self.storages:
            self.storages[raft_id] = MemoryStorage(PersistedState())
        self.machines[raft_id] = self.machine_factory()
        driver = RaftDriver(
            RaftConfig(raft_id), self.storages[raft_id], self.network.endpoint(raft_id), self.machines[raft_id],
            self.config, random.Random(raft_id),
        )
        self.network.drivers[raft_id] = driver
        if hasattr(self.machines[raft_id], "attach"):
            self.machines[raft_id].attach(driver)
        await driver.start()
        return driver

    async def stop(self, raft_id: int) -> None:
        await self.network.drivers.pop(raft_id).close()

    async def leader(self, timeout: float = 20.0) -> RaftDriver:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            leaders = [d for i, d in self.network.drivers.items() if d.is_leader and i not in self.network.down]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.01)
        raise AssertionError("no single leader emerged")

    async def close(self) -> None:
        for raft_id in list(self.network.drivers):
            await self.stop(raft_id)


@pytest.fixture
async def cluster():
    clusters = []

    async def make(size: int, machine_factory=None, **config) -> Cluster:
        c = Cluster(size, machine_factory, **config)
        clusters.append(c)
        for raft_id in list(c.storages):
            await c.start(raft_id)
        return c

    yield make
    for c in clusters:
        await c.close()


