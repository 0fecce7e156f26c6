"""The asyncio edges of gossip: one `GossipNode` per daemon, on UDP and TCP 7946.

It wires the sans-I/O cores the way `simulation` does, with real sockets and the event loop's clock:
`Membership` and `NetworkTables` are ticked every `tick_interval`; their packets are sealed with the
keyring and sent over UDP, except `wire.STREAM_TYPES`, which go over TCP; membership events feed the
tables (`on_member_event`), and both kinds of events go to the owner's callbacks.

A TCP stream is one short-lived connection per message, as memberlist's push/pull: the sender writes one
frame (a 4-byte big-endian length, then the sealed message), the receiver answers on the same connection
with whatever reply the cores make (a PUSH_PULL or NETWORK_SYNC with `reply` set) and closes it. Replying
on the connection means a TCP peer's ephemeral source port never has to be mapped back to its gossip
address. Every read and write is bounded by `stream_timeout` and frames by `wire.MAX_STREAM_BYTES`.

Anything received that does not open with the keyring (garbage, another cluster's key, tampered,
oversized, a type on the wrong transport) is dropped and counted in `stats`; nothing a peer sends stops
the node. While a node knows no live member but itself it retries its seeds every `join_retry_interval`,
as networkdb retries its bootstrap nodes -- at start, and after a partition in which every other member
was declared dead.

Addresses are "ip:port" (or "[ipv6]:port") literals: a peer's advertised address is never resolved, so a
peer cannot make the node block on DNS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..supervision import TaskOwner
from .membership import Member, MemberEvent, Membership, MembershipConfig, Step
from .table import NetworkTables, TableConfig, TableEvent, TableStep
from .wire import MAX_PACKET_BYTES, MAX_STREAM_BYTES, STREAM_TYPES, GossipProtocolError, Keyring, Message, MessageType

log = logging.getLogger(__name__)

GOSSIP_PORT = 7946
FRAME_HEADER = struct.Struct(">I")

MAX_STREAMS_IN_FLIGHT = 64
"""Outbound TCP messages at once. Streams are push/pull and network syncs, a handful per sync interval;
beyond this the peers are unreachable and piling up connections would only exhaust file descriptors."""

MAX_INBOUND_STREAMS = 64
"""Inbound TCP connections at once, so a peer cannot make us hold sockets without bound (memberlist
serves streams one goroutine each, unbounded; we prefer to refuse)."""

_TABLE_TYPES = frozenset(
    {MessageType.TABLE_EVENT, MessageType.NETWORK_EVENT, MessageType.NETWORK_SYNC, MessageType.ATTACHMENTS}
)
_STREAM_REPLY = "stream-reply"
"""The `from_addr` given to the cores for a message read from a TCP stream: packets they address to it are
written back on that connection. It has no port, so it never equals a member's address."""


@dataclass(frozen=True)
class GossipConfig:
    """Timers of the node. The defaults are memberlist's LAN and networkdb's numbers; tests shorten them."""

    membership: MembershipConfig = field(default_factory=MembershipConfig)
    tables: TableConfig = field(default_factory=TableConfig)
    tick_interval: float = 0.05  # finer than the shortest core timer (gossip_interval, 0.2 s)
    join_retry_interval: float = 5.0
    stream_timeout: float = 5.0  # memberlist's TCPTimeout is 10 s; a LAN push/pull takes milliseconds
    leave_timeout: float = 1.0  # how long close() waits for the leave packets to leave the socket


MemberCallback = Callable[[MemberEvent], None]
TableCallback = Callable[[TableEvent], None]


