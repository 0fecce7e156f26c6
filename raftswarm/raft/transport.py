"""Raft messages between managers: length-prefixed frames (`wire`) over TCP with mutual TLS 1.3.

Connections. Each side sends only on its own outbound connection to a peer and only receives on the
connections peers open to it, so no connection is ever shared by two writers and ordering per peer is
simply the order of one TCP stream. The outbound connection is opened lazily, when there is first
something to send, and re-opened after a failure with a backoff of 50 ms doubling to 2 s; the backoff
resets once a connection has stayed up for 2 s (a peer that accepts the handshake and then drops us at
once must not make us reconnect in a tight loop).

Who may speak. TLS verifies both certificates against the cluster root CA (a plaintext client, a
certificate of another CA or an expired one fails the handshake). After it, the peer's certificate must
have OU "swarm-manager" and O = our cluster ID, or the connection is closed. The sender's Raft ID comes
from the certificate (`raft_id_of(CN)`), never from the message: a frame whose `frm` is not the
certificate's Raft ID, or whose `to` is not ours, is a protocol violation and closes the connection, as a
malformed or oversized frame does. Outbound, the server must hold a manager certificate (checked as the
TLS server name) for the node we meant to reach, so a reused address never receives another node's
messages. Every refusal is logged and counted in `stats`; none of them stops the transport. An inbound
stream that carries nothing for `IDLE_TIMEOUT`, or whose frame is not complete `FRAME_TIMEOUT` after it
began, is closed too: a peer holds a connection, and a part-read frame, only while it keeps sending.

Loss. Raft retransmits, so the transport drops instead of blocking: `send` never waits and never raises
for network trouble. A message for an unknown peer, for a peer in its reconnect backoff, or for a peer
whose queue is full is dropped and counted. A full queue drops the new message (as etcd's rafthttp
does): what is queued keeps its order, and the core's flow control and probing recover the rest. When a
connection is lost, what was queued for it is dropped too; by the time a new connection is up, Raft has
sent fresher messages.

Writes are coalesced: each wakeup of a peer's sender takes every frame queued since the last one and
writes them with one `write` and one `drain`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RaftswarmError
from ..supervision import TaskOwner
from ..tlsaccept import Accepted, Acceptor
from .messages import Message
from .wire import MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
"""Seconds for TCP connect plus TLS handshake to a peer; longer than any loopback or LAN handshake, short
enough that a blackholed peer is retried (with backoff) well within an election timeout's multiple."""

HANDSHAKE_TIMEOUT = 5.0
"""Seconds an inbound connection may take to complete TLS; bounds what an unauthenticated client can hold."""

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0

MAX_QUEUED_BYTES = 64 << 20
"""Per peer. Twice the core's default max_inflight_bytes (32 MiB), so a full replication window plus
snapshot chunks and heartbeats fit while a dead peer cannot make us buffer without bound."""

MAX_QUEUED_FRAMES = 65_536
"""Per peer. The core keeps at most 256 APPENDs in flight; the rest of the room absorbs bursts of small
messages sent without yielding to the loop, while bounding per-frame overhead."""

MAX_INBOUND_CONNECTIONS = 256
"""Inbound connections at once, authenticated or not. A cluster has a handful of managers, each keeping
one connection to us; the cap keeps a connection flood from exhausting file descriptors."""

IDLE_TIMEOUT = 60.0
"""Seconds an inbound stream may carry nothing before it is closed. A leader heartbeats its followers every
heartbeat tick (100 ms by default) and they answer, so a live stream between a leader and a follower is never
this quiet; 60 s is 30 maximum election timeouts. What reaches it is a stream from a peer that vanished
without a FIN, or a follower's stream to another follower left from its last election (it reconnects when it
next has something to send)."""

