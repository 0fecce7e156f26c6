"""`ClusterListener`: TCP 2377, where every node-to-manager connection arrives.

TLS 1.3 with the client certificate optional at the TLS layer (so a joining node, which has none yet, can
make its one token-carrying call), but verified against the cluster root whenever one is presented (a
certificate of another CA fails the handshake). After the handshake the client's 8-byte preamble picks the
channel:

- `PREAMBLE_RAFT`: a manager's Raft stream, handed to `raft.transport.RaftTransport`, which refuses anyone
  but a manager of this cluster;
- `PREAMBLE_RPC`: calls (`rpc.channel`), each method allowing only some callers (anonymous, worker, manager).

A certificate of a node removed from the swarm is refused on either channel (`check_peer`), when the
connection opens and again before every call; its first RPC call is answered with error code "removed", so
the node learns why and stops retrying. `cut_off(node_id)` closes a node's open connections at once, for the
moment the swarm removes it.

Bounds. What a peer can make the listener hold depends on what it has proven:

- a new TCP connection has `HANDSHAKE_TIMEOUT` for the TLS handshake and the preamble together, and at most
  `MAX_HANDSHAKES` connections are in that phase at once;
- after TLS, a connection with a certificate of this swarm counts toward `MAX_CONNECTIONS` and its node's
  `MAX_CONNECTIONS_PER_NODE`; one without (a joining node, or anyone who can reach the port) toward
  `MAX_ANONYMOUS_CONNECTIONS` and its source's `MAX_ANONYMOUS_PER_SOURCE` (an IPv4 address, an IPv6 /64);
- on the RPC channel, frame size, idle and per-frame deadlines follow the caller (`rpc.channel.CallerLimits`):
  64 KiB and 10 s without a certificate; Raft streams have the transport's deadlines.

Making room instead of refusing. When a connection finds its quota full, the connection of that quota which
has waited longest for its peer -- not in a call: idle, or dribbling a frame -- is closed to make room; the
new one is refused only if every other is in a call. An attacker holding connections holds old ones, while a
legitimate join is the newest connection of its source and sends its call as soon as TLS is done: it
displaces the attacker's oldest connection instead of being refused, even from the attacker's own address (a
shared NAT; everything on 127.0.0.1 in tests and local clusters). The per-source quota keeps one source from
displacing other sources' connections. Connections with a certificate are only displaced by their own node's
(every node is a member of the swarm). Handshakes have no per-source quota, so that nodes behind one address
reconnecting together after a failover do not displace each other; a legitimate handshake takes
milliseconds, so the oldest one displaced is a stalled one. What this cannot stop is a flood that opens
connections faster than a join completes: that is for rate limits in front of the port.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from ..ca.authority import NodeRemoved, PeerRefused
from ..ca.certificates import CertificateError, NodeIdentity
from ..errors import RaftswarmError
from ..rpc.channel import PREAMBLE_BYTES, PREAMBLE_RPC, REMOVED, RpcServer
from ..raft.transport import PREAMBLE_RAFT
from ..supervision import TaskOwner
from ..tlsaccept import Accepted, Acceptor

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0
"""Seconds for the TLS handshake plus the preamble, together. TLS 1.3 takes one round trip and the preamble
follows at once, so this allows a congested WAN many round trips; it bounds how long a connection that has
proven nothing is held (the Raft transport allows the same)."""

MAX_HANDSHAKES = 256
"""Connections in their TLS handshake or before their preamble's channel is known, from everyone together.
Twice Linux's long-standing default listen backlog (`net.core.somaxconn` = 128): a legitimate handshake
lasts milliseconds, so even every worker reconnecting at once after a failover needs far fewer at any
instant, while stalled ones are displaced oldest first."""

MAX_CONNECTIONS = 1024
"""Connections with a certificate of this swarm, all nodes together. A worker keeps about four (session,
assignments, status reports, logs) and a manager a Raft stream besides, so this serves some 250 nodes; it
must stay under the process's file descriptor limit (RLIMIT_NOFILE), with the anonymous quotas."""

