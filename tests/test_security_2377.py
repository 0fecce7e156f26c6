"""Attacks on TCP 2377 as anyone who can reach the port makes them: connections that say nothing, senders of
one byte at a time, huge length headers, every anonymous slot held while a node tries to join, malformed
requests of every shape, and a removed node that keeps its connections.

Each test runs a real `ClusterListener` (TLS 1.3, certificates from a real CA) with an `RpcServer` and a Raft
transport behind it, in-process on 127.0.0.1. Deadlines are shrunk through constructor parameters so the
tests take seconds; every wait is bounded generously, so a busy machine makes a test slower, not wrong.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftswarm.ca.authority import CertificateAuthority
from raftswarm.ca.certificates import (
    NodeCertificate,
    NodeRole,
    cert_to_pem,
    client_ssl_context,
    new_node_id,
    server_ssl_context,
)
from raftswarm.rpc.channel import (
    ANONYMOUS_LIMITS,
    AUTHENTICATED_LIMITS,
    MAX_ANONYMOUS_RPC_FRAME,
    MAX_RPC_FRAME,
    PREAMBLE_RPC,
    CallerLimits,
    RpcClient,
    RpcError,
    RpcServer,
)
from raftswarm.node.listener import MAX_ANONYMOUS_CONNECTIONS, MAX_ANONYMOUS_PER_SOURCE, ClusterListener, ListenerLimits
from raftswarm.raft.messages import Entry, Message, MessageType
from raftswarm.raft.transport import FRAME_TIMEOUT, IDLE_TIMEOUT, PREAMBLE_RAFT, RaftTransport, raft_id_of
from raftswarm.raft.wire import encode_frame
from raftswarm.node.manager_role import raft_peer_identity

HOST = "127.0.0.1"
MANAGER_NAME = NodeRole.MANAGER.value


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture(scope="module")
def certs(ca) -> dict[str, NodeCertificate]:
    """The listening manager, another manager, and two workers."""
    roles = {
        "server": NodeRole.MANAGER,
        "manager": NodeRole.MANAGER,
        "worker": NodeRole.WORKER,
        "other": NodeRole.WORKER,
    }
    return {name: ca.root.issue(new_node_id(), role, ca.cluster_id) for name, role in roles.items()}


class Port2377:
    """One manager's port 2377: the listener, its RPC methods and its Raft transport, and what they saw."""

    def __init__(
        self,
        ca: CertificateAuthority,
        server: NodeCertificate,
        *,
        limits: ListenerLimits,
        anonymous: CallerLimits,
        authenticated: CallerLimits,
        raft_idle: float,
        raft_frame: float,
    ) -> None:
        self.ca = ca
        self.inbox: list[Message] = []
        self.handled = 0
        self.waiting = 0
        self.rpc = RpcServer(anonymous=anonymous, authenticated=authenticated)
        self.rpc.register("ca.root", self._root, allowed={"anonymous"})
        self.rpc.register("echo", self._echo, allowed={"anonymous", "worker", "manager"})
        self.rpc.register("count", self._count, allowed={"anonymous", "worker", "manager"})
        self.rpc.register("whoami", self._whoami, allowed={"worker", "manager"})
        self.rpc.register("wait", self._wait, allowed={"worker", "manager"})
        server_ssl = server_ssl_context(ca.root.certificate, server)
        server_ssl.verify_mode = ssl.CERT_OPTIONAL  # as the manager's: a joining node has no certificate
        self.transport = RaftTransport(
            node_id=server.identity.node_id,
            identify=raft_peer_identity(ca.cluster_id),
            server_hostname="swarm-manager",
            server_ssl=server_ssl_context(ca.root.certificate, server),
            client_ssl=client_ssl_context(ca.root.certificate, server),
            listen_host=HOST,
            listen_port=0,
            on_message=self.inbox.append,
            idle_timeout=raft_idle,
            frame_timeout=raft_frame,
        )
        self.listener = ClusterListener(
            host=HOST,
            port=0,
            server_ssl=server_ssl,
            cluster_id=ca.cluster_id,
            rpc=self.rpc,
            raft_inbound=self.transport.accept_stream,
            check_peer=lambda identity: self.ca.check_peer(identity),
            limits=limits,
        )

    @property
    def port(self) -> int:
        return self.listener.port

    def remove(self, node_id: str) -> None:
        """`raftswarm node rm`, as the CA state every manager checks certificates against."""
        self.ca = self.ca.block(node_id)

    async def _root(self, identity, params):
        self.handled += 1
        return {"roots": cert_to_pem(self.ca.root.certificate)}

    async def _echo(self, identity, params):
        self.handled += 1
        return params

    async def _count(self, identity, params):
        self.handled += 1
        return len(params["items"])  # KeyError or TypeError for bad params: the caller's mistake

    async def _whoami(self, identity, params):
        self.handled += 1
        return identity.node_id

    async def _wait(self, identity, params):
        self.waiting += 1
        try:
            await asyncio.Event().wait()  # a long poll that never ends on its own
        finally:
            self.waiting -= 1


