"""Managers as real processes on loopback: mTLS Raft on their ports, encrypted WAL on disk, the store via the API.

Each test lays out its own cluster under pytest's tmp_path and ends every process it started, by PID.
"""

import asyncio
import socket
import ssl
import struct
import time

import pytest

from raftswarm.api.client import ApiError
from raftswarm.ca.certificates import NodeRole, RootCA, client_ssl_context
from raftswarm.localcluster.managers import LocalCluster, LocalManager
from raftswarm.node.state_dir import StateDir
from raftswarm.raft.messages import Entry, EntryType
from raftswarm.raft.storage import RaftStorage
from raftswarm.raft.transport import PREAMBLE_RAFT

pytestmark = pytest.mark.slow


@pytest.fixture
def local_cluster(tmp_path):
    clusters = []

    def make(**kwargs) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


async def started(cluster: LocalCluster, size: int) -> LocalCluster:
    cluster.provision(size)
    cluster.start_all()
    for manager in cluster.managers:
        await cluster.wait_ready(manager)
    await cluster.leader()
    return cluster


async def put(cluster: LocalCluster, manager: LocalManager, key: str, value, within: float = 30.0) -> int:
    """Write through `manager`, retrying while the cluster has no leader, as a client would. Returns the
    version once the write is acknowledged."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with cluster.client(manager, 5.0) as client:
                return await client.transact([["put", "kv", key, value, -1]])
        except (ApiError, OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"could not write {key} through {manager.name}: {cluster.log_tail(manager)}")


async def read_all(cluster: LocalCluster, manager: LocalManager) -> dict:
    async with cluster.client(manager) as client:
        return {o["id"]: o["data"] for o in await client.list("kv")}


async def test_acknowledged_writes_survive_a_leader_kill_and_a_whole_cluster_restart(local_cluster):
    cluster = await started(local_cluster(), 3)
    acknowledged = {}
    for i in range(20):
        acknowledged[f"k{i}"] = i
        await put(cluster, cluster.managers[i % 3], f"k{i}", i)
    old_leader = await cluster.leader()
    cluster.kill(old_leader)
    survivors = [m for m in cluster.managers if m is not old_leader]
    new_leader = await cluster.leader(among=survivors)
    assert new_leader is not old_leader
    for i in range(20, 40):
        acknowledged[f"k{i}"] = i
        await put(cluster, survivors[i % 2], f"k{i}", i)
    for manager in survivors:
        cluster.kill(manager)  # everything at once, with kill -9: only what was fsynced survives
    cluster.start_all()
    for manager in cluster.managers:
        await cluster.wait_ready(manager)
    leader = await cluster.leader()
    assert await read_all(cluster, leader) == acknowledged
    for manager in cluster.managers:  # linearizable reads on every manager see every acknowledged write
        assert await read_all(cluster, manager) == acknowledged


async def test_managers_are_added_and_removed_and_leadership_transferred(local_cluster):
    cluster = await started(local_cluster(), 3)
    await put(cluster, cluster.managers[0], "before", 1)
    added = [await cluster.add_manager(), await cluster.add_manager()]  # now 5 voters
    leader = await cluster.leader()
    async with cluster.client(leader) as client:
        status = await client.raft_status()
    assert len(status["voters"]) == 5 and all(m.raft_id in status["voters"] for m in added)
    await put(cluster, added[1], "after-join", 2)
    assert await read_all(cluster, added[0]) == {"before": 1, "after-join": 2}

    target = next(m for m in cluster.managers if m is not leader)
    async with cluster.client(leader) as client:
        await client.transfer_leadership(target.raft_id)
    assert await cluster.leader() is target

    victim = next(m for m in cluster.managers if m is not target)
    async with cluster.client(target) as client:
        status = await client.remove_member(victim.raft_id)
    assert victim.raft_id not in status["voters"] and len(status["voters"]) == 4
    cluster.stop(victim)
    await put(cluster, target, "after-remove", 3)


async def test_a_new_manager_installs_a_snapshot_larger_than_64_mib(local_cluster):
    cluster = await started(local_cluster(snapshot_interval=40), 3)
    blob = "x" * (1 << 20)
    for i in range(80):  # 80 MiB of state; the snapshot at index 80 holds 76 of the blobs
        await put(cluster, cluster.managers[0], f"blob{i:02d}", blob)
    newcomer = await cluster.add_manager()
    async with cluster.client(newcomer, 60.0) as client:
        objects = await client.list("kv")
    assert len(objects) == 80 and all(len(o["data"]) == len(blob) for o in objects)
    snapshots = list((newcomer.state_dir / "raft").rglob("*.snap"))
    assert snapshots and max(p.stat().st_size for p in snapshots) > 64 << 20


async def test_no_written_value_appears_in_plaintext_in_any_file(local_cluster):
    cluster = await started(local_cluster(snapshot_interval=10), 3)
    marker = "PLAINTEXT-MARKER-5f3c9a1e"
    for i in range(15):  # enough to take a snapshot too
        await put(cluster, cluster.managers[i % 3], f"secret{i}", f"{marker}-{i}")
    cluster.close()
    needles = [marker.encode(), marker.encode("utf-16-le")]
    files = [p for m in cluster.managers for p in m.state_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".snap" for p in files)
    for path in files:
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), f"{path} holds the value in plaintext"


async def test_refused_connections_and_garbage_do_not_stop_the_cluster(local_cluster, tmp_path):
    cluster = await started(local_cluster(), 3)
    target = cluster.managers[0]
    host, port = "127.0.0.1", target.port
    frame = PREAMBLE_RAFT + struct.pack(">I", 5) + b"hello"  # a Raft stream carrying a garbage frame

    def attempt(context: ssl.SSLContext | None, payload: bytes) -> str:
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                conn = context.wrap_socket(raw, server_hostname=host) if context else raw
                conn.sendall(payload)
                conn.settimeout(5)
                return "answered" if conn.recv(1) else "closed"
            except (ssl.SSLError, ConnectionError, OSError) as exc:
                return f"refused: {type(exc).__name__}"

    root, _ = StateDir(target.state_dir).load_certificates()
    other_ca = RootCA.create()
    foreign = other_ca.issue("intruder0000000000000000a", NodeRole.MANAGER, cluster.cluster_id)
    worker = cluster.root.issue("worker00000000000000000000", NodeRole.WORKER, cluster.cluster_id)
    manager_cert = cluster.root.issue("rogue000000000000000000000", NodeRole.MANAGER, cluster.cluster_id)

    def trusting(node):
        context = client_ssl_context(root, node)
        context.check_hostname = False
        return context

    assert attempt(None, frame) != "answered"  # plaintext
    assert attempt(trusting(foreign), frame) != "answered"  # certificate from another CA
    assert attempt(trusting(worker), frame) != "answered"  # a worker may not speak Raft
    assert attempt(trusting(manager_cert), PREAMBLE_RAFT + struct.pack(">I", 1 << 31)) != "answered"  # oversized
    assert attempt(trusting(manager_cert), frame) != "answered"  # garbage from a valid manager

    async with cluster.client(target) as client:
        status = await client.raft_status()
    refused = {**status["transport"]["connections_refused"], **status["listener_refused"]}
    assert refused.get("not_manager") == 1  # the worker
    assert status["transport"]["frames_rejected"].get("malformed") == 2  # garbage and oversized
    await put(cluster, target, "still-serving", True)
    assert (await read_all(cluster, target))["still-serving"] is True
    assert target.running()


async def test_a_flipped_byte_mid_wal_stops_the_node_and_a_torn_tail_is_repaired(local_cluster):
    cluster = await started(local_cluster(), 3)
    for i in range(30):
        await put(cluster, cluster.managers[0], f"k{i}", i)
    victim = cluster.managers[2]
    cluster.stop(victim)
    # A crash mid-write: this node starts appending an entry it never got to acknowledge, and only part of
    # the record reaches the disk. (Cutting an older record would destroy an entry it had acknowledged,
    # which only corruption, not a crash, can do.)
    state_dir = StateDir(victim.state_dir)
    with RaftStorage.open(state_dir.raft, state_dir.load_kek()) as storage:
        persisted = storage.load()
        last_entry = persisted.entries[-1]
        storage.save(None, [Entry(last_entry.index + 1, last_entry.term, EntryType.NORMAL, b"x" * 64)], None)
    last = sorted((victim.state_dir / "raft").rglob("*.wal"))[-1]
    last.write_bytes(last.read_bytes()[:-7])
    cluster.start(victim)
    await cluster.wait_ready(victim)
    await put(cluster, cluster.managers[0], "after-repair", 1)
    assert (await read_all(cluster, victim))["after-repair"] == 1
    cluster.stop(victim)

    content = bytearray(last.read_bytes())
    content[len(content) // 2] ^= 0x40  # corruption in the middle: committed data would be lost
    last.write_bytes(bytes(content))
    cluster.start(victim)
    victim.process.wait(20)
    assert victim.process.returncode != 0
    log = cluster.log_tail(victim, 5)
    assert str(last) in log and "offset" in log


async def test_force_new_cluster_recovers_a_cluster_that_lost_quorum(local_cluster):
    cluster = await started(local_cluster(), 3)
    for i in range(10):
        await put(cluster, cluster.managers[0], f"k{i}", i)
    survivor = cluster.managers[0]
    for manager in cluster.managers:
        cluster.kill(manager)
    cluster.start(survivor, "--force-new-cluster")
    await cluster.wait_ready(survivor)
    assert await cluster.leader(among=[survivor]) is survivor
    async with cluster.client(survivor) as client:
        status = await client.raft_status()
    assert status["voters"] == [survivor.raft_id]
    await put(cluster, survivor, "after", 1)
    assert await read_all(cluster, survivor) == {**{f"k{i}": i for i in range(10)}, "after": 1}
