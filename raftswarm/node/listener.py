"""`ClusterListener`: TCP 2377, where every node-to-manager connection arrives.

TLS 1.3 with the client certificate optional at the TLS layer (so a joining node, which has none yet, can
make its one token-carrying call), but verified against the cluster root whenever one is presented (a
certificate of another CA fails the handshake). After the handshake the client's 8-byte preamble picks the
channel:

- `PREAMBLE_RAFT`: a manager's Raft stream, handed to `raft.transport.RaftTransport`, which refuses anyone
  but a manager of this cluster;
- `PREAMBLE_RPC`: calls (`node.rpc`), each method allowing only some callers (anonymous, worker, manager).

A certificate of a node removed from the swarm is refused on either channel (`check_peer`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from ..ca.authority import NodeRemoved
from ..ca.certificates import CertificateError, NodeIdentity
from ..errors import RaftswarmError
from ..manager.rpc import PREAMBLE_BYTES, PREAMBLE_RPC, RpcServer
from ..raft.transport import PREAMBLE_RAFT

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0
"""Seconds for the TLS handshake plus the preamble: bounds what an unauthenticated client can hold."""

MAX_CONNECTIONS = 1024
"""Connections at once: every worker keeps one session, every manager one Raft stream and one session."""


class ClusterListener:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        server_ssl: ssl.SSLContext,
        cluster_id: str,
        rpc: RpcServer,
        raft_inbound: Callable[[asyncio.StreamReader, asyncio.StreamWriter, NodeIdentity], Awaitable[None]] | None,
        check_peer: Callable[[NodeIdentity], None] = lambda identity: None,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = server_ssl
        self._cluster_id = cluster_id
        self._rpc = rpc
        self._raft_inbound = raft_inbound
        self._check_peer = check_peer
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refused: dict[str, int] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self._ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= MAX_CONNECTIONS:
            self._refuse(writer, "too_many_connections", "connection limit reached")
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="cluster-connection")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a 2377 connection handler failed", exc_info=task.exception())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                identity = self._identity(writer)
                preamble = await asyncio.wait_for(reader.readexactly(PREAMBLE_BYTES), HANDSHAKE_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
                self._refuse(writer, "no_preamble", "closed or silent before naming a channel")
                return
            except NodeRemoved as exc:
                self._refuse(writer, "removed", str(exc))
                return
            except RaftswarmError as exc:
                self._refuse(writer, "bad_certificate", str(exc))
                return
            if preamble == PREAMBLE_RAFT and self._raft_inbound is not None:
                if identity is None:
                    self._refuse(writer, "not_manager", "a Raft stream without a certificate")
                    return
                await self._raft_inbound(reader, writer, identity)
            elif preamble == PREAMBLE_RPC:
                await self._rpc.serve(reader, writer, identity)
            else:
                self._refuse(writer, "unknown_channel", f"preamble {preamble!r}")
        finally:
            writer.transport.abort()

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
        self._check_peer(identity)
        return identity

    def _refuse(self, writer: asyncio.StreamWriter, reason: str, detail: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        peer = writer.get_extra_info("peername")
        log.warning("refused a 2377 connection from %s (%s): %s", peer, reason, detail)