@pytest.fixture
async def port2377(ca, certs):
    """Start a manager's 2377 with the limits given (the real ones by default); closed after the test."""
    started: list[Port2377] = []

    async def start(
        *,
        limits: ListenerLimits = ListenerLimits(),
        anonymous: CallerLimits = ANONYMOUS_LIMITS,
        authenticated: CallerLimits = AUTHENTICATED_LIMITS,
        raft_idle: float = IDLE_TIMEOUT,
        raft_frame: float = FRAME_TIMEOUT,
    ) -> Port2377:
        swarm = Port2377(
            ca,
            certs["server"],
            limits=limits,
            anonymous=anonymous,
            authenticated=authenticated,
            raft_idle=raft_idle,
            raft_frame=raft_frame,
        )
        await swarm.transport.start(listen=False)
        await swarm.listener.start()
        started.append(swarm)
        return swarm

    yield start
    for swarm in started:
        await swarm.listener.close()
        await swarm.transport.close()


# -- the attacker's tools ---------------------------------------------------------------------------------


def anonymous_context() -> ssl.SSLContext:
    """What anyone has: TLS 1.3, no certificate, trusting whatever the server presents."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def context_of(ca: CertificateAuthority, certificate: NodeCertificate) -> ssl.SSLContext:
    return client_ssl_context(ca.root.certificate, certificate)


async def open_raw(
    port: int, context: ssl.SSLContext | None = None, *, source: str = HOST, preamble: bytes = PREAMBLE_RPC
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection from `source` that has written `preamble` and nothing else."""
    reader, writer = await asyncio.open_connection(
        HOST,
        port,
        ssl=context or anonymous_context(),
        server_hostname=MANAGER_NAME,
        local_addr=(source, 0),
    )
    writer.write(preamble)
    return reader, writer


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def request(**fields: Any) -> bytes:
    return frame(msgpack.packb(fields, use_bin_type=True))


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(10):
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        return msgpack.unpackb(await reader.readexactly(length), raw=False)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True once the server has ended the connection; False if it is still open after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(1 << 16):
                pass
            return True
    except TimeoutError:  # an OSError too, so caught first
        return False
    except OSError:
        return True


