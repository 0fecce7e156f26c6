"""Accepting TLS connections whose server decides about each one before reading a byte of it, on any event loop.

2377 (`node.listener`) and the Raft transport's own port count and limit connections from the moment they
are accepted, before the TLS handshake. asyncio's `start_server` with `StreamWriter.start_tls` afterwards
(pausing reading as the connection is made) does that on asyncio's own loop only: uvloop reads whatever has
arrived as it accepts, so a TLS hello that came with the connection lands in the plain stream and the
handshake never completes. Here the listening socket is accepted from directly (`Acceptor`), the caller sees
each connection as an `Accepted` holding the untouched socket, and `Accepted.handshake` gives that socket to
`loop.connect_accepted_socket` with the TLS context: the TLS layer reads its first byte.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from .supervision import TaskOwner

log = logging.getLogger(__name__)

STREAM_LIMIT = 2**16
"""asyncio's default StreamReader buffer limit."""

ACCEPT_PAUSE = 0.1
"""Seconds to wait after accept fails for want of resources (file descriptors, memory), as asyncio's own
server does, instead of spinning."""

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_HANDSHAKE_LIMIT = 3600.0
"""connect_accepted_socket's own handshake timeout: far beyond any caller's, which bounds the handshake with
`asyncio.timeout` (cancelling it closes the socket)."""


class Accepted:
    """One accepted connection: its socket until the handshake, its stream afterwards."""

    def __init__(self, sock: socket.socket, peername: Any) -> None:
        self.sock = sock
        self.peername = peername
        self.writer: asyncio.StreamWriter | None = None
        self._aborted = False

    async def handshake(
        self, context: ssl.SSLContext, limit: int = STREAM_LIMIT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The server side of the TLS handshake, then the connection as a stream. An OSError (ssl.SSLError
        among them) if it fails; the socket is closed then, and when the caller's timeout cancels this."""
        if self._aborted:
            raise ConnectionAbortedError("the connection was closed before its TLS handshake")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, self.sock, ssl=context, ssl_handshake_timeout=_HANDSHAKE_LIMIT
            )
        except BaseException:
            self.sock.close()
            raise
        self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        if self._aborted:  # closed while the handshake finished
            transport.abort()
            raise ConnectionAbortedError("the connection was closed during its TLS handshake")
        return reader, self.writer

    def abort(self) -> None:
        """Close at once, whichever phase the connection is in (a handshake in progress fails)."""
        self._aborted = True
        if self.writer is not None:
            self.writer.transport.abort()
        else:
            self.sock.close()


class Acceptor:
    """Listens on host:port and calls `on_accept(Accepted)` synchronously for every connection, with nothing
    of it read yet; the callback owns it from then on (handshake it, or abort it)."""

    def __init__(self, host: str, port: int, on_accept: Callable[[Accepted], None], backlog: int = 100) -> None:
        self.host = host
        self.port = port
        self._on_accept = on_accept
        self._backlog = backlog
        self._sock: socket.socket | None = None
        self._tasks = TaskOwner(f"acceptor on {host}:{port}", log)

    async def start(self) -> None:
        """Bind and listen (port 0: the kernel picks one, in `port` afterwards), then accept in the background."""
        loop = asyncio.get_running_loop()
        family = (await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))[0][0]
        sock = socket.create_server((self.host, self.port), family=family, backlog=self._backlog)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._tasks.spawn(self._accept_forever(sock), "accept")

    async def _accept_forever(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peername = await loop.sock_accept(sock)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the client gave up while it waited in the backlog
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("cannot accept on %s:%d: %s; retrying", self.host, self.port, exc)
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio's transports do
            try:
                self._on_accept(Accepted(conn, peername))
            except Exception:
                conn.close()
                log.exception("handling a connection accepted on %s:%d failed", self.host, self.port)

    async def close(self) -> None:
        """Stop accepting; connections already handed out are their owners' to close."""
        await self._tasks.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
