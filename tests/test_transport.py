"""The Raft transport: managers of one cluster exchange messages over mutual TLS 1.3; every other party is
refused; bad input closes only the connection it came on, and the node keeps serving the good peers.

Everything runs on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from raftswarm.ca.certificates import (
    NodeCertificate,
    NodeRole,
    RootCA,
    client_ssl_context,
    new_cluster_id,
    new_node_id,
    server_ssl_context,
)
from raftswarm.raft.messages import ConfState, Entry, Message, MessageType, SnapshotMeta
from raftswarm.raft.transport import PREAMBLE_RAFT, RaftTransport, raft_id_of
from raftswarm.raft.wire import MAX_FRAME_BYTES, encode_frame
from raftswarm.node.manager_role import raft_peer_identity

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def root() -> RootCA:
    return RootCA.create()


@pytest.fixture(scope="module")
def cluster_id() -> str:
    return new_cluster_id()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds; fail the test if it does not within `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class Node:
    """A manager's transport and the messages it received."""

    def __init__(self, root: RootCA, cluster_id: str, certificate: NodeCertificate, port: int = 0) -> None:
        self.certificate = certificate
        self.node_id = certificate.identity.node_id
        self.raft_id = raft_id_of(self.node_id)
        self.inbox: list[Message] = []
        self.on_message: Callable[[Message], None] = self.inbox.append
        self.transport = RaftTransport(
            node_id=self.node_id,
            identify=raft_peer_identity(cluster_id),
            server_hostname="swarm-manager",
            server_ssl=server_ssl_context(root.certificate, certificate),
            client_ssl=client_ssl_context(root.certificate, certificate),
            listen_host=HOST,
            listen_port=port,
            on_message=lambda message: self.on_message(message),
        )

    @property
    def port(self) -> int:
        return self.transport.port

    @property
    def stats(self):
        return self.transport.stats

    def knows(self, *others: Node) -> None:
        for other in others:
            self.transport.add_peer(other.raft_id, HOST, other.port)

    def send(self, to: Node, **fields) -> None:
        self.transport.send(
            [Message(fields.pop("type", MessageType.HEARTBEAT), to=to.raft_id, frm=self.raft_id, **fields)]
        )


@pytest.fixture
async def start_node(root, cluster_id):
    """Start a manager transport with a fresh certificate (or the one given); all are closed after the test."""
    nodes: list[Node] = []

    async def start(certificate: NodeCertificate | None = None, port: int = 0) -> Node:
        certificate = certificate or root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
        node = Node(root, cluster_id, certificate, port)
        await node.transport.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.transport.close()


