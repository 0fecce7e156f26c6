"""Request/response calls between nodes on 2377: joining (token only), certificate renewal, and the calls
managers serve to workers and to each other.

Every connection on 2377 is TLS 1.3; after the handshake the client writes an 8-byte preamble naming the
channel -- `PREAMBLE_RAFT` (a manager's Raft stream, see raft.transport) or `PREAMBLE_RPC` (this module).
On an RPC channel, frames are a 4-byte big-endian length and a msgpack map:

    request   {"id": n, "method": "ca.join", "params": {...}}
    response  {"id": n, "result": ...}  or  {"id": n, "error": {"code": "...", "message": "..."}}

Calls on one connection are answered in order. Which methods a caller may use depends on the certificate
it presented (none, worker, manager); the server checks that before running a handler.

Bad input. A request that is framed correctly but is not a valid request (not msgpack, not a map, an id
that is not an integer, a method that is not a string, params that are not a map) is answered with an
error of code "invalid" (id null when the id itself is unusable) and the connection carries on. Only a
framing violation ends it: a length over the caller's limit, a frame that does not arrive in time, a
connection that stays idle too long, or a caller that does not read its answers. Those limits depend on
what the caller has proven (`CallerLimits`): a caller without a certificate gets a small frame and short
deadlines, enough for the join's one or two calls and no more.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import reprlib
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..ca.authority import NodeRemoved, PeerRefused
from ..ca.certificates import NodeIdentity
from ..errors import RaftswarmError

log = logging.getLogger(__name__)

PREAMBLE_RAFT = b"RSWRAFT1"
PREAMBLE_RPC = b"RSWRPC01"
PREAMBLE_BYTES = 8

MAX_RPC_FRAME = 8 << 20
"""Largest RPC frame from a caller with a certificate: a secret is at most 500 KiB, and an assignment set that
holds more than `manager.dispatcher.ASSIGNMENT_PAGE_BYTES` comes in pages; a caller cannot make us buffer more."""

MAX_ANONYMOUS_RPC_FRAME = 64 << 10
"""Largest RPC frame from a caller without a certificate. Its only calls are `ca.root` and the join, whose
CSR and token take 1-2 KiB. The same reasoning as h11's 16 KiB cap on an incomplete event and nginx's
4 x 8 KiB `large_client_header_buffers`: before a peer is known it gets room for a request, not for data."""

ANONYMOUS_IDLE_TIMEOUT = 10.0
"""Seconds a connection without a certificate may wait before (or between) calls. A joining node makes its
one or two calls right after the handshake; half of Apache mod_reqtimeout's default `header=20` window,
since unlike an HTTP client nobody types."""

ANONYMOUS_FRAME_TIMEOUT = 10.0
"""Seconds in which a frame from a caller without a certificate must be complete once its first byte came,
and in which its answer must be taken: a 1-2 KiB join request is one or two TCP segments, while a sender of
one byte a second (slowloris) is cut after 10 bytes -- the rule of mod_reqtimeout's `header=20`."""

AUTHENTICATED_IDLE_TIMEOUT = 120.0
"""Seconds a connection with a certificate may wait between calls (a call in progress, such as the
dispatcher's long poll of up to 30 s, is not waiting). Every periodic caller calls again well within it --
heartbeats every 5 s, `logs.listen` every 10 s, `dispatcher.assignments` as soon as its wait ends -- so only
a dead or abandoned connection reaches it; above nginx's `keepalive_timeout` of 75 s so that a heartbeat
period raised tenfold still fits. A client whose connection idled out reconnects on its next call."""

AUTHENTICATED_FRAME_TIMEOUT = 60.0
"""Seconds in which a frame from a caller with a certificate must be complete once its first byte came, and
in which its answer must be taken: the largest frame (8 MiB) at about 1 Mbit/s. nginx's
`client_body_timeout` and `send_timeout` are 60 s for the same job."""