FRAME_TIMEOUT = 30.0
"""Seconds in which an inbound frame must be complete once its first byte came: a full 16 MiB frame at about
4.5 Mbit/s, while APPENDs and snapshot chunks are 1 MiB. It bounds how long a stalled or dribbling peer keeps
a part-read frame buffered (etcd's rafthttp gives each read 5 s, ConnReadTimeout)."""

READ_CHUNK = 256 << 10
"""Bytes per read from a connection; large enough that a burst or a 1 MiB snapshot chunk takes few reads."""

TCP_USER_TIMEOUT_MS = 10_000
"""Close an outbound connection whose sent data stays unacknowledged this long (a peer host that vanished
without a FIN), instead of waiting for the kernel's default of about 15 minutes."""

PREAMBLE_RAFT = b"RSWRAFT1"
"""What a Raft stream writes first, after TLS: port 2377 also carries other channels (see node.listener)."""

STABLE_CONNECTION = BACKOFF_MAX
"""A connection that lasted this long counts as a success and resets the reconnect backoff."""


def raft_id_of(node_id: str) -> int:
    """The Raft ID of a node: a stable positive 63-bit integer derived from its node ID (its certificate CN),
    so a receiver can check a message's `frm` against the certificate of the connection it came on."""
    raft_id = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big") >> 1
    return raft_id or 1  # 0 means "nobody" to the core


