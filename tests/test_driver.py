"""The asyncio driver around the Raft core: group commit, forwarding, reads, restarts, snapshots, membership.

These run whole clusters in one event loop with an in-process network and in-memory disks, so they test
the driver's ordering (persist, send, apply, read) without sockets; real processes are tested elsewhere.
"""

import asyncio
import random

import pytest

from raftswarm.errors import ProposalDropped
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

    def send(self, messages) -> None:
        if self.raft_id not in self.network.down:
            self.network.deliver(messages)

    def add_peer(self, raft_id, host, port) -> None:
        self.peers[raft_id] = (host, port)

    def remove_peer(self, raft_id) -> None:
        self.peers.pop(raft_id, None)


class Cluster:
    def __init__(self, size: int, **driver_config) -> None:
        self.network = Network()
        self.config = DriverConfig(tick_interval=0.01, **driver_config)
        ids = list(range(1, size + 1))
        boot = RaftCore.bootstrap(ids, {i: encode_address("127.0.0.1", 2376 + i) for i in ids})
        self.storages = {i: MemoryStorage(PersistedState(boot.hard_state, None, list(boot.entries))) for i in ids}
        self.machines: dict[int, ListMachine] = {}

    async def start(self, raft_id: int) -> RaftDriver:
        if raft_id not in self.storages:
            self.storages[raft_id] = MemoryStorage(PersistedState())
        self.machines[raft_id] = ListMachine()
        driver = RaftDriver(
            RaftConfig(raft_id), self.storages[raft_id], self.network.endpoint(raft_id), self.machines[raft_id],
            self.config, random.Random(raft_id),
        )
        self.network.drivers[raft_id] = driver
        await driver.start()
        return driver

    async def stop(self, raft_id: int) -> None:
        await self.network.drivers.pop(raft_id).close()

    async def leader(self, timeout: float = 5.0) -> RaftDriver:
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

    async def make(size: int, **config) -> Cluster:
        c = Cluster(size, **config)
        clusters.append(c)
        for raft_id in list(c.storages):
            await c.start(raft_id)
        return c

    yield make
    for c in clusters:
        await c.close()


async def test_proposals_on_leader_and_follower_are_applied_everywhere_in_one_order(cluster):
    c = await cluster(3)
    leader = await c.leader()
    follower = next(d for d in c.network.drivers.values() if d is not leader)
    results = await asyncio.gather(*(leader.propose(b"L%d" % i) for i in range(20)), follower.propose(b"from-follower"))
    assert sorted(results) == list(range(1, 22))  # each caller got its own entry's apply result
    await leader.read_barrier()
    for d in c.network.drivers.values():
        await d.read_barrier()
    orders = {tuple(m.items) for m in c.machines.values()}
    assert len(orders) == 1 and len(next(iter(orders))) == 21


async def test_concurrent_proposals_share_fsyncs(cluster):
    c = await cluster(3)
    leader = await c.leader()
    before = c.storages[leader.id].saves
    await asyncio.gather(*(leader.propose(b"x%d" % i) for i in range(500)))
    assert c.storages[leader.id].saves - before < 100  # group commit: far fewer fsyncs than writes


async def test_read_barrier_on_a_follower_sees_writes_acknowledged_before_it(cluster):
    c = await cluster(3)
    leader = await c.leader()
    await leader.propose(b"written")
    follower = next(d for d in c.network.drivers.values() if d is not leader)
    await follower.read_barrier()
    assert b"written" in c.machines[follower.id].items


async def test_whole_cluster_restart_keeps_every_acknowledged_write(cluster):
    c = await cluster(3)
    leader = await c.leader()
    for i in range(30):
        await leader.propose(b"w%d" % i)
    for raft_id in (1, 2, 3):
        await c.stop(raft_id)
    for raft_id in (1, 2, 3):
        await c.start(raft_id)
    leader = await c.leader()
    await leader.read_barrier()
    assert c.machines[leader.id].items == [b"w%d" % i for i in range(30)]


async def test_snapshots_compact_the_log_and_a_new_member_installs_one(cluster):
    c = await cluster(3, snapshot_interval=20)
    leader = await c.leader()
    for i in range(60):
        await leader.propose(b"s%d" % i)
    assert c.storages[leader.id].state.snapshot is not None
    assert c.storages[leader.id].state.entries[0].index > 20  # old entries are gone from disk
    newcomer = await c.start(4)  # empty disk: the entries it needs were compacted, so it needs the snapshot
    await leader.add_learner(4, "127.0.0.1", 2380)
    await leader.propose(b"after")
    for _ in range(300):
        if c.machines[4].items[-1:] == [b"after"]:
            break
        await asyncio.sleep(0.01)
    assert c.machines[4].items == [b"s%d" % i for i in range(60)] + [b"after"]
    assert c.storages[4].state.snapshot is not None
    assert set(newcomer.peer_addresses()) == {1, 2, 3, 4}  # addresses travel inside the snapshot


async def test_leader_failover_and_follower_proposals_after_it(cluster):
    c = await cluster(3)
    old = await c.leader()
    await old.propose(b"before")
    c.network.down.add(old.id)
    new = await c.leader()
    assert new is not old
    await new.propose(b"after")
    assert c.machines[new.id].items[-2:] == [b"before", b"after"]


async def test_add_learner_promote_and_remove(cluster):
    c = await cluster(3)
    leader = await c.leader()
    await c.start(4)
    await leader.add_learner(4, "127.0.0.1", 2380)
    await leader.promote(4)
    assert 4 in leader.core.conf_state.voters
    await leader.propose(b"with-four")
    victim = next(i for i in (1, 2, 3) if i != leader.id)
    await leader.remove(victim)
    assert victim not in leader.core.conf_state.members()
    assert victim not in leader.peer_addresses()
    with pytest.raises(ProposalDropped):
        await leader.propose(b"x" * (5 << 20))


async def test_transfer_leadership(cluster):
    c = await cluster(3)
    leader = await c.leader()
    target = next(i for i in c.network.drivers if i != leader.id)
    await leader.transfer_leadership(target)
    assert (await c.leader()).id == target