REMOVED = "removed"
"""The error code of a call from a node removed from the swarm: its certificate is refused for good, so its
client should stop retrying rather than reconnect."""

_HEADER = struct.Struct(">I")

_HANGUP_LOG_LEVEL = {
    "idle": logging.INFO,
    "truncated": logging.INFO,
    REMOVED: logging.DEBUG,
    "unauthorized": logging.DEBUG,
}
"""Routine ends are not warnings; a refused certificate is logged by the `check_peer` that refused it."""


class RpcError(RaftswarmError):
    """A call failed on the server (`code` says how: "unauthorized", "invalid", "removed", "unavailable",
    ...) or the connection broke ("connection")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidRequest(RpcError):
    """A well-framed request that is not a valid call; answered with code "invalid" on the same connection.
    `call_id` is the request's id when it had a usable one, else None."""

    def __init__(self, call_id: int | None, message: str) -> None:
        super().__init__("invalid", message)
        self.call_id = call_id


class _Hangup(RpcError):
    """The server ends the connection: the framing cannot be trusted any more, or a deadline passed.
    `reason` is the key counted in `RpcServer.hangups`; with `tell` the caller is sent the message first."""

    def __init__(self, reason: str, message: str, *, tell: bool = False) -> None:
        super().__init__("invalid", message)
        self.reason = reason
        self.tell = tell


