"""Request/response calls between nodes on 2377: joining (token only), certificate renewal, and the calls
managers serve to workers and to each other.

Every connection on 2377 is TLS 1.3; after the handshake the client writes an 8-byte preamble naming the
channel -- `PREAMBLE_RAFT` (a manager's Raft stream, see raft.transport) or `PREAMBLE_RPC` (this module).
On an RPC channel, frames are a 4-byte big-endian length and a msgpack map:

    request   {"id": n, "method": "ca.join", "params": {...}}
    response  {"id": n, "result": ...}  or  {"id": n, "error": {"code": "...", "message": "..."}}

Calls on one connection are answered in order. Which methods a caller may use depends on the certificate
it presented (none, worker, manager); the server checks that before running a handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..ca.certificates import NodeIdentity
from ..errors import RaftswarmError

log = logging.getLogger(__name__)

PREAMBLE_RAFT = b"RSWRAFT1"
PREAMBLE_RPC = b"RSWRPC01"
PREAMBLE_BYTES = 8

MAX_RPC_FRAME = 8 << 20
"""Largest RPC frame: a secret is at most 500 KiB and an assignment set a few MiB; a caller cannot make us
buffer more."""

_HEADER = struct.Struct(">I")


class RpcError(RaftswarmError):
    """A call failed on the server (`code` says how: "unauthorized", "invalid", "unavailable", ...) or the
    connection broke ("connection")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[[NodeIdentity | None, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    handler: Handler
    allowed: frozenset[str]
    """Who may call it: "anonymous" (no certificate), "worker", "manager"."""


def _caller_kind(identity: NodeIdentity | None) -> str:
    if identity is None:
        return "anonymous"
    return "manager" if identity.role.value == "swarm-manager" else "worker"


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_RPC_FRAME:
        raise RpcError("invalid", f"RPC frame of {length} bytes is over the {MAX_RPC_FRAME}-byte limit")
    payload = await reader.readexactly(length)
    try:
        frame = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise RpcError("invalid", f"RPC frame is not valid msgpack: {exc}") from None
    if not isinstance(frame, dict):
        raise RpcError("invalid", "an RPC frame must be a map")
    return frame


def _frame(body: dict[str, Any]) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(len(payload)) + payload


class RpcServer:
    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        self.refused = 0

    def register(self, name: str, handler: Handler, *, allowed: set[str]) -> None:
        self._methods[name] = Method(handler, frozenset(allowed))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: NodeIdentity | None) -> None:
        """Answer calls on one connection until the caller closes it or breaks the protocol."""
        caller = _caller_kind(identity)
        while True:
            try:
                request = await _read_frame(reader)
            except (RpcError, OSError, asyncio.IncompleteReadError) as exc:
                log.warning("closing RPC connection from %s: %s", identity.node_id if identity else "a node without a certificate", exc)
                return
            if request is None:
                return
            call_id = request.get("id")
            method = self._methods.get(request.get("method"))
            params = request.get("params") or {}
            if method is None:
                response = {"id": call_id, "error": {"code": "invalid", "message": f"unknown method {request.get('method')!r}"}}
            elif caller not in method.allowed:
                self.refused += 1
                response = {
                    "id": call_id,
                    "error": {"code": "unauthorized", "message": f"a {caller} caller may not call {request['method']}"},
                }
            elif not isinstance(params, dict):
                response = {"id": call_id, "error": {"code": "invalid", "message": "params must be a map"}}
            else:
                try:
                    response = {"id": call_id, "result": await method.handler(identity, params)}
                except RpcError as exc:
                    response = {"id": call_id, "error": {"code": exc.code, "message": str(exc)}}
                except RaftswarmError as exc:
                    response = {"id": call_id, "error": {"code": "failed", "message": str(exc)}}
                except (KeyError, TypeError, ValueError) as exc:
                    response = {"id": call_id, "error": {"code": "invalid", "message": f"invalid parameters: {exc}"}}
            writer.write(_frame(response))
            await writer.drain()


class RpcClient:
    """One connection to a manager's RPC channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls, host: str, port: int, context: ssl.SSLContext, *, server_hostname: str | None = None, timeout: float = 5.0
    ) -> RpcClient:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname or host), timeout
            )
        except (TimeoutError, OSError) as exc:
            raise RpcError("connection", f"cannot reach the manager at {host}:{port}: {exc or type(exc).__name__}") from None
        writer.write(PREAMBLE_RPC)
        return cls(reader, writer)

    def peer_certificate_der(self) -> bytes | None:
        ssl_object = self._writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object else None

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        async with self._lock:
            call_id = next(self._ids)
            try:
                self._writer.write(_frame({"id": call_id, "method": method, "params": params or {}}))
                await self._writer.drain()
                # Not wait_for: on 3.11 it swallows a cancellation that arrives as the answer does.
                async with asyncio.timeout(timeout):
                    response = await _read_frame(self._reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise RpcError("connection", f"the connection to the manager broke during {method}: {exc}") from None
            except TimeoutError:
                raise RpcError("unavailable", f"the manager did not answer {method} in {timeout:.0f} s") from None
        if response is None:
            raise RpcError("connection", f"the manager closed the connection during {method}")
        if response.get("id") != call_id:
            raise RpcError("connection", "the manager answered out of order")
        if "error" in response:
            error = response["error"]
            raise RpcError(error.get("code", "failed"), error.get("message", "call failed"))
        return response.get("result")

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
