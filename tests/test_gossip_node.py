"""GossipNode: the gossip cores on real UDP and TCP sockets, loopback only (127.0.0.1, kernel-chosen ports).

Timers are shortened (probe every 0.1 s, suspicion in well under a second) so failures are detected in
a second or two; every assertion waits with a generous timeout instead of measuring timing.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

import pytest

from raftswarm.gossip.membership import MemberEvent, MembershipConfig
from raftswarm.gossip.node import FRAME_HEADER, GossipConfig, GossipNode
from raftswarm.gossip.table import TableConfig, TableEvent
from raftswarm.gossip.wire import Keyring, Message, MessageType

KEY = b"k" * 32
NEW_KEY = b"n" * 32
OTHER_KEY = b"x" * 32
FAST = GossipConfig(
    membership=MembershipConfig(
        probe_interval=0.1,
        probe_timeout=0.05,
        gossip_interval=0.05,
        suspicion_mult=3,
        push_pull_interval=1.0,
        dead_retention=10.0,
    ),
    tables=TableConfig(sync_interval=0.5),
    tick_interval=0.02,
    join_retry_interval=0.3,
    stream_timeout=1.0,
    leave_timeout=0.5,
)


async def eventually(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Recorder:
    def __init__(self) -> None:
        self.members: list[MemberEvent] = []
        self.tables: list[TableEvent] = []


@pytest.fixture
async def start_node():
    nodes: list[GossipNode] = []

    async def start(name: str, seeds: list[GossipNode] = (), key: bytes = KEY, **kw) -> tuple[GossipNode, Recorder]:
        rec = Recorder()
        node = GossipNode(
            name,
            "127.0.0.1",
            0,
            keyring=kw.pop("keyring", None) or Keyring([key]),
            seeds=[s.addr for s in seeds],
            config=FAST,
            **{"on_member": rec.members.append, "on_table": rec.tables.append, **kw},
        )
        await node.start()
        nodes.append(node)
        return node, rec

    yield start
    for node in nodes:
        await node.close(leave=False)


def names(node: GossipNode) -> set[str]:
    return {m.name for m in node.members()}


async def cluster(start_node, n: int, **kw) -> list[tuple[GossipNode, Recorder]]:
    seed = await start_node("n0", **kw)
    rest = [await start_node(f"n{i}", seeds=[seed[0]], **kw) for i in range(1, n)]
    everyone = [seed, *rest]
    expected = {f"n{i}" for i in range(n)}
    await eventually(lambda: all(names(node) == expected for node, _ in everyone))
    return everyone


def send_datagram(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ("127.0.0.1", port))


async def test_nodes_joining_through_one_seed_all_see_each_other_with_their_meta(start_node):
    nodes = await cluster(start_node, 4, meta=b"10.0.0.1")
    for node, _ in nodes:
        assert node.port != 0 and node.addr == f"127.0.0.1:{node.port}"
        assert {m.meta for m in node.members()} == {b"10.0.0.1"}
    seed, seed_rec = nodes[0]
    assert {e.name for e in seed_rec.members if e.kind == "join"} == {"n1", "n2", "n3"}
    assert seed.stats["streams_in"] >= 3  # the joins' push/pull went over TCP
    assert seed.stats["packets_in"] > 0


async def test_a_node_started_before_its_seed_joins_once_the_seed_is_up(start_node):
    # Reserve a port for the seed by starting it once, closing it, and starting the joiner against it.
    placeholder, _ = await start_node("seed")
    port = placeholder.port
    await placeholder.close(leave=False)
    joiner, _ = await start_node("joiner", seeds=[placeholder])
    await asyncio.sleep(0.5)
    assert names(joiner) == {"joiner"}
    seed = GossipNode("seed", "127.0.0.1", port, keyring=Keyring([KEY]), config=FAST)
    await seed.start()
    try:
        await eventually(lambda: names(joiner) == {"joiner", "seed"} and names(seed) == {"joiner", "seed"})
    finally:
        await seed.close()


async def test_entries_reach_only_the_nodes_on_their_network(start_node):
    (a, _), (b, rec_b), (c, rec_c) = await cluster(start_node, 3)
    a.join_network("blue")
    b.join_network("blue")
    c.join_network("red")
    await eventually(lambda: "n1" in a.nodes_on("blue") and "n0" in b.nodes_on("blue"))
    a.create_entry("blue", "endpoints", "web.1", b"10.0.1.2")
    c.create_entry("red", "endpoints", "db.1", b"10.0.2.2")
    await eventually(lambda: b.entries("blue", "endpoints") == {"web.1": b"10.0.1.2"})
    a.update_entry("blue", "endpoints", "web.1", b"10.0.1.3")
    await eventually(lambda: b.entries("blue", "endpoints") == {"web.1": b"10.0.1.3"})
    await asyncio.sleep(0.6)  # a full sync interval: anti-entropy must not leak entries either
    assert c.entries("blue", "endpoints") == {}
    assert a.entries("red", "endpoints") == {} and b.entries("red", "endpoints") == {}
    assert {e.network for e in rec_c.tables} == {"red"}
    assert {e.network for e in rec_b.tables} == {"blue"}
    a.delete_entry("blue", "endpoints", "web.1")
    await eventually(lambda: b.entries("blue", "endpoints") == {})
    assert [e.kind for e in rec_b.tables] == ["create", "update", "delete"]


async def test_a_node_joining_a_network_late_gets_its_existing_entries(start_node):
    (a, _), (b, _), (c, _) = await cluster(start_node, 3)
    a.join_network("blue")
    a.create_entry("blue", "endpoints", "web.1", b"10.0.1.2")
    b.join_network("blue")
    await eventually(lambda: b.entries("blue", "endpoints") == {"web.1": b"10.0.1.2"})
    assert c.entries("blue", "endpoints") == {}


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful-leave", "crash"])
async def test_a_departed_node_is_seen_gone_and_its_entries_deleted(start_node, graceful):
    nodes = await cluster(start_node, 4)
    for node, _ in nodes:
        node.join_network("blue")
    gone, _ = nodes[3]
    await eventually(lambda: all(len(node.nodes_on("blue")) == 4 for node, _ in nodes))
    gone.create_entry("blue", "endpoints", "web.3", b"10.0.1.9")
    survivors = nodes[:3]
    await eventually(lambda: all(n.entries("blue", "endpoints") == {"web.3": b"10.0.1.9"} for n, _ in survivors))
    await gone.close(leave=graceful)
    await eventually(lambda: all("n3" not in names(n) for n, _ in survivors))
    await eventually(lambda: all(n.entries("blue", "endpoints") == {} for n, _ in survivors))
    kinds = {e.kind for _, rec in survivors for e in rec.members if e.name == "n3"} - {"join", "suspect", "update"}
    assert kinds == ({"leave"} if graceful else {"dead"})
    for _, rec in survivors:
        assert [(e.kind, e.key) for e in rec.tables if e.owner == "n3"][-1] == ("delete", "web.3")


async def test_a_node_with_another_key_cannot_join_and_its_packets_are_counted(start_node):
    (a, _), (b, _) = await cluster(start_node, 2)
    intruder, _ = await start_node("intruder", seeds=[a], key=OTHER_KEY)
    await eventually(lambda: a.stats["streams_dropped"] >= 2)  # the first join and at least one retry
    assert names(a) == names(b) == {"n0", "n1"}
    assert names(intruder) == {"intruder"}


async def test_key_rotation_keeps_the_cluster_talking(start_node):
    nodes = await cluster(start_node, 3)
    for node, _ in nodes:
        node.join_network("blue")
    await eventually(lambda: all(len(node.nodes_on("blue")) == 3 for node, _ in nodes))
    # The rotation a manager drives: new key primary with the old kept, then the old removed.
    for node, _ in nodes:
        node.set_keyring(Keyring([NEW_KEY, KEY]))
    a, b, c = (node for node, _ in nodes)
    a.create_entry("blue", "endpoints", "after-rotation", b"1")
    await eventually(lambda: c.entries("blue", "endpoints") == {"after-rotation": b"1"})
    for node in (a, b, c):
        node.set_keyring(Keyring([NEW_KEY]))
    dropped = sum(n.stats["packets_dropped"] + n.stats["streams_dropped"] for n in (a, b, c))
    newcomer, _ = await start_node("n3", seeds=[b], key=NEW_KEY)  # holds only the new key
    await eventually(lambda: all(names(n) == {"n0", "n1", "n2", "n3"} for n in (a, b, c, newcomer)))
    b.create_entry("blue", "endpoints", "old-key-gone", b"2")
    await eventually(lambda: a.entries("blue", "endpoints").get("old-key-gone") == b"2")
    await asyncio.sleep(0.5)
    assert all(names(n) == {"n0", "n1", "n2", "n3"} for n in (a, b, c, newcomer))
    assert sum(n.stats["packets_dropped"] + n.stats["streams_dropped"] for n in (a, b, c)) == dropped


async def test_garbage_on_the_port_is_dropped_and_counted_and_the_node_keeps_working(start_node):
    (a, _), (b, _) = await cluster(start_node, 2)
    a.join_network("blue")
    b.join_network("blue")
    send_datagram(a.port, b"")
    send_datagram(a.port, os.urandom(200))
    send_datagram(a.port, os.urandom(1401))  # over the UDP packet limit
    # Sealed with the right key but a stream type sent over UDP.
    send_datagram(a.port, Keyring([KEY]).seal(Message(MessageType.ATTACHMENTS, {"attachments": []})))
    await eventually(lambda: a.stats["packets_dropped"] >= 4)
    # TCP: a frame claiming 4 GiB, random bytes in a frame, and a connection that sends half a header.
    for payload in (FRAME_HEADER.pack(0xFFFFFFFF), FRAME_HEADER.pack(50) + os.urandom(50), b"\x00\x00"):
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        await reader.read()  # the node closes the connection
        writer.close()
    await eventually(lambda: a.stats["streams_dropped"] >= 3)
    a.create_entry("blue", "endpoints", "web.1", b"10.0.1.2")
    await eventually(lambda: b.entries("blue", "endpoints") == {"web.1": b"10.0.1.2"})
    assert names(a) == names(b) == {"n0", "n1"}


async def test_a_failing_callback_is_logged_not_fatal(start_node):
    def explode(event):
        raise RuntimeError("owner bug")

    a, _ = await start_node("n0", on_member=explode, on_table=explode)
    b, _ = await start_node("n1", seeds=[a])
    await eventually(lambda: names(a) == names(b) == {"n0", "n1"})
    assert a.stats["callback_errors"] >= 1
    # The tables still heard about n1 and a table event's callback failing does not stop the entry.
    a.join_network("blue")
    b.join_network("blue")
    await eventually(lambda: "n1" in a.nodes_on("blue"))
    b.create_entry("blue", "endpoints", "web.1", b"10.0.1.2")
    await eventually(lambda: a.entries("blue", "endpoints") == {"web.1": b"10.0.1.2"})


async def test_set_meta_reaches_the_other_members(start_node):
    (a, _), (b, rec_b) = await cluster(start_node, 2)
    a.set_meta(b"10.9.9.9")
    await eventually(lambda: {m.name: m.meta for m in b.members()}["n0"] == b"10.9.9.9")
    assert any(e.kind == "update" and e.name == "n0" for e in rec_b.members)


async def test_close_ends_every_task_and_frees_the_port(start_node):
    (a, _), (b, _) = await cluster(start_node, 2)
    port = a.port
    await a.close()
    assert not a._tasks
    again = GossipNode("n0", "127.0.0.1", port, keyring=Keyring([KEY]), seeds=[b.addr], config=FAST)
    await again.start()  # both UDP and TCP on the same port are free again
    try:
        await eventually(lambda: names(again) == {"n0", "n1"})
    finally:
        await again.close()