Handler = Callable[[NodeIdentity | None, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    handler: Handler
    allowed: frozenset[str]
    """Who may call it: "anonymous" (no certificate), "worker", "manager"."""


@dataclass(frozen=True)
class CallerLimits:
    """What one RPC connection may hold, by what its caller has proven (see the constants above)."""

    max_frame: int
    idle_timeout: float
    """Seconds to wait for the first byte of the next request."""
    frame_timeout: float
    """Seconds for the rest of a request once its first byte came, and for the answer to be taken."""


ANONYMOUS_LIMITS = CallerLimits(MAX_ANONYMOUS_RPC_FRAME, ANONYMOUS_IDLE_TIMEOUT, ANONYMOUS_FRAME_TIMEOUT)
AUTHENTICATED_LIMITS = CallerLimits(MAX_RPC_FRAME, AUTHENTICATED_IDLE_TIMEOUT, AUTHENTICATED_FRAME_TIMEOUT)


@dataclass(frozen=True)
class Request:
    call_id: int | None
    method: str
    params: dict[str, Any]


def parse_request(payload: bytes) -> Request:
    """A request from one frame's payload (sans I/O); raises InvalidRequest for anything else."""
    try:
        request = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidRequest(None, f"an RPC request must be a msgpack map; this frame does not decode: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidRequest(None, f"an RPC request must be a map with id, method and params, not {_quote(request)}")
    call_id = request.get("id")
    if call_id is not None and (not isinstance(call_id, int) or isinstance(call_id, bool)):
        raise InvalidRequest(None, f"the id of an RPC request must be an integer, not {_quote(call_id)}")
    method = request.get("method")
    if not isinstance(method, str):
        raise InvalidRequest(call_id, f"the method of an RPC request must be a string, not {_quote(method)}")
    params = request.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise InvalidRequest(call_id, f"the params of {_quote(method)} must be a map, not {_quote(params)}")
    return Request(call_id, method, params)


def _quote(value: object) -> str:
    """A caller's value in an error message or log line, abbreviated: the caller chose its size."""
    return reprlib.repr(value)


def _caller_kind(identity: NodeIdentity | None) -> str:
    if identity is None:
        return "anonymous"
    return "manager" if identity.role.value == "swarm-manager" else "worker"


def _error(call_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": call_id, "error": {"code": code, "message": message}}


def _frame(body: dict[str, Any]) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    return _HEADER.pack(len(payload)) + payload


async def _read_payload(reader: asyncio.StreamReader, limits: CallerLimits) -> bytes | None:
    """The next request frame's payload, or None if the caller closed the connection between frames.

    The frame's buffer grows only as its bytes arrive, up to `limits.max_frame`, and only for
    `limits.frame_timeout` seconds: a caller holds no more memory, nor for longer, than it pays for."""
    try:
        async with asyncio.timeout(limits.idle_timeout):
            first = await reader.read(1)
    except TimeoutError:
        raise _Hangup("idle", f"no call in {limits.idle_timeout:g} s") from None
    if not first:
        return None
    try:
        async with asyncio.timeout(limits.frame_timeout):
            (length,) = _HEADER.unpack(first + await reader.readexactly(_HEADER.size - 1))
            if length > limits.max_frame:
                raise _Hangup(
                    "oversized",
                    f"RPC frame of {length} bytes is over this caller's {limits.max_frame}-byte limit",
                    tell=True,
                )
            return await reader.readexactly(length)
    except TimeoutError:
        raise _Hangup("slow_frame", f"a frame was not complete {limits.frame_timeout:g} s after it began") from None
    except asyncio.IncompleteReadError:
        raise _Hangup("truncated", "the connection closed in the middle of a frame") from None


async def _send(writer: asyncio.StreamWriter, frame: bytes, limits: CallerLimits) -> None:
    writer.write(frame)
    try:
        async with asyncio.timeout(limits.frame_timeout):
            await writer.drain()
    except TimeoutError:
        raise _Hangup("slow_reader", f"an answer was not taken in {limits.frame_timeout:g} s") from None


class RpcServer:
    """The methods this manager serves on the RPC channel, and the loop that answers one connection."""

    def __init__(
        self, *, anonymous: CallerLimits = ANONYMOUS_LIMITS, authenticated: CallerLimits = AUTHENTICATED_LIMITS
    ) -> None:
        self._methods: dict[str, Method] = {}
        self._limits = {False: anonymous, True: authenticated}
        self.refused = 0
        """Calls refused because the caller's kind may not use the method."""
        self.hangups: dict[str, int] = {}
        """Connections the server ended, by reason: idle, slow_frame, truncated, oversized, slow_reader,
        removed, unauthorized."""

    def register(self, name: str, handler: Handler, *, allowed: set[str]) -> None:
        self._methods[name] = Method(handler, frozenset(allowed))

    async def serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        identity: NodeIdentity | None,
        *,
        check_peer: Callable[[NodeIdentity], None] | None = None,
        on_call: Callable[[bool], None] | None = None,
    ) -> None:
        """Answer calls on one connection until the caller closes it, breaks the framing or misses a deadline.

        `check_peer(identity)` runs before every call of a caller with a certificate: if it raises
        PeerRefused (NodeRemoved: the node was removed from the swarm), that call is answered with code
        "removed" (or "unauthorized") and the connection ends. `on_call(True)` / `on_call(False)` bracket each
        handler, so the owner of the connection knows when it is merely waiting for its peer."""
        limits = self._limits[identity is not None]
        caller = _caller_kind(identity)
        try:
            while True:
                payload = await _read_payload(reader, limits)
                if payload is None:
                    return
                try:
                    request = parse_request(payload)
                except InvalidRequest as exc:
                    await _send(writer, _frame(_error(exc.call_id, exc.code, str(exc))), limits)
                    continue
                if identity is not None and check_peer is not None:
                    try:
                        check_peer(identity)
                    except PeerRefused as exc:
                        code = REMOVED if isinstance(exc, NodeRemoved) else "unauthorized"
                        await _send(writer, _frame(_error(request.call_id, code, str(exc))), limits)
                        raise _Hangup(code, str(exc)) from None
                if on_call is not None:
                    on_call(True)
                try:
                    answer = await self._answer(request, identity, caller)
                finally:
                    if on_call is not None:
                        on_call(False)
                await _send(writer, answer, limits)
        except _Hangup as exc:
            self.hangups[exc.reason] = self.hangups.get(exc.reason, 0) + 1
            level = _HANGUP_LOG_LEVEL.get(exc.reason, logging.WARNING)
            log.log(level, "closing RPC connection from %s (%s): %s", _who(identity, writer), exc.reason, exc)
            if exc.tell:
                await _last_word(writer, _frame(_error(None, exc.code, str(exc))), limits)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("RPC connection from %s broke: %s", _who(identity, writer), exc or type(exc).__name__)

    async def refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, code: str, message: str) -> None:
        """For a connection that will not be served: answer its first call with error `code`, then return for
        the caller to close the connection. A removed node learns why (and stops retrying) instead of seeing a
        bare close. The call is read under the limits of a caller without a certificate: what it is worth."""
        limits = self._limits[False]
        self.hangups[code] = self.hangups.get(code, 0) + 1
        try:
            payload = await _read_payload(reader, limits)
            if payload is None:
                return
            try:
                call_id = parse_request(payload).call_id
            except InvalidRequest as exc:
                call_id = exc.call_id
            await _send(writer, _frame(_error(call_id, code, message)), limits)
        except (_Hangup, OSError, asyncio.IncompleteReadError):
            return

    async def _answer(self, request: Request, identity: NodeIdentity | None, caller: str) -> bytes:
        """The encoded answer to one call; never raises for anything the caller sent."""
        call_id = request.call_id
        method = self._methods.get(request.method)
        if method is None:
            response = _error(call_id, "invalid", f"unknown method {_quote(request.method)}")
        elif caller not in method.allowed:
            self.refused += 1
            response = _error(call_id, "unauthorized", f"a {caller} caller may not call {request.method}")
        else:
            try:
                response = {"id": call_id, "result": await method.handler(identity, request.params)}
            except RpcError as exc:
                response = _error(call_id, exc.code, str(exc))
            except RaftswarmError as exc:
                response = _error(call_id, "failed", str(exc))
            except (LookupError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                # What a handler raises when a parameter is missing or of the wrong shape.
                response = _error(call_id, "invalid", f"invalid parameters for {request.method}: {exc}")
            except Exception:
                log.exception("RPC handler %s failed", request.method)
                response = _error(call_id, "failed", f"{request.method} failed on the manager; see its log")
        try:
            frame = _frame(response)
        except (TypeError, ValueError, OverflowError) as exc:
            log.error("the answer of %s cannot be encoded: %s", request.method, exc)
            return _frame(_error(call_id, "failed", f"the answer of {request.method} cannot be encoded"))
        if len(frame) - _HEADER.size > MAX_RPC_FRAME:
            log.error("the answer of %s is %d bytes, over the frame limit", request.method, len(frame))
            return _frame(_error(call_id, "failed", f"the answer of {request.method} is too large to send"))
        return frame


async def _last_word(writer: asyncio.StreamWriter, frame: bytes, limits: CallerLimits) -> None:
    """Best effort: tell a caller why its connection ends. It may not be reading, or may be gone."""
    try:
        await _send(writer, frame, limits)
    except (_Hangup, OSError):
        pass


def _who(identity: NodeIdentity | None, writer: asyncio.StreamWriter) -> str:
    if identity is not None:
        return f"node {identity.node_id}"
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]} (no certificate)" if peer else "a node without a certificate"


async def _read_response(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The client's side: the next answer frame, or None if the manager closed the connection."""
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
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RpcError("invalid", f"RPC frame is not valid msgpack: {exc}") from None
    if not isinstance(frame, dict):
        raise RpcError("invalid", "an RPC frame must be a map")
    return frame


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
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=server_hostname or host
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
                    response = await _read_response(self._reader)
            except TimeoutError:  # before OSError, of which it is a subclass
                raise RpcError("unavailable", f"the manager did not answer {method} in {timeout:g} s") from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise RpcError("connection", f"the connection to the manager broke during {method}: {exc}") from None
        if response is None:
            raise RpcError("connection", f"the manager closed the connection during {method}")
        # An error without an id: the manager could not read this request as a call (too large, malformed).
        if response.get("id") != call_id and not (response.get("id") is None and "error" in response):
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