async def connect_as(node: Node, root_cert, certificate: NodeCertificate):
    """A raw TLS client presenting `certificate`, trusting `root_cert`, that opens a Raft stream (writes the
    preamble): what an attacker or a buggy peer has."""
    reader, writer = await asyncio.open_connection(
        HOST, node.port, ssl=client_ssl_context(root_cert, certificate), server_hostname=NodeRole.MANAGER.value
    )
    writer.write(PREAMBLE_RAFT)
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server has ended the connection (EOF, or a TLS alert such as a refused certificate);
    False if it is still open after 5 seconds."""
    try:
        async with asyncio.timeout(5):
            return await reader.read() == b""
    except TimeoutError:  # an OSError too, so caught first
        return False
    except OSError:
        return True


def heartbeat(frm: int, to: int, commit: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, commit=commit)


# -- managers of one cluster talk ----------------------------------------------------------------------


async def test_three_managers_exchange_messages_both_ways(start_node):
    a, b, c = [await start_node() for _ in range(3)]
    a.knows(b, c)
    b.knows(a, c)
    c.knows(a, b)
    for sender in (a, b, c):
        for receiver in (a, b, c):
            if sender is not receiver:
                sender.send(receiver, term=7, commit=sender.port)
    await eventually(lambda: all(len(n.inbox) == 2 for n in (a, b, c)))
    for receiver in (a, b, c):
        assert {m.frm for m in receiver.inbox} == {n.raft_id for n in (a, b, c) if n is not receiver}
        assert all(m.to == receiver.raft_id and m.term == 7 for m in receiver.inbox)
        assert receiver.stats.connections_accepted == 2


async def test_a_one_mib_snapshot_chunk_arrives_intact(start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)
    chunk = os.urandom(1 << 20)
    meta = SnapshotMeta(index=900, term=3, conf_state=ConfState(frozenset({a.raft_id, b.raft_id})))
    a.send(b, type=MessageType.SNAPSHOT, term=3, snapshot_meta=meta, chunk=chunk, done=True)
    await eventually(lambda: b.inbox)
    assert b.inbox[0].chunk == chunk
    assert b.inbox[0].snapshot_meta == meta


async def test_a_burst_of_ten_thousand_messages_arrives_complete_and_in_order(start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)
    a.transport.send(
        [
            Message(MessageType.APPEND, to=b.raft_id, frm=a.raft_id, term=1, index=i, entries=[Entry(i + 1, 1)])
            for i in range(10_000)
        ]
    )
    await eventually(lambda: len(b.inbox) == 10_000, timeout=20)
    assert [m.index for m in b.inbox] == list(range(10_000))
    assert a.stats.frames_out == 10_000 and b.stats.frames_in == 10_000
    # Sent in one call, so queued while the connection opened and written in one go, not 10,000 writes.
    assert a.stats.writes == 1


async def test_a_restarted_peer_is_reconnected_to_and_traffic_continues(root, cluster_id, start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)
    b.knows(a)
    a.send(b, commit=1)
    b.send(a, commit=1)
    await eventually(lambda: b.inbox and a.inbox)

    port = b.port
    await b.transport.close()
    restarted = await start_node(certificate=b.certificate, port=port)
    restarted.knows(a)

    # Raft keeps sending (heartbeats every tick); some are lost while the peer is down, later ones get through.
    commit = 2
    while not restarted.inbox:
        a.send(restarted, commit=commit)
        commit += 1
        await asyncio.sleep(0.02)
        assert commit < 500, "the restarted peer never received a message"
    restarted.send(a, commit=99)
    await eventually(lambda: a.inbox[-1].commit == 99)
    assert a.stats.reconnects >= 1
    commits = [m.commit for m in restarted.inbox]
    assert commits == sorted(commits)


async def test_close_ends_every_task_and_connection(start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)
    b.knows(a)
    a.send(b)
    b.send(a)
    await eventually(lambda: a.inbox and b.inbox)
    await a.transport.close()
    await b.transport.close()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, a.port)


# -- sending never blocks and never raises for network trouble ------------------------------------------


async def test_messages_to_unknown_or_unreachable_peers_are_dropped_and_counted(start_node):
    a = await start_node()
    a.transport.send([heartbeat(a.raft_id, raft_id_of("nobody"))])
    assert a.stats.messages_dropped.get("unknown_peer", 0) == 1

    listener = await asyncio.start_server(lambda r, w: None, HOST, 0)
    free_port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    ghost = raft_id_of("ghost")
    a.transport.add_peer(ghost, HOST, free_port)
    for _ in range(5):
        a.transport.send([heartbeat(a.raft_id, ghost)])
        await asyncio.sleep(0.05)
    await eventually(lambda: a.stats.connect_failures.get("network", 0) >= 2)
    assert a.stats.messages_dropped.get("unreachable", 0) >= 1


async def test_a_server_holding_another_nodes_certificate_gets_nothing(start_node):
    a, b = await start_node(), await start_node()
    impostor_id = raft_id_of("the-node-we-meant")
    a.transport.add_peer(impostor_id, HOST, b.port)
    a.transport.send([heartbeat(a.raft_id, impostor_id)])
    await eventually(lambda: a.stats.connect_failures.get("wrong_peer", 0) == 1)
    await asyncio.sleep(0.05)
    assert b.inbox == []


async def test_a_server_with_a_worker_certificate_is_not_sent_raft_messages(root, cluster_id, start_node, caplog):
    a = await start_node()
    worker = root.issue(new_node_id(), NodeRole.WORKER, cluster_id)
    received = []

    async def record(reader, writer):
        received.append(await reader.read())

    server = await asyncio.start_server(record, HOST, 0, ssl=server_ssl_context(root.certificate, worker))
    try:
        worker_raft_id = raft_id_of(worker.identity.node_id)
        a.transport.add_peer(worker_raft_id, HOST, server.sockets[0].getsockname()[1])
        a.transport.send([heartbeat(a.raft_id, worker_raft_id)])
        await eventually(lambda: a.stats.connect_failures.get("tls", 0) == 1)
        assert "not valid for 'swarm-manager'" in caplog.text
        assert a.stats.frames_out == 0 and received == []
    finally:
        server.close()
        await server.wait_closed()


# -- who may speak ------------------------------------------------------------------------------------


async def test_a_plaintext_client_is_refused_even_with_a_valid_frame(start_node):
    a = await start_node()
    reader, writer = await asyncio.open_connection(HOST, a.port)
    writer.write(encode_frame(heartbeat(raft_id_of("anyone"), a.raft_id)))
    assert await closed_by_server(reader)
    writer.close()
    await eventually(lambda: a.stats.connections_refused.get("tls_handshake", 0) == 1)
    assert a.inbox == []


async def test_a_certificate_from_another_ca_is_refused(root, cluster_id, start_node, caplog):
    a = await start_node()
    foreign = RootCA.create().issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    reader, writer = await connect_as(a, root.certificate, foreign)
    writer.write(encode_frame(heartbeat(raft_id_of(foreign.identity.node_id), a.raft_id)))
    assert await closed_by_server(reader)
    writer.close()
    await eventually(lambda: a.stats.connections_refused.get("tls_handshake", 0) == 1)
    assert "unable to get local issuer certificate" in caplog.text
    assert a.inbox == [] and a.stats.connections_accepted == 0


async def test_an_expired_manager_certificate_is_refused(root, cluster_id, start_node, caplog):
    a = await start_node()
    expired = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id, now=datetime.now(UTC) - timedelta(days=91))
    reader, writer = await connect_as(a, root.certificate, expired)
    writer.write(encode_frame(heartbeat(raft_id_of(expired.identity.node_id), a.raft_id)))
    assert await closed_by_server(reader)
    writer.close()
    await eventually(lambda: a.stats.connections_refused.get("tls_handshake", 0) == 1)
    assert "certificate has expired" in caplog.text
    assert a.inbox == []


@pytest.mark.parametrize(
    ("role", "same_cluster", "reason"),
    [(NodeRole.WORKER, True, "not_manager"), (NodeRole.MANAGER, False, "other_cluster")],
    ids=["worker-of-this-cluster", "manager-of-another-cluster"],
)
async def test_only_managers_of_this_cluster_may_speak_raft(root, cluster_id, start_node, role, same_cluster, reason):
    a = await start_node()
    certificate = root.issue(new_node_id(), role, cluster_id if same_cluster else new_cluster_id())
    reader, writer = await connect_as(a, root.certificate, certificate)
    writer.write(encode_frame(heartbeat(raft_id_of(certificate.identity.node_id), a.raft_id)))
    assert await closed_by_server(reader)
    writer.close()
    await eventually(lambda: a.stats.connections_refused[reason] == 1)
    assert a.inbox == [] and a.stats.connections_accepted == 0


# -- bad input from an authenticated manager ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad_bytes",
    [struct.pack(">I", 3) + b"\xc1\xc1\xc1", struct.pack(">I", MAX_FRAME_BYTES + 1)],
    ids=["garbage-frame", "oversized-length-prefix"],
)
async def test_a_bad_frame_closes_only_its_connection_and_the_node_keeps_serving(
    root, cluster_id, start_node, bad_bytes
):
    a, good = await start_node(), await start_node()
    good.knows(a)
    rogue = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    reader, writer = await connect_as(a, root.certificate, rogue)
    writer.write(encode_frame(heartbeat(raft_id_of(rogue.identity.node_id), a.raft_id, commit=1)))
    await eventually(lambda: len(a.inbox) == 1)  # authenticated: accepted until it misbehaves

    writer.write(bad_bytes)
    assert await closed_by_server(reader)
    writer.close()
    assert a.stats.frames_rejected == {"malformed": 1}

    good.send(a, commit=2)
    await eventually(lambda: len(a.inbox) == 2)
    assert a.inbox[-1].frm == good.raft_id


@pytest.mark.parametrize("lie", ["wrong_sender", "wrong_recipient"])
async def test_a_frame_must_come_from_its_certificate_and_be_for_us(root, cluster_id, start_node, lie):
    a, other = await start_node(), await start_node()
    rogue = root.issue(new_node_id(), NodeRole.MANAGER, cluster_id)
    frm = other.raft_id if lie == "wrong_sender" else raft_id_of(rogue.identity.node_id)
    to = other.raft_id if lie == "wrong_recipient" else a.raft_id
    reader, writer = await connect_as(a, root.certificate, rogue)
    writer.write(encode_frame(heartbeat(frm, to)))
    assert await closed_by_server(reader)
    writer.close()
    assert a.stats.frames_rejected == {lie: 1}
    assert a.inbox == []


async def test_a_failing_message_handler_does_not_stop_delivery(start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)

    def fail_on_first(message: Message) -> None:
        if message.commit == 1:
            raise RuntimeError("handler bug")
        b.inbox.append(message)

    b.on_message = fail_on_first
    a.send(b, commit=1)
    a.send(b, commit=2)
    await eventually(lambda: b.inbox)
    assert [m.commit for m in b.inbox] == [2]
    assert b.stats.handler_errors == 1


# -- raft IDs -----------------------------------------------------------------------------------------


async def test_stats_are_plain_data_for_status_output(start_node):
    a = await start_node()
    reader, writer = await asyncio.open_connection(HOST, a.port)
    writer.write(b"not tls")
    assert await closed_by_server(reader)
    writer.close()
    a.transport.send([heartbeat(a.raft_id, raft_id_of("nobody"))] * 2)
    await eventually(lambda: a.stats.connections_refused)
    stats = dataclasses.asdict(a.stats)
    assert stats["connections_refused"] == {"tls_handshake": 1}
    assert stats["messages_dropped"] == {"unknown_peer": 2}
    assert json.loads(json.dumps(stats)) == stats


def test_raft_ids_are_stable_positive_63_bit_and_distinct():
    # Pinned: Raft IDs are persisted in logs and snapshots, so the derivation must never change.
    assert raft_id_of("wjoxna8e4o2w5va3pl0ehy3ax") == 1246146635358921035
    ids = {raft_id_of(new_node_id()) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(0 < i < 1 << 63 for i in ids)


async def test_urgent_messages_are_written_at_once_the_others_by_the_pump_all_in_order(start_node):
    a, b = await start_node(), await start_node()
    a.knows(b)
    a.transport.send([heartbeat(a.raft_id, b.raft_id, 1)])
    await eventually(lambda: b.inbox and a.transport._peers[b.raft_id].writable is not None)
    writes = a.stats.writes
    a.transport.send([heartbeat(a.raft_id, b.raft_id, 2)], urgent=False)
    assert a.stats.writes == writes, "a message that is not urgent waits for the pump"
    a.transport.send([heartbeat(a.raft_id, b.raft_id, 3), heartbeat(a.raft_id, b.raft_id, 4)])
    assert a.stats.writes == writes + 1, "an urgent one is written at once, in one write with what waited"
    await eventually(lambda: len(b.inbox) == 4)
    assert [m.commit for m in b.inbox] == [1, 2, 3, 4]