async def eventually(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Wait for `condition`; the bound only turns a broken feature into a failure instead of a hang."""
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def call_anonymously(port: int, method: str, params: dict | None = None, *, source: str = HOST) -> Any:
    """A joining node's call: a fresh connection without a certificate, from `source`."""
    reader, writer = await open_raw(port, source=source)
    client = RpcClient(reader, writer)
    try:
        return await client.call(method, params, timeout=10)
    finally:
        await client.close()


async def connect_as(port: int, ca: CertificateAuthority, certificate: NodeCertificate) -> RpcClient:
    return await RpcClient.connect(HOST, port, context_of(ca, certificate), server_hostname=MANAGER_NAME)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


# -- deadlines ---------------------------------------------------------------------------------------------


async def test_connections_that_say_nothing_are_closed_at_their_deadline_and_hold_nothing(port2377, ca, certs):
    swarm = await port2377(
        limits=ListenerLimits(handshake_timeout=1.0),
        anonymous=CallerLimits(MAX_ANONYMOUS_RPC_FRAME, idle_timeout=0.5, frame_timeout=0.5),
    )
    worker = await connect_as(swarm.port, ca, certs["worker"])  # a node's session: its deadline is long
    assert await worker.call("whoami") == certs["worker"].identity.node_id
    no_tls, _ = await asyncio.open_connection(HOST, swarm.port)  # TCP only, never a TLS hello
    no_preamble, _ = await open_raw(swarm.port, preamble=b"")
    no_call, _ = await open_raw(swarm.port)
    one_call, writer = await open_raw(swarm.port)
    writer.write(request(id=1, method="ca.root"))
    assert "roots" in (await read_reply(one_call))["result"]

    for reader in (no_tls, no_preamble, no_call, one_call):
        assert await closed_by_server(reader)
    await eventually(lambda: swarm.listener.connections() == 1, "only the worker's connection to be left")
    assert swarm.listener.refused == {"tls_handshake": 1, "no_preamble": 1}
    assert swarm.rpc.hangups == {"idle": 2}
    assert await worker.call("whoami") == certs["worker"].identity.node_id  # it outlived them all
    await worker.close()


@pytest.mark.parametrize("caller", ["anonymous", "worker"])
async def test_a_sender_of_one_byte_at_a_time_is_cut_by_the_frame_deadline(port2377, ca, certs, caller):
    """Each byte comes well within any idle timeout (which is long here), so only a deadline on the whole
    frame ends it: the frame would take 10 s to arrive, and is cut after 0.5 s."""
    slow = CallerLimits(MAX_ANONYMOUS_RPC_FRAME, idle_timeout=30, frame_timeout=0.5)
    swarm = await port2377(anonymous=slow, authenticated=slow)
    context = None if caller == "anonymous" else context_of(ca, certs["worker"])
    reader, writer = await open_raw(swarm.port, context)
    slowloris = request(id=1, method="echo", params={"pad": "x" * 180})
    sent = 0

    async def dribble() -> None:
        nonlocal sent
        for byte in slowloris:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.05)

    dribbler = asyncio.create_task(dribble())
    try:
        assert await closed_by_server(reader, within=8)
    finally:
        dribbler.cancel()
        await asyncio.gather(dribbler, return_exceptions=True)
    assert sent < len(slowloris)
    assert swarm.rpc.hangups == {"slow_frame": 1}
    assert swarm.handled == 0
    await eventually(lambda: swarm.listener.connections() == 0, "the connection to be forgotten")


async def test_a_big_length_header_without_a_certificate_is_refused_before_any_payload(port2377, ca, certs):
    swarm = await port2377()
    reader, writer = await open_raw(swarm.port)
    writer.write(struct.pack(">I", MAX_RPC_FRAME))  # what a node with a certificate may send; no payload follows
    reply = await read_reply(reader)  # the server did not wait for 8 MiB it would have had to hold
    assert reply["id"] is None and reply["error"]["code"] == "invalid"
    assert f"{MAX_ANONYMOUS_RPC_FRAME}-byte limit" in reply["error"]["message"]
    assert await closed_by_server(reader)
    assert swarm.rpc.hangups == {"oversized": 1}

    # A caller with a certificate has proven more and may send large frames.
    worker = await connect_as(swarm.port, ca, certs["worker"])
    blob = b"x" * (1 << 20)
    assert await worker.call("echo", {"blob": blob}) == {"blob": blob}
    await worker.close()


async def test_a_raft_stream_that_goes_quiet_or_dribbles_a_frame_is_closed(port2377, ca, certs):
    swarm = await port2377(raft_idle=0.5, raft_frame=0.5)
    sender, receiver = raft_id_of(certs["manager"].identity.node_id), swarm.transport.raft_id
    context = context_of(ca, certs["manager"])

    quiet, writer = await open_raw(swarm.port, context, preamble=PREAMBLE_RAFT)
    writer.write(encode_frame(Message(MessageType.HEARTBEAT, to=receiver, frm=sender)))
    await eventually(lambda: len(swarm.inbox) == 1, "the heartbeat to be delivered")
    assert await closed_by_server(quiet)
    assert swarm.transport.stats.connections_timed_out == {"idle": 1}

    dribbling, writer = await open_raw(swarm.port, context, preamble=PREAMBLE_RAFT)
    append = encode_frame(
        Message(MessageType.APPEND, to=receiver, frm=sender, entries=[Entry(index=1, term=1, data=b"e" * 200)])
    )
    sent = 0

    async def dribble() -> None:  # a byte every 20 ms: never idle for 0.5 s, but 5 s for the frame
        nonlocal sent
        for byte in append:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.02)

    dribbler = asyncio.create_task(dribble())
    try:
        assert await closed_by_server(dribbling, within=8)
    finally:
        dribbler.cancel()
        await asyncio.gather(dribbler, return_exceptions=True)
    assert sent < len(append)
    assert swarm.transport.stats.connections_timed_out == {"idle": 1, "slow_frame": 1}
    assert len(swarm.inbox) == 1