MAX_CONNECTIONS_PER_NODE = 128
"""Connections with one node's certificate: an eighth of `MAX_CONNECTIONS`, so a stolen certificate cannot
take the port from the other nodes (nginx's `limit_conn` per key does this job for HTTP), and far above
what a node uses -- four or five, plus one per `service logs` a manager relays to the leader."""

MAX_ANONYMOUS_CONNECTIONS = 64
"""Connections without a certificate, all sources together. A join holds one for a second at most, so 64
joins at the same instant fit -- more than `cluster up` or a scaling script starts -- while the memory they
can hold is bounded by 64 x the 64 KiB anonymous frame limit, 4 MiB."""

MAX_ANONYMOUS_PER_SOURCE = 8
"""Connections without a certificate from one IPv4 address or IPv6 /64 (one host's or one NAT's joins at
once), as nginx's `limit_conn` per remote address. With `MAX_ANONYMOUS_CONNECTIONS` it takes 8 sources to
fill the anonymous pool, and no single source can displace another's connections."""

_HANDSHAKE = "handshake"
_ANONYMOUS = "anonymous"
_AUTHENTICATED = "authenticated"


@dataclass(frozen=True)
class ListenerLimits:
    """The listener's bounds; the module's constants by default (tests shrink them)."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_handshakes: int = MAX_HANDSHAKES
    max_connections: int = MAX_CONNECTIONS
    max_per_node: int = MAX_CONNECTIONS_PER_NODE
    max_anonymous: int = MAX_ANONYMOUS_CONNECTIONS
    max_anonymous_per_source: int = MAX_ANONYMOUS_PER_SOURCE


@dataclass(eq=False)
class _Connection:
    """One accepted connection, as the listener counts it."""

    accepted: Accepted
    source: str
    """The quota key of its address: an IPv4 address or an IPv6 /64."""
    waiting_since: float
    """When it last started waiting for its peer: opened, or its last call answered."""
    pool: str | None = None
    key: str | None = None
    node_id: str | None = None
    """The CN of its certificate, if it presented one."""
    in_call: bool = False
    displaceable: bool = True
    task: asyncio.Task[None] | None = None

    def on_call(self, busy: bool) -> None:
        self.in_call = busy
        if not busy:
            self.waiting_since = time.monotonic()

    def close_now(self) -> None:
        self.accepted.abort()
        if self.task is not None:
            self.task.cancel()


class ClusterListener:
    """Accepts every connection on 2377 and hands it to its channel, within the bounds described above."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        server_ssl: ssl.SSLContext,
        cluster_id: str,
        rpc: RpcServer,
        raft_inbound: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None,
        check_peer: Callable[[NodeIdentity], None] = lambda identity: None,
        limits: ListenerLimits = ListenerLimits(),
    ) -> None:
        """`check_peer(identity)` raises PeerRefused (NodeRemoved for a removed node) for a certificate that
        chains to the root but is no longer honoured."""
        self.host = host
        self.port = port
        self._ssl = server_ssl
        self._cluster_id = cluster_id
        self._rpc = rpc
        self._raft_inbound = raft_inbound
        self._check_peer = check_peer
        self._limits = limits
        self._acceptor: Acceptor | None = None
        self._tasks = TaskOwner("2377 listener", log)
        self._closing = False
        self._pools: dict[str, dict[_Connection, None]] = {_HANDSHAKE: {}, _ANONYMOUS: {}, _AUTHENTICATED: {}}
        """Connections by pool, oldest first."""
        self._quotas: dict[tuple[str, str], dict[_Connection, None]] = {}
        """Connections by (pool, source or node ID)."""
        self._by_node: dict[str, set[_Connection]] = {}
        self.refused: dict[str, int] = {}
        """Connections refused, by reason: tls_handshake, no_preamble, bad_certificate, removed, not_manager,
        unknown_channel, too_many_connections."""
        self.closed: dict[str, int] = {}
        """Open connections the listener closed early, by reason: displaced, cut_off."""

    async def start(self) -> None:
        self._acceptor = Acceptor(self.host, self.port, self._accept)
        await self._acceptor.start()
        self.port = self._acceptor.port

    async def close(self) -> None:
        self._closing = True
        if self._acceptor is not None:
            await self._acceptor.close()
        await self._tasks.close()

    def connections(self, pool: str | None = None) -> int:
        """Open connections, in one pool ("handshake", "anonymous", "authenticated") or in all."""
        return sum(len(members) for name, members in self._pools.items() if pool in (None, name))

    def cut_off(self, node_id: str) -> int:
        """Close at once every open connection (RPC, calls in progress included, and Raft) presenting the
        certificate of `node_id`, and return how many there were: a removed node's connections must not
        outlive its removal. New connections with that certificate are refused by `check_peer`."""
        victims = list(self._by_node.get(node_id, ()))
        for conn in victims:
            self._close_early(conn, "cut_off")
        if victims:
            log.info("closed %d connection(s) of node %s", len(victims), node_id)
        return len(victims)

    # -- accepting ---------------------------------------------------------------------------------------

    def _accept(self, accepted: Accepted) -> None:
        # Called as the connection is accepted, nothing of it read yet (`tlsaccept`): counted before its TLS.
        conn = _Connection(accepted, _source_of(accepted.peername), time.monotonic())
        if self._closing:
            accepted.abort()
            return
        if not self._enter(conn, _HANDSHAKE, None):
            self._refuse(conn, "too_many_connections", "handshake limit reached")
            accepted.abort()
            return
        conn.task = self._tasks.spawn(self._serve(conn), "cluster-connection")
        # Not in _serve's own cleanup: a task cancelled before it first ran never runs that.
        conn.task.add_done_callback(lambda _: self._leave(conn))

    async def _serve(self, conn: _Connection) -> None:
        try:
            opened = await self._open(conn)
            if opened is None:
                return
            reader, writer, preamble, identity, removal = opened
            if preamble == PREAMBLE_RAFT and self._raft_inbound is not None:
                if identity is None:
                    self._refuse(conn, "not_manager", "a Raft stream without a certificate")
                elif removal is not None:
                    self._refuse(conn, "removed", str(removal))
                else:
                    conn.displaceable = False  # one per peer (the transport replaces an older one), never idle
                    await self._raft_inbound(reader, writer)
            elif preamble == PREAMBLE_RPC:
                if removal is not None:
                    self._refuse(conn, "removed", str(removal))
                    await self._rpc.refuse(reader, writer, REMOVED, str(removal))
                else:
                    check = functools.partial(self._recheck, conn) if identity is not None else None
                    await self._rpc.serve(reader, writer, identity, check_peer=check, on_call=conn.on_call)
            else:
                self._refuse(conn, "unknown_channel", f"preamble {preamble!r}")
        finally:
            conn.accepted.abort()

    async def _open(
        self, conn: _Connection
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, NodeIdentity | None, NodeRemoved | None] | None:
        """TLS, the peer's identity, its place in a quota and its preamble, within the handshake deadline.
        None if the connection was refused (and counted)."""
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                reader, writer = await conn.accepted.handshake(self._ssl)
                try:
                    identity = self._identity(writer)
                    removal = self._first_check(identity)
                except RaftswarmError as exc:
                    self._refuse(conn, "bad_certificate", str(exc))
                    return None
                if identity is not None:
                    conn.node_id = identity.node_id
                    self._by_node.setdefault(identity.node_id, set()).add(conn)
                if identity is not None and removal is None:
                    admitted = self._enter(conn, _AUTHENTICATED, identity.node_id)
                else:
                    # A removed node's certificate proves no more than none: it waits in the anonymous pool
                    # for the one answer it gets.
                    admitted = self._enter(conn, _ANONYMOUS, conn.source)
                if not admitted:
                    self._refuse(conn, "too_many_connections", f"the {conn.pool} limit is reached")
                    return None
                preamble = await reader.readexactly(PREAMBLE_BYTES)
        except TimeoutError:
            phase = "TLS handshake" if conn.pool == _HANDSHAKE else "preamble"
            self._refuse(conn, "tls_handshake" if conn.pool == _HANDSHAKE else "no_preamble", f"no {phase} in time")
            return None
        except (OSError, asyncio.IncompleteReadError) as exc:  # ssl.SSLError is an OSError
            reason = "tls_handshake" if conn.pool == _HANDSHAKE else "no_preamble"
            self._refuse(conn, reason, str(exc) or type(exc).__name__)
            return None
        return reader, writer, preamble, identity, removal

    def _identity(self, writer: asyncio.StreamWriter) -> NodeIdentity | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der is None:
            return None
        try:
            identity = NodeIdentity.from_certificate(x509.load_der_x509_certificate(der))
        except (CertificateError, ValueError) as exc:
            raise CertificateError(f"unreadable certificate: {exc}") from None
        if identity.cluster_id != self._cluster_id:
            raise CertificateError(f"node {identity.node_id} belongs to cluster {identity.cluster_id}")
        return identity

    def _first_check(self, identity: NodeIdentity | None) -> NodeRemoved | None:
        """The removal that refuses this certificate, if any; raises PeerRefused for any other refusal."""
        if identity is None:
            return None
        try:
            self._check_peer(identity)
        except NodeRemoved as exc:
            return exc
        return None

    def _recheck(self, conn: _Connection, identity: NodeIdentity) -> None:
        """`check_peer` before each call on an open connection (the RPC server answers a refusal and closes)."""
        try:
            self._check_peer(identity)
        except PeerRefused as exc:
            self._refuse(conn, "removed" if isinstance(exc, NodeRemoved) else "bad_certificate", str(exc))
            raise

    # -- quotas ------------------------------------------------------------------------------------------

    def _enter(self, conn: _Connection, pool: str, key: str | None) -> bool:
        """Count `conn` in `pool` and in `key`'s quota there, displacing the longest-waiting connection of a
        full quota; False (and `conn` counted where it was) if the quota is full of calls in progress."""
        limits = self._limits
        total, per_key = {
            _HANDSHAKE: (limits.max_handshakes, None),
            _ANONYMOUS: (limits.max_anonymous, limits.max_anonymous_per_source),
            _AUTHENTICATED: (limits.max_connections, limits.max_per_node),
        }[pool]
        if key is not None and per_key is not None:
            same_key = self._quotas.get((pool, key), {})
            if len(same_key) >= per_key and not self._displace(same_key):
                return False
        members = self._pools[pool]
        # Connections with a certificate are not displaced by other nodes': each is a member of the swarm.
        if len(members) >= total and (pool == _AUTHENTICATED or not self._displace(members)):
            return False
        self._leave(conn, keep_node=True)
        conn.pool, conn.key = pool, key
        members[conn] = None
        if key is not None:
            self._quotas.setdefault((pool, key), {})[conn] = None
        return True

    def _displace(self, members: dict[_Connection, None]) -> bool:
        waiting = [conn for conn in members if conn.displaceable and not conn.in_call]
        if not waiting:
            return False
        self._close_early(min(waiting, key=lambda conn: conn.waiting_since), "displaced")
        return True

    def _leave(self, conn: _Connection, *, keep_node: bool = False) -> None:
        if conn.pool is not None:
            self._pools[conn.pool].pop(conn, None)
            if conn.key is not None:
                same_key = self._quotas.get((conn.pool, conn.key))
                if same_key is not None:
                    same_key.pop(conn, None)
                    if not same_key:
                        del self._quotas[(conn.pool, conn.key)]
            conn.pool = conn.key = None
        if not keep_node and conn.node_id is not None:
            same_node = self._by_node.get(conn.node_id)
            if same_node is not None:
                same_node.discard(conn)
                if not same_node:
                    del self._by_node[conn.node_id]

    def _close_early(self, conn: _Connection, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        log.info("closing a %s 2377 connection from %s (%s)", conn.pool, conn.node_id or conn.source, reason)
        self._leave(conn)
        conn.close_now()

    def _refuse(self, conn: _Connection, reason: str, detail: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning("refused a 2377 connection from %s (%s): %s", conn.node_id or conn.source, reason, detail)


def _source_of(peername: Any) -> str:
    """The per-source quota key of a peer address: an IPv4 address, or the /64 of an IPv6 one (one host, or
    one site, holds a whole /64)."""
    try:
        address = ipaddress.ip_address(peername[0])
    except (TypeError, ValueError, IndexError):
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