class PeerRefused(RaftswarmError):
    """A TLS-authenticated peer that may not exchange Raft messages with us (`reason` is the stats key)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


PeerIdentify = Callable[[bytes], str]
"""Given a peer's TLS-verified certificate (DER), the node ID it proves if that node may speak Raft with us;
raises `PeerRefused` (reason not_manager, other_cluster, bad_certificate, ...) otherwise. The node supplies it:
what a certificate says is the CA's business, not Raft's."""

@dataclass
class TransportStats:
    """Counters a test or an operator reads to see what the transport did with traffic, good and bad.

    Counts by reason are plain dicts (a reason appears once it has happened), so `dataclasses.asdict` and
    JSON give them as they are."""

    frames_out: int = 0
    bytes_out: int = 0
    writes: int = 0
    """Socket writes; frames_out / writes shows how well sends are coalesced."""
    frames_in: int = 0
    """Messages delivered to `on_message`."""
    bytes_in: int = 0
    connections_accepted: int = 0
    """Inbound connections authenticated as a manager of our cluster."""
    connections_refused: dict[str, int] = field(default_factory=dict)
    """Inbound, by reason: tls_handshake, not_manager, other_cluster, bad_certificate, too_many_connections."""
    frames_rejected: dict[str, int] = field(default_factory=dict)
    """Inbound, by reason: malformed (including oversized), wrong_sender, wrong_recipient. Each closed its connection."""
    connections_timed_out: dict[str, int] = field(default_factory=dict)
    """Inbound streams closed by a deadline, by reason: idle (nothing for IDLE_TIMEOUT), slow_frame (a frame
    not complete FRAME_TIMEOUT after it began)."""
    connects: int = 0
    """Outbound connections established."""
    reconnects: int = 0
    """Outbound connections established after an earlier one to the same peer failed or was lost."""
    connect_failures: dict[str, int] = field(default_factory=dict)
    """Outbound, by reason: timeout, tls, network, not_manager, other_cluster, bad_certificate, wrong_peer."""
    messages_dropped: dict[str, int] = field(default_factory=dict)
    """Outbound, by reason: unknown_peer, unreachable, queue_full, too_large."""
    handler_errors: int = 0
    """Exceptions raised by `on_message` (logged; the connection carries on)."""


class _Peer:
    """One peer we send to: its address, its outbound queue of encoded frames, and the task that drains it."""

    def __init__(self, raft_id: int, host: str, port: int) -> None:
        self.raft_id = raft_id
        self.host = host
        self.port = port
        self.frames: collections.deque[bytes] = collections.deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.retry_at = 0.0
        """While there is no connection and time.monotonic() is before this, messages are dropped."""
        self.connected = False
        self.task: asyncio.Task[None] | None = None
        self.writable: asyncio.StreamWriter | None = None
        """The connection's writer while its pump waits for frames with nothing unsent: `send` may write to it
        at once instead of waking the pump (a task switch per message saved on the write path)."""

    def take_all(self) -> bytes:
        data = b"".join(self.frames)
        self.frames.clear()
        self.queued_bytes = 0
        return data

    def discard_queue(self) -> int:
        dropped = len(self.frames)
        self.frames.clear()
        self.queued_bytes = 0
        return dropped


@dataclass
class _ReadState:
    frame_deadline: float | None = None
    """While the decoder holds part of a frame: when it must be complete."""


@dataclass(eq=False)
class _Outbound:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lost: str | None = None
    """Why the connection is gone, once it is; set by its watcher."""


class RaftTransport:
    """Sends and receives Raft messages for one manager node over mutual TLS.

    `on_message` is called on the event loop for every accepted inbound message, in the order the peer sent
    them. Call everything from the event loop; `close()` ends every task and connection it owns.
    """

    def __init__(
        self,
        *,
        node_id: str,
        identify: PeerIdentify,
        server_hostname: str,
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext,
        listen_host: str,
        listen_port: int,
        on_message: Callable[[Message], None],
        max_frame_bytes: int = MAX_FRAME_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
    ) -> None:
        self.node_id = node_id
        self.raft_id = raft_id_of(node_id)
        self.port = listen_port
        self.stats = TransportStats()
        self._identify = identify
        self._server_hostname = server_hostname
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._listen_host = listen_host
        self._on_message = on_message
        self._max_frame_bytes = max_frame_bytes
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._acceptor: Acceptor | None = None
        self._peers: dict[int, _Peer] = {}
        self._inbound: dict[asyncio.StreamWriter | Accepted, str | None] = {}
        """Every inbound connection, with the node ID it authenticated as (None before): its `Accepted` until
        its TLS handshake is done (on our own port), its stream afterwards."""
        self._tasks = TaskOwner(f"raft transport of node {node_id}", log)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, listen: bool = True) -> None:
        """Listen for peers. With listen_port 0 the kernel picks a port; `port` gives it afterwards. With
        `listen=False` a shared listener owns the port and hands streams to `accept_stream`."""
        if not listen:
            return
        self._acceptor = Acceptor(self._listen_host, self.port, self._accept, backlog=MAX_INBOUND_CONNECTIONS)
        await self._acceptor.start()
        self.port = self._acceptor.port
        log.info("raft transport of node %s listening on %s:%d", self.node_id, self._listen_host, self.port)

    async def close(self) -> None:
        """Stop listening, close every connection and end every task the transport owns."""
        if self._closed:
            return
        self._closed = True
        if self._acceptor is not None:
            await self._acceptor.close()
        self._peers.clear()
        await self._tasks.close()
        # A connection accepted just before close() may have a task that was cancelled before it first ran,
        # so its own cleanup never ran either.
        for connection in list(self._inbound):
            _abort(connection)
        self._inbound.clear()

    # -- peers and sending -------------------------------------------------------------------------------

    def add_peer(self, raft_id: int, host: str, port: int) -> None:
        """Where to send messages for `raft_id`. The connection is opened when there is something to send."""
        if self._closed:
            raise RuntimeError("the raft transport is closed")
        current = self._peers.get(raft_id)
        if current is not None:
            if (current.host, current.port) == (host, port):
                return
            self.remove_peer(raft_id)
        peer = _Peer(raft_id, host, port)
        peer.task = self._tasks.spawn(self._run_peer(peer), f"raft-send-{raft_id:x}")
        self._peers[raft_id] = peer

    def remove_peer(self, raft_id: int) -> None:
        """Forget a peer: drop what is queued for it and close the connection to it."""
        peer = self._peers.pop(raft_id, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()

    def send(self, messages: list[Message], urgent: bool = True) -> None:
        """Queue messages for their peers (`to`) and return at once. Never raises for network trouble:
        what cannot be sent is dropped and counted in `stats.messages_dropped`, and Raft retries. Urgent
        messages are written at once if the connection has nothing unsent; the others by the peer's pump,
        once the loop has run what was ready before. A peer gets its messages in the order they were sent."""
        now = time.monotonic()
        dropped = self.stats.messages_dropped
        touched: set[_Peer] = set()
        for message in messages:
            peer = self._peers.get(message.to)
            if peer is None:
                _count(dropped, "unknown_peer")
                continue
            if not peer.connected and now < peer.retry_at:
                _count(dropped, "unreachable")
                continue
            if len(peer.frames) >= MAX_QUEUED_FRAMES:
                _count(dropped, "queue_full")
                continue
            try:
                frame = encode_frame(message)
            except FrameError as exc:
                log.error("dropping a %s message to %x: %s", message.type.name, message.to, exc)
                _count(dropped, "too_large")
                continue
            if peer.frames and peer.queued_bytes + len(frame) > MAX_QUEUED_BYTES:
                _count(dropped, "queue_full")
                continue
            peer.frames.append(frame)
            peer.queued_bytes += len(frame)
            touched.add(peer)
        for peer in touched:
            writer = peer.writable
            idle = writer is not None and not writer.transport.is_closing() and not writer.transport.get_write_buffer_size()
            if urgent and idle:
                self._write(peer, writer)
            else:
                peer.wake.set()

    def _write(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        count = len(peer.frames)
        data = peer.take_all()
        writer.write(data)
        self.stats.writes += 1
        self.stats.frames_out += count
        self.stats.bytes_out += len(data)

    async def _run_peer(self, peer: _Peer) -> None:
        """The sender of one peer: connect when there is something to send, write, reconnect after failures."""
        delay = BACKOFF_MIN
        failed_before = False
        while True:
            while not peer.frames:
                peer.wake.clear()
                await peer.wake.wait()
            try:
                outbound = await self._connect(peer)
            except (OSError, PeerRefused) as exc:  # OSError includes TimeoutError and ssl.SSLError
                reason = _failure_reason(exc)
                _count(self.stats.connect_failures, reason)
                level = logging.DEBUG if failed_before else logging.WARNING
                log.log(
                    level,
                    "cannot connect to raft peer %x at %s:%d (%s): %s",
                    peer.raft_id,
                    peer.host,
                    peer.port,
                    reason,
                    exc,
                )
            else:
                self.stats.connects += 1
                if failed_before:
                    self.stats.reconnects += 1
                connected_at = time.monotonic()
                peer.connected = True
                watcher = self._tasks.spawn(self._watch_outbound(peer, outbound), f"raft-watch-{peer.raft_id:x}")
                try:
                    await self._pump(peer, outbound)
                except OSError as exc:
                    outbound.lost = f"write failed: {exc}"
                finally:
                    peer.connected = False
                    watcher.cancel()
                    outbound.writer.transport.abort()
                log.warning(
                    "lost connection to raft peer %x at %s:%d: %s", peer.raft_id, peer.host, peer.port, outbound.lost
                )
                if time.monotonic() - connected_at >= STABLE_CONNECTION:
                    delay = BACKOFF_MIN
            failed_before = True
            _count(self.stats.messages_dropped, "unreachable", peer.discard_queue())
            peer.retry_at = time.monotonic() + delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect(self, peer: _Peer) -> _Outbound:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                peer.host,
                peer.port,
                ssl=self._client_ssl,
                server_hostname=self._server_hostname,
                ssl_handshake_timeout=CONNECT_TIMEOUT,
                limit=READ_CHUNK,
            )
        try:
            node_id = self._authenticate(writer)
            if raft_id_of(node_id) != peer.raft_id:
                raise PeerRefused(
                    f"the server is node {node_id} (raft ID {raft_id_of(node_id):x}), "
                    f"not the peer we meant to reach",
                    "wrong_peer",
                )
            _tune_socket(writer, user_timeout=True)
            writer.write(PREAMBLE_RAFT)
        except BaseException:
            writer.transport.abort()
            raise
        return _Outbound(reader, writer)

    async def _pump(self, peer: _Peer, outbound: _Outbound) -> None:
        """Write everything queued in one go per wakeup until the connection is lost."""
        writer = outbound.writer
        while True:
            while not peer.frames and outbound.lost is None:
                peer.wake.clear()
                peer.writable = writer
                try:
                    await peer.wake.wait()
                finally:
                    peer.writable = None
            if outbound.lost is not None:
                return
            if peer.frames:
                self._write(peer, writer)
            await writer.drain()

    async def _watch_outbound(self, peer: _Peer, outbound: _Outbound) -> None:
        """Notice when the peer ends an outbound connection. The peer never writes on it, so anything it
        sends is a protocol violation (TLS 1.3 also delivers the server's refusal of our certificate here)."""
        try:
            data = await outbound.reader.read(1)
            outbound.lost = "peer wrote on a send-only connection" if data else "closed by the peer"
        except OSError as exc:
            outbound.lost = str(exc) or type(exc).__name__
        peer.writable = None
        peer.wake.set()

    # -- receiving ---------------------------------------------------------------------------------------

    def _accept(self, accepted: Accepted) -> None:
        # Called as the connection is accepted, nothing of it read yet (`tlsaccept`): counted before its TLS.
        if self._closed or len(self._inbound) >= MAX_INBOUND_CONNECTIONS:
            self._refuse(accepted.peername, "too_many_connections", "inbound connection limit reached")
            accepted.abort()
            return
        self._inbound[accepted] = None
        self._tasks.spawn(self._serve_inbound(accepted), "raft-receive")

    async def _serve_inbound(self, accepted: Accepted) -> None:
        writer = None
        try:
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    reader, writer = await accepted.handshake(self._server_ssl, limit=READ_CHUNK)
                self._inbound.pop(accepted, None)
                self._inbound[writer] = None
                node_id = self._authenticate(writer)
            except (OSError, TimeoutError) as exc:
                self._refuse(accepted.peername, "tls_handshake", str(exc) or type(exc).__name__)
                return
            except PeerRefused as exc:
                self._refuse(accepted.peername, exc.reason, str(exc))
                return
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    preamble = await reader.readexactly(len(PREAMBLE_RAFT))
            except (asyncio.IncompleteReadError, TimeoutError, OSError):
                preamble = b""
            if preamble != PREAMBLE_RAFT:
                self._refuse(accepted.peername, "not_raft", f"expected the Raft preamble, got {preamble!r}")
                return
            await self._receive_stream(reader, writer, node_id)
        finally:
            accepted.abort()
            self._inbound.pop(accepted, None)
            if writer is not None:
                self._inbound.pop(writer, None)

    async def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Receive a Raft stream that a shared listener (node.listener) accepted: TLS done, preamble read.
        The peer must still be a manager of our cluster."""
        try:
            node_id = self._authenticate(writer)
        except PeerRefused as exc:
            self._refuse(writer.get_extra_info("peername"), exc.reason, str(exc))
            return
        self._inbound[writer] = None
        try:
            await self._receive_stream(reader, writer, node_id)
        finally:
            self._inbound.pop(writer, None)

    async def _receive_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node_id: str) -> None:
        self.stats.connections_accepted += 1
        # A peer keeps one connection to us; a new one means the old is dead (it reconnected).
        for other, holder in list(self._inbound.items()):
            if holder == node_id and other is not writer:
                _abort(other)
        self._inbound[writer] = node_id
        _tune_socket(writer, user_timeout=False)
        await self._receive(reader, node_id)

    async def _receive(self, reader: asyncio.StreamReader, peer: str) -> None:
        """Read frames until the connection ends, is idle `idle_timeout`, holds a part-read frame for
        `frame_timeout`, or breaks a rule. One timeout spans the reads: it moves only when it must come sooner
        (a frame began) or has fallen behind the idle deadline by more than a 60th of it -- a timer per read
        costs more than a small message's whole handling."""
        loop = asyncio.get_running_loop()
        window = asyncio.timeout_at(loop.time() + self._idle_timeout)
        state = _ReadState()
        try:
            async with window:
                await self._read_frames(reader, peer, window, state)
        except TimeoutError:  # the window's; the socket's own come out of the read as OSError, handled inside
            reason = "idle" if state.frame_deadline is None else "slow_frame"
            _count(self.stats.connections_timed_out, reason)
            log.info("closing raft connection from node %s: %s", peer, reason)

    async def _read_frames(
        self, reader: asyncio.StreamReader, peer: str, window: asyncio.Timeout, state: _ReadState
    ) -> None:
        decoder = FrameDecoder(self._max_frame_bytes)
        sender = raft_id_of(peer)
        stats = self.stats
        loop = asyncio.get_running_loop()
        slack = self._idle_timeout / 60
        while True:
            try:
                data = await reader.read(READ_CHUNK)
            except OSError as exc:
                log.info("raft connection from node %s failed: %s", peer, exc)
                return
            if not data:
                return
            stats.bytes_in += len(data)
            try:
                messages = decoder.feed(data)
            except FrameError as exc:
                self._reject(peer, "malformed", str(exc))
                return
            now = loop.time()
            if not decoder.buffered:
                state.frame_deadline = None
            elif messages or state.frame_deadline is None:
                # The part-read frame began in this read.
                state.frame_deadline = now + self._frame_timeout
            wanted = state.frame_deadline if state.frame_deadline is not None else now + self._idle_timeout
            scheduled = window.when()
            if scheduled is None or wanted < scheduled or wanted - scheduled > slack:
                window.reschedule(wanted)
            for message in messages:
                if message.frm != sender:
                    self._reject(
                        peer, "wrong_sender", f"frame claims sender {message.frm:x}, certificate is {sender:x}"
                    )
                    return
                if message.to != self.raft_id:
                    self._reject(peer, "wrong_recipient", f"frame for {message.to:x} reached {self.raft_id:x}")
                    return
                stats.frames_in += 1
                try:
                    self._on_message(message)
                except Exception:
                    stats.handler_errors += 1
                    log.exception("raft message handler failed on a %s from node %s", message.type.name, peer)

    # -- shared ------------------------------------------------------------------------------------------

    def _authenticate(self, writer: asyncio.StreamWriter) -> str:
        """The node ID the peer's (already TLS-verified) certificate proves, if it may speak Raft with us."""
        return self._identify(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))

    def _refuse(self, peername: Any, reason: str, detail: str) -> None:
        _count(self.stats.connections_refused, reason)
        log.warning("refused raft connection from %s (%s): %s", _address(peername), reason, detail)

    def _reject(self, peer: str, reason: str, detail: str) -> None:
        _count(self.stats.frames_rejected, reason)
        log.warning("closing raft connection from node %s (%s): %s", peer, reason, detail)


def _count(counts: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        counts[reason] = counts.get(reason, 0) + n


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, PeerRefused):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    return "network"


def _tune_socket(writer: asyncio.StreamWriter, *, user_timeout: bool) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    # asyncio already sets TCP_NODELAY on TCP transports; set it here so latency never depends on that.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if user_timeout and hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


def _address(peername: Any) -> str:
    return f"{peername[0]}:{peername[1]}" if peername else "an unknown address"


def _abort(connection: asyncio.StreamWriter | Accepted) -> None:
    if isinstance(connection, Accepted):
        connection.abort()
    else:
        connection.transport.abort()