# -- holding every slot -------------------------------------------------------------------------------------


async def test_an_attacker_holding_every_anonymous_slot_keeps_out_neither_a_join_nor_a_worker(port2377, ca, certs):
    """With the real limits. The attacker fills the anonymous pool from 8 addresses, one of them the joiner's
    own, half of its connections there in the middle of a frame. A join from its address, and one from a
    ninth, each displace the attacker's oldest connection; its churn from one address displaces only its own."""
    swarm = await port2377()
    sources = [f"127.0.0.{n}" for n in range(1, MAX_ANONYMOUS_CONNECTIONS // MAX_ANONYMOUS_PER_SOURCE + 1)]
    held: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {source: [] for source in sources}

    async def hold(source: str) -> None:
        reader, writer = await open_raw(swarm.port, source=source)
        if source == HOST and len(held[source]) % 2:
            writer.write(struct.pack(">I", 1000) + b"\x83")  # a frame begun, never finished (slowloris)
        held[source].append((reader, writer))

    def anonymous_connections() -> int:
        return swarm.listener.connections("anonymous")

    for source in sources:
        for _ in range(MAX_ANONYMOUS_PER_SOURCE):
            await hold(source)
    await eventually(lambda: anonymous_connections() == MAX_ANONYMOUS_CONNECTIONS, "the pool to be full")

    assert "roots" in await call_anonymously(swarm.port, "ca.root", source=HOST)
    assert swarm.listener.closed == {"displaced": 1}
    assert await closed_by_server(held[HOST][0][0])  # the attacker's oldest at the joiner's address
    await eventually(lambda: anonymous_connections() == MAX_ANONYMOUS_CONNECTIONS - 1, "the join to be gone")
    await hold(HOST)  # the attacker takes the slot back
    await eventually(lambda: anonymous_connections() == MAX_ANONYMOUS_CONNECTIONS, "the pool to be full again")

    assert "roots" in await call_anonymously(swarm.port, "ca.root", source="127.0.0.99")
    assert swarm.listener.closed == {"displaced": 2}

    worker = await connect_as(swarm.port, ca, certs["worker"])
    assert await worker.call("whoami") == certs["worker"].identity.node_id
    await worker.close()

    for _ in range(2 * MAX_ANONYMOUS_PER_SOURCE):
        await hold(HOST)
    for reader, writer in held["127.0.0.2"]:  # the other addresses' connections are all still served
        writer.write(request(id=5, method="ca.root"))
        assert "roots" in (await read_reply(reader))["result"]
    assert anonymous_connections() <= MAX_ANONYMOUS_CONNECTIONS
    for connections in held.values():
        for _, writer in connections:
            writer.transport.abort()


async def test_stalled_tls_handshakes_do_not_keep_out_a_worker(port2377, ca, certs):
    swarm = await port2377(limits=ListenerLimits(max_handshakes=16))
    stalled = []
    for _ in range(16):
        sock = socket.create_connection((HOST, swarm.port))  # connects, and never says a word
        stalled.append(sock)
    await eventually(lambda: swarm.listener.connections("handshake") == 16, "every handshake slot to be held")
    try:
        worker = await connect_as(swarm.port, ca, certs["worker"])
        assert await worker.call("whoami") == certs["worker"].identity.node_id
        await worker.close()
        assert swarm.listener.closed == {"displaced": 1}
    finally:
        for sock in stalled:
            sock.close()


# -- malformed requests -------------------------------------------------------------------------------------


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


MALFORMED = [
    pytest.param(_packed({"id": 1, "method": ["ca.root"]}), 1, id="method-a-list"),
    pytest.param(_packed({"id": 2, "method": {"ca": "root"}}), 2, id="method-a-map"),
    pytest.param(_packed({"id": 3, "method": 7}), 3, id="method-an-int"),
    pytest.param(_packed({"id": 4}), 4, id="no-method"),
    pytest.param(_packed({"id": 5, "method": "ca.root", "params": ["a"]}), 5, id="params-a-list"),
    pytest.param(_packed({"id": 6, "method": "ca.root", "params": "a"}), 6, id="params-a-string"),
    pytest.param(_packed({"id": {"a": 1}, "method": "ca.root"}), None, id="id-a-map"),
    pytest.param(_packed({"id": "1", "method": "ca.root"}), None, id="id-a-string"),
    pytest.param(_packed({"id": 1.5, "method": "ca.root"}), None, id="id-a-float"),
    pytest.param(_packed({"id": 8, "method": "no.such.call"}), 8, id="unknown-method"),
    pytest.param(_packed({"id": 9, "method": "count", "params": {"items": 5}}), 9, id="params-of-the-wrong-type"),
    pytest.param(_packed({"id": 10, "method": "count"}), 10, id="params-missing"),
    pytest.param(_packed([1, "ca.root", {}]), None, id="an-array"),
    pytest.param(_packed(5), None, id="an-int"),
    pytest.param(_packed({1: 2}), None, id="a-map-with-an-int-key"),
    pytest.param(b"", None, id="empty"),
    pytest.param(b"\xc1\xff\x00garbage", None, id="not-msgpack"),
    pytest.param(_packed({"id": 11}) + b"\x00", None, id="trailing-bytes"),
    pytest.param(b"\x91" * 60_000 + b"\xc0", None, id="nested-60000-deep"),
    pytest.param(b"\xdd\xff\xff\xff\xff", None, id="array-claiming-4-billion-items"),
]


@pytest.mark.parametrize("payload, reply_id", MALFORMED)
async def test_a_malformed_request_is_answered_invalid_and_the_connection_keeps_serving(
    port2377, caplog, payload, reply_id
):
    swarm = await port2377()
    reader, writer = await open_raw(swarm.port)
    writer.write(frame(payload))
    reply = await read_reply(reader)
    assert reply["id"] == reply_id
    assert reply["error"]["code"] == "invalid" and reply["error"]["message"]
    writer.write(request(id=12, method="ca.root"))
    assert "roots" in (await read_reply(reader))["result"]
    assert swarm.rpc.hangups == {}
    assert tracebacks(caplog) == []
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: manager\r\n\r\n", b"\xff" * 64, b"SSH-2.0-OpenSSH_9.6\r\n"],
    ids=["http", "ff", "ssh"],
)
async def test_bytes_that_are_not_frames_end_only_their_own_connection(port2377, caplog, garbage):
    swarm = await port2377()
    bystander, bystander_writer = await open_raw(swarm.port)
    reader, writer = await open_raw(swarm.port)
    writer.write(garbage)
    assert await closed_by_server(reader)
    bystander_writer.write(request(id=1, method="ca.root"))
    assert "roots" in (await read_reply(bystander))["result"]
    assert tracebacks(caplog) == []
    bystander_writer.close()


async def test_an_unknown_channel_is_refused(port2377, caplog):
    swarm = await port2377()
    reader, _ = await open_raw(swarm.port, preamble=b"HELLO123")
    assert await closed_by_server(reader)
    assert swarm.listener.refused == {"unknown_channel": 1}
    assert tracebacks(caplog) == []


# -- removed nodes ------------------------------------------------------------------------------------------


async def test_cut_off_closes_every_open_connection_of_the_node_and_no_other(port2377, ca, certs):
    swarm = await port2377()
    worker_id, manager_id = certs["worker"].identity.node_id, certs["manager"].identity.node_id
    idle = await connect_as(swarm.port, ca, certs["worker"])
    assert await idle.call("whoami") == worker_id
    polling = await connect_as(swarm.port, ca, certs["worker"])
    poll = asyncio.create_task(polling.call("wait", timeout=30))
    await eventually(lambda: swarm.waiting == 1, "the long poll to be in progress")
    other = await connect_as(swarm.port, ca, certs["other"])
    manager = await connect_as(swarm.port, ca, certs["manager"])
    raft, raft_writer = await open_raw(swarm.port, context_of(ca, certs["manager"]), preamble=PREAMBLE_RAFT)
    raft_writer.write(
        encode_frame(Message(MessageType.HEARTBEAT, to=swarm.transport.raft_id, frm=raft_id_of(manager_id)))
    )
    await eventually(lambda: len(swarm.inbox) == 1, "the Raft stream to be accepted")

    assert swarm.listener.cut_off(worker_id) == 2
    with pytest.raises(RpcError) as ended:
        await asyncio.wait_for(poll, 5)  # far less than the poll's own 30 s
    assert ended.value.code == "connection"
    await eventually(lambda: swarm.waiting == 0, "the long poll's handler to be cancelled")
    with pytest.raises(RpcError):
        await idle.call("whoami")
    assert await other.call("whoami") == certs["other"].identity.node_id
    assert await manager.call("whoami") == manager_id

    assert swarm.listener.cut_off(manager_id) == 2  # its RPC connection and its Raft stream
    assert await closed_by_server(raft)
    assert swarm.listener.cut_off(worker_id) == 0
    assert swarm.listener.closed == {"cut_off": 4}
    for client in (idle, polling, other, manager):
        await client.close()


async def test_a_removed_node_is_answered_removed_on_its_open_connection_and_on_new_ones(port2377, ca, certs):
    swarm = await port2377()
    worker_id = certs["worker"].identity.node_id
    client = await connect_as(swarm.port, ca, certs["worker"])
    assert await client.call("whoami") == worker_id
    handled = swarm.handled
    swarm.remove(worker_id)

    with pytest.raises(RpcError) as refused:
        await client.call("whoami")
    assert refused.value.code == "removed" and worker_id in str(refused.value)
    with pytest.raises(RpcError) as after:
        await client.call("whoami")
    assert after.value.code == "connection"  # closed after the answer
    await client.close()

    again = await connect_as(swarm.port, ca, certs["worker"])
    with pytest.raises(RpcError) as refused_again:
        await again.call("whoami")
    assert refused_again.value.code == "removed"
    await again.close()
    assert swarm.handled == handled  # no handler ran for the removed node
    assert swarm.listener.refused == {"removed": 2}

    swarm.remove(certs["manager"].identity.node_id)
    raft, _ = await open_raw(swarm.port, context_of(ca, certs["manager"]), preamble=PREAMBLE_RAFT)
    assert await closed_by_server(raft)
    assert swarm.listener.refused == {"removed": 3}
    await eventually(lambda: swarm.listener.connections() == 0, "every connection to be forgotten")


# -- fuzzing the RPC server ----------------------------------------------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_methods = st.sampled_from(["ca.root", "echo", "count", "whoami", "wait", "nope"]) | _values


@st.composite
def _requests(draw) -> tuple[bytes, Any]:
    """A framed request with random fields (each may be missing), or random bytes; and the id a reply
    should carry."""
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=60))
        return frame(payload), None
    fields = {}
    ids = st.integers(-(2**63), 2**64 - 1) | _values
    for name, strategy in (("id", ids), ("method", _methods), ("params", _values)):
        if draw(st.booleans()):
            fields[name] = draw(strategy)
    call_id = fields.get("id")
    valid_id = isinstance(call_id, int) and not isinstance(call_id, bool)
    return request(**fields), call_id if valid_id else None