class GossipNode:
    """One node's gossip: membership of the cluster and the tables of the networks it is attached to.

    Call everything from the event loop that ran `start()`. Callbacks are called on that loop, in the
    order the events happen; an exception in one is logged and counted, never fatal. `close()` leaves the
    cluster (unless `leave=False`, which is what a crash looks like to the others) and ends every task
    and socket the node owns.
    """

    def __init__(
        self,
        name: str,
        bind_host: str,
        port: int = GOSSIP_PORT,
        *,
        keyring: Keyring,
        seeds: list[str] | tuple[str, ...] = (),
        meta: bytes = b"",
        config: GossipConfig | None = None,
        on_member: MemberCallback | None = None,
        on_table: TableCallback | None = None,
        advertise_host: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.config = config or GossipConfig()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "packets_in",
                "packets_out",
                "packets_dropped",
                "streams_in",
                "streams_out",
                "streams_dropped",
                "sends_failed",
                "callback_errors",
            ),
            0,
        )
        self._bind_host = bind_host
        self._advertise_host = advertise_host or bind_host
        _parse_addr(_format_addr(self._advertise_host, 1))  # an IP literal, or fail now rather than per packet
        self._keyring = keyring
        self._seeds = list(seeds)
        self._meta = meta
        self._on_member = on_member
        self._on_table = on_table
        self._rng = rng or random.Random()
        self._membership: Membership | None = None
        self._tables = NetworkTables(name, self.config.tables)
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_endpoint: _DatagramEndpoint | None = None
        self._server: asyncio.Server | None = None
        self._tasks = TaskOwner(f"gossip node {name}", log)
        self._streams_out = 0
        self._inbound: set[asyncio.StreamWriter] = set()
        self._next_join = 0.0
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def addr(self) -> str:
        """The address other members reach us at ("ip:port"); with port 0 it is known after `start()`."""
        return _format_addr(self._advertise_host, self.port)

    async def start(self) -> None:
        """Bind UDP and TCP on (bind_host, port), start ticking and join the seeds."""
        if self._membership is not None:
            raise RuntimeError(f"gossip node {self.name} is already started")
        await self._bind()
        self._membership = Membership(self.name, self.addr, self.config.membership, self._meta)
        log.info("gossip node %s listening on %s (udp+tcp)", self.name, self.addr)
        self._maybe_rejoin(self._now())
        self._tasks.spawn(self._tick_loop(), f"gossip-tick-{self.name}")

    async def close(self, leave: bool = True) -> None:
        """Leave the cluster (tell every live member we are gone), then close every socket and end every
        task. With `leave=False` the node just goes silent, as if its host had crashed."""
        if self._closing:
            return
        if leave and self._membership is not None and not self._membership.left:
            self._apply(self._membership.leave(self._now()))
        self._closing = True
        if self._server is not None:
            self._server.close()
        await self._tasks.close()
        # An inbound connection whose task was cancelled before it first ran never closed its socket.
        for writer in list(self._inbound):
            writer.transport.abort()
        self._inbound.clear()
        if self._udp is not None:
            self._udp.close()  # sends what is still buffered (the leave) before the socket goes
            try:
                async with asyncio.timeout(self.config.leave_timeout):
                    await self._udp_endpoint.closed
            except TimeoutError:
                self._udp.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        # With port 0 the kernel picks a free UDP port, which may be taken for TCP: then try another.
        for attempt in range(8 if self.port == 0 else 1):
            udp, endpoint = await loop.create_datagram_endpoint(
                lambda: _DatagramEndpoint(self), local_addr=(self._bind_host, self.port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._server = await asyncio.start_server(
                    self._accept_stream, self._bind_host, port, backlog=MAX_INBOUND_STREAMS
                )
            except OSError as exc:
                udp.close()
                if self.port != 0 or exc.errno != errno.EADDRINUSE or attempt == 7:
                    raise
                continue
            self._udp, self._udp_endpoint, self.port = udp, endpoint, port
            return

    # -- the owner's API ---------------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Members alive or suspected (this node included), as copies."""
        return [dataclasses.replace(m) for m in self._running().alive_members()]

    def nodes_on(self, network: str) -> set[str]:
        """The nodes known to be attached to `network` (this node too, if it is)."""
        return self._tables.nodes_on(network)

    def join_network(self, network: str) -> None:
        self._running()
        self._apply(self._tables.join_network(network, self._now()))

    def leave_network(self, network: str) -> None:
        self._running()
        self._apply(self._tables.leave_network(network, self._now()))

    def create_entry(self, network: str, table: str, key: str, value: bytes) -> None:
        """Raises KeyError if the node is not on `network` or the key exists, ValueError if it is too big."""
        self._running()
        self._apply(self._tables.create(network, table, key, value, self._now()))

    def update_entry(self, network: str, table: str, key: str, value: bytes) -> None:
        self._running()
        self._apply(self._tables.update(network, table, key, value, self._now()))

    def delete_entry(self, network: str, table: str, key: str) -> None:
        self._running()
        self._apply(self._tables.delete(network, table, key, self._now()))

    def entries(self, network: str, table: str) -> dict[str, bytes]:
        """The live entries of one table of a network this node is on: key -> value."""
        return self._tables.get(network, table)

    def set_keyring(self, keyring: Keyring) -> None:
        """Seal with `keyring`'s primary key from now on and open only what its keys open. During a rotation
        keep the previous key in it until every node seals with the new one."""
        self._keyring = keyring

    def set_meta(self, meta: bytes) -> None:
        """Change this node's meta; the change is gossiped with a new incarnation."""
        self._apply(self._running().set_meta(meta, self._now()))

    # -- driving the cores -------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        membership = self._running()
        while True:
            await asyncio.sleep(self.config.tick_interval)
            now = self._now()
            self._maybe_rejoin(now)
            self._apply(membership.tick(now, self._rng))
            self._apply(self._tables.tick(now, self._rng))

    def _maybe_rejoin(self, now: float) -> None:
        membership = self._running()
        if not self._seeds or membership.left or now < self._next_join or len(membership.alive_members()) > 1:
            return
        self._next_join = now + self.config.join_retry_interval
        self._apply(membership.join(self._seeds, now))

    def _apply(self, step: Step | TableStep, replies: list[Message] | None = None) -> None:
        for addr, message in step.packets:
            if addr == _STREAM_REPLY:
                if replies is not None:
                    replies.append(message)
            else:
                self._send(addr, message)
        for event in step.events:
            if isinstance(event, MemberEvent):
                self._callback(self._on_member, event)
                self._apply(self._tables.on_member_event(event, self._now()))
            else:
                self._callback(self._on_table, event)

    def _receive(self, data: bytes, from_addr: str, stream: bool) -> list[Message]:
        """Open and handle one packet or stream frame; returns the replies to write back on a stream."""
        kind = "streams" if stream else "packets"
        try:
            message = self._keyring.open(data)
        except GossipProtocolError as exc:
            self._drop(kind, from_addr, str(exc))
            return []
        if (message.type in STREAM_TYPES) != stream:
            self._drop(kind, from_addr, f"{message.type.name} on the wrong transport")
            return []
        self.stats[f"{kind}_in"] += 1
        now, reply_to = self._now(), _STREAM_REPLY if stream else from_addr
        replies: list[Message] = []
        if message.type in _TABLE_TYPES:
            self._apply(self._tables.receive(reply_to, message, now), replies)
        else:
            self._apply(self._running().receive(reply_to, message, now, self._rng), replies)
        return replies

    def _callback(self, callback: Callable[[Any], None] | None, event: MemberEvent | TableEvent) -> None:
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("gossip node %s: callback for %s failed", self.name, event)

    # -- sending -----------------------------------------------------------------------------------------

    def _send(self, addr: str, message: Message) -> None:
        try:
            host, port = _parse_addr(addr)
            sealed = self._keyring.seal(message)
        except (ValueError, GossipProtocolError) as exc:
            self._send_failed(addr, message, str(exc))
            return
        if message.type not in STREAM_TYPES:
            if self._udp is None or self._udp.is_closing():
                return
            self._udp.sendto(sealed, (host, port))
            self.stats["packets_out"] += 1
        elif self._closing:
            return
        elif self._streams_out >= MAX_STREAMS_IN_FLIGHT:
            self._send_failed(addr, message, f"{MAX_STREAMS_IN_FLIGHT} streams already in flight")
        else:
            self._tasks.spawn(self._send_stream(addr, host, port, message.type, sealed), f"gossip-stream-{addr}")

    async def _send_stream(self, addr: str, host: str, port: int, kind: MessageType, sealed: bytes) -> None:
        self._streams_out += 1
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.config.stream_timeout):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(FRAME_HEADER.pack(len(sealed)) + sealed)
                await writer.drain()
                self.stats["streams_out"] += 1
                while (data := await _read_frame(reader)) is not None:
                    self._receive(data, addr, stream=True)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, GossipProtocolError) as exc:
            self.stats["sends_failed"] += 1
            log.debug(
                "gossip node %s: %s stream to %s failed: %s", self.name, kind.name, addr, str(exc) or type(exc).__name__
            )
        finally:
            self._streams_out -= 1
            if writer is not None:
                writer.transport.abort()

    def _send_failed(self, addr: str, message: Message, why: str) -> None:
        self.stats["sends_failed"] += 1
        log.warning("gossip node %s: not sending %s to %s: %s", self.name, message.type.name, addr, why)

    # -- receiving ---------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        from_addr = _format_addr(addr[0], addr[1])
        if self._membership is None or self._closing:
            return
        if len(data) > MAX_PACKET_BYTES:
            self._drop("packets", from_addr, f"datagram of {len(data)} bytes exceeds {MAX_PACKET_BYTES}")
            return
        self._receive(data, from_addr, stream=False)

    def _accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self._membership is None or len(self._inbound) >= MAX_INBOUND_STREAMS:
            self._drop("streams", _peer(writer), "inbound connection refused (closing or at the limit)")
            writer.transport.abort()
            return
        self._inbound.add(writer)
        self._tasks.spawn(self._serve_stream(reader, writer), f"gossip-serve-{_peer(writer)}")

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        try:
            async with asyncio.timeout(self.config.stream_timeout):
                data = await _read_frame(reader)
                if data is None:
                    return
                for reply in self._receive(data, peer, stream=True):
                    try:
                        sealed = self._keyring.seal(reply)
                    except GossipProtocolError as exc:
                        self._send_failed(peer, reply, str(exc))
                        continue
                    writer.write(FRAME_HEADER.pack(len(sealed)) + sealed)
                    await writer.drain()
                    self.stats["streams_out"] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, GossipProtocolError) as exc:
            self._drop("streams", peer, str(exc) or type(exc).__name__)
        finally:
            self._inbound.discard(writer)
            writer.transport.abort()

    def _drop(self, kind: str, from_addr: str, why: str) -> None:
        # Debug, not warning: anyone who can reach the port can send garbage, and a log line per packet
        # would let them fill the disk. The counters show it.
        self.stats[f"{kind}_dropped"] += 1
        log.debug("gossip node %s: dropped %s from %s: %s", self.name, kind[:-1], from_addr, why)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _running(self) -> Membership:
        if self._membership is None:
            raise RuntimeError(f"gossip node {self.name} is not started; await start() first")
        return self._membership

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


class _DatagramEndpoint(asyncio.DatagramProtocol):
    def __init__(self, node: GossipNode) -> None:
        self._node = node
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._node._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a member that went away; the failure detector deals with it.
        log.debug("gossip node %s: udp error: %s", self._node.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One length-prefixed frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = FRAME_HEADER.unpack(header)
    if length > MAX_STREAM_BYTES:
        raise GossipProtocolError(f"gossip stream frame of {length} bytes exceeds {MAX_STREAM_BYTES}")
    return await reader.readexactly(length)


def _parse_addr(addr: str) -> tuple[str, int]:
    """("ip", port) from "ip:port" or "[ipv6]:port"; ValueError for anything else (host names included)."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError(f"gossip address {addr!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"gossip address {addr!r} has no valid port")
    return host, number


def _format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    return _format_addr(peername[0], peername[1]) if peername else "an unknown address"