@pytest.fixture
async def rpc_connection(ca, certs):
    """An RpcServer serving a connection without a certificate, over a socket pair, as the listener would."""
    swarm = Port2377(
        ca,
        certs["server"],
        limits=ListenerLimits(),
        anonymous=ANONYMOUS_LIMITS,
        authenticated=AUTHENTICATED_LIMITS,
        raft_idle=IDLE_TIMEOUT,
        raft_frame=FRAME_TIMEOUT,
    )
    server_end, client_end = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=server_end)
    reader, writer = await asyncio.open_connection(sock=client_end)
    serving = asyncio.create_task(swarm.rpc.serve(server_reader, server_writer, None))
    yield swarm, reader, writer, serving
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    writer.close()
    server_writer.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fuzzed=_requests())
async def test_fuzzed_requests_get_a_result_or_an_error_and_the_server_keeps_answering(
    rpc_connection, caplog, fuzzed
):
    swarm, reader, writer, serving = rpc_connection
    data, reply_id = fuzzed
    writer.write(data)
    reply = await read_reply(reader)
    assert reply["id"] == reply_id
    assert set(reply) in ({"id", "result"}, {"id", "error"})
    if "error" in reply:
        assert reply["error"]["code"] in ("invalid", "unauthorized") and isinstance(reply["error"]["message"], str)
    writer.write(request(id=7, method="echo", params={"still": "here"}))
    assert await read_reply(reader) == {"id": 7, "result": {"still": "here"}}
    assert not serving.done()
    assert swarm.rpc.hangups == {}
    assert tracebacks(caplog) == []
