"""Gossip messages on the wire and their encryption, sans-I/O.

A `Message` is a `MessageType` plus a body dict; on the wire it is one msgpack map (the type under "t").
`encode`/`decode` check every field's type against the schema below, so the cores above never see a
malformed message. `Keyring.seal` encrypts an encoded message with AES-256-GCM under the primary key
(`key id || nonce || ciphertext+tag`); `Keyring.open` tries whichever held key the id names, so during a
rotation (add new key, make it primary, later remove the old one -- memberlist's keyring dance) packets
sealed with the previous key still open. Any bad input raises `GossipProtocolError`; the caller drops
the packet (UDP) or closes the stream (TCP) and keeps serving.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import RaftswarmError

MAX_PACKET_BYTES = 1400
"""The largest sealed UDP packet. memberlist's UDPBufferSize default is 1400: under the 1500-byte Ethernet
MTU minus IP/UDP headers and room for a tunnel, so a gossip packet is never fragmented."""

MAX_STREAM_BYTES = 4 << 20
"""The largest sealed TCP message (push/pull of full membership, a network's table state). Full state grows
with the cluster, so it goes over TCP; 4 MiB is ample for thousands of members and table entries while a
peer cannot make us buffer without bound."""

MAX_META_BYTES = 512
"""A member's meta (its data-plane address and the like). memberlist's MetaMaxSize is 512 as well; it has to
fit, together with the rest of an alive message, in one UDP packet."""

KEY_BYTES = 32  # AES-256
KEY_ID_BYTES = 4
NONCE_BYTES = 12  # the AES-GCM standard nonce; random nonces are safe for far more packets than a key sees
TAG_BYTES = 16
SEAL_OVERHEAD = KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES
_U64 = (1 << 64) - 1


class GossipProtocolError(RaftswarmError):
    """A gossip packet or stream that is not valid: unknown key, tampered, oversized or malformed.
    Drop it (or close the connection); the node keeps serving."""


class MessageType(enum.IntEnum):
    PING = 1
    PING_REQ = 2  # "please ping this target for me" (SWIM's indirect probe)
    ACK = 3
    ALIVE = 4  # ALIVE/SUSPECT/DEAD only appear as update records piggybacked on other messages
    SUSPECT = 5
    DEAD = 6
    GOSSIP = 7  # a packet that only carries piggybacked updates
    PUSH_PULL = 8  # TCP: full membership state, anti-entropy and join
    TABLE_EVENT = 9  # one table entry change, sent to the nodes on its network
    NETWORK_EVENT = 10  # a node joined or left a network
    NETWORK_SYNC = 11  # TCP: full state of one network (entries + attachments)
    ATTACHMENTS = 12  # TCP: every node-network attachment known, sent to a member that just appeared


STREAM_TYPES = frozenset({MessageType.PUSH_PULL, MessageType.NETWORK_SYNC, MessageType.ATTACHMENTS})
"""Messages that travel over TCP and may be up to MAX_STREAM_BYTES; every other type is a UDP packet."""


class MemberState(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True)
class Message:
    type: MessageType
    body: dict[str, Any]

    def __getitem__(self, field: str) -> Any:
        return self.body[field]


# -- schema ------------------------------------------------------------------------------------------------

Check = Callable[[Any, str], Any]


def _fail(name: str, what: str) -> GossipProtocolError:
    return GossipProtocolError(f"gossip field {name!r} must be {what}")


def _str(v: Any, name: str) -> str:
    if type(v) is not str:
        raise _fail(name, "a string")
    return v


def _uint(v: Any, name: str) -> int:
    if type(v) is not int or not 0 <= v <= _U64:
        raise _fail(name, "an unsigned 64-bit integer")
    return v


def _bytes(v: Any, name: str) -> bytes:
    if type(v) is not bytes:
        raise _fail(name, "bytes")
    return v


def _meta(v: Any, name: str) -> bytes:
    if type(v) is not bytes or len(v) > MAX_META_BYTES:
        raise _fail(name, f"bytes of at most {MAX_META_BYTES}")
    return v


def _bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise _fail(name, "a boolean")
    return v


def _enum(kind: type[enum.IntEnum], allowed: frozenset[int] | None = None) -> Check:
    def check(v: Any, name: str) -> enum.IntEnum:
        bad = type(v) is bool or not isinstance(v, int)  # IntEnum members are ints; bools are not
        if bad or v not in kind._value2member_map_ or (allowed is not None and v not in allowed):
            raise _fail(name, f"one of {sorted(allowed or kind._value2member_map_)}")
        return kind(v)

    return check


def _record(schema: dict[str, Check]) -> Check:
    def check(v: Any, name: str) -> dict[str, Any]:
        if type(v) is not dict or set(v) != set(schema):
            raise _fail(name, f"a map with exactly the fields {sorted(schema)}")
        return {k: schema[k](v[k], f"{name}.{k}") for k in schema}

    return check


def _list(item: Check) -> Check:
    def check(v: Any, name: str) -> list[Any]:
        if type(v) is not list:
            raise _fail(name, "a list")
        return [item(x, f"{name}[{i}]") for i, x in enumerate(v)]

    return check


UPDATE = _record(
    {
        "t": _enum(MessageType, frozenset({MessageType.ALIVE, MessageType.SUSPECT, MessageType.DEAD})),
        "node": _str,
        "addr": _str,
        "inc": _uint,
        "meta": _meta,
        "from": _str,
    }
)
MEMBER = _record({"node": _str, "addr": _str, "inc": _uint, "meta": _meta, "state": _enum(MemberState)})
ENTRY = _record({"table": _str, "key": _str, "value": _bytes, "owner": _str, "ltime": _uint, "deleted": _bool})
ATTACHMENT = _record({"node": _str, "network": _str, "ltime": _uint, "leaving": _bool})

SCHEMAS: dict[MessageType, dict[str, Check]] = {
    MessageType.PING: {"seq": _uint, "target": _str, "updates": _list(UPDATE)},
    MessageType.PING_REQ: {"seq": _uint, "target": _str, "target_addr": _str, "updates": _list(UPDATE)},
    MessageType.ACK: {"seq": _uint, "updates": _list(UPDATE)},
    MessageType.GOSSIP: {"updates": _list(UPDATE)},
    MessageType.PUSH_PULL: {"join": _bool, "reply": _bool, "members": _list(MEMBER)},
    MessageType.TABLE_EVENT: {
        "network": _str,
        "table": _str,
        "key": _str,
        "value": _bytes,
        "owner": _str,
        "ltime": _uint,
        "deleted": _bool,
    },
    MessageType.NETWORK_EVENT: {"node": _str, "network": _str, "ltime": _uint, "leaving": _bool},
    MessageType.NETWORK_SYNC: {
        "network": _str,
        "reply": _bool,
        "entries": _list(ENTRY),
        "nodes": _list(ATTACHMENT),
    },
    MessageType.ATTACHMENTS: {"attachments": _list(ATTACHMENT)},
}
_SENDABLE = frozenset(SCHEMAS)


# -- encoding ----------------------------------------------------------------------------------------------


def _validate(raw: Any) -> Message:
    if type(raw) is not dict:
        raise GossipProtocolError("a gossip message must be a msgpack map")
    kind = _enum(MessageType, _SENDABLE)(raw.get("t"), "t")
    body = dict(raw)
    del body["t"]
    return Message(kind, _record(SCHEMAS[kind])(body, kind.name))


def encode(message: Message) -> bytes:
    """The msgpack bytes of `message` (checked against its schema first)."""
    checked = _validate({"t": int(message.type), **message.body})
    return msgpack.packb({"t": int(checked.type), **checked.body}, use_bin_type=True)


def decode(data: bytes) -> Message:
    """The message in `data`; anything but a well-formed message raises GossipProtocolError."""
    if len(data) > MAX_STREAM_BYTES:
        raise GossipProtocolError(f"gossip message of {len(data)} bytes exceeds {MAX_STREAM_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # ExtraData, StackError, bad UTF-8, ...
        raise GossipProtocolError(f"gossip message is not valid msgpack: {e}") from None
    return _validate(raw)


def size_limit(kind: MessageType) -> int:
    return MAX_STREAM_BYTES if kind in STREAM_TYPES else MAX_PACKET_BYTES


# -- encryption --------------------------------------------------------------------------------------------


def key_id(key: bytes) -> bytes:
    """A short public name for a key, so `open` knows which key to try without trial decryption."""
    return hashlib.sha256(b"raftswarm-gossip-key-id" + key).digest()[:KEY_ID_BYTES]


class Keyring:
    """The gossip encryption keys a node holds; the first is primary (used to seal).

    Managers hand out and rotate keys: `add(new)` everywhere, then `use(new)`, then `remove(old)`."""

    def __init__(self, keys: list[bytes]):
        if not keys:
            raise ValueError("a gossip keyring needs at least one key")
        self._keys: dict[bytes, AESGCM] = {}
        self._primary = b""
        for k in keys:
            self.add(k)
        self.use(keys[0])

    def add(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"gossip keys are {KEY_BYTES} bytes (AES-256), got {len(key)}")
        self._keys.setdefault(key_id(key), AESGCM(key))

    def use(self, key: bytes) -> None:
        self.add(key)
        self._primary = key_id(key)

    def remove(self, key: bytes) -> None:
        kid = key_id(key)
        if kid == self._primary:
            raise ValueError("cannot remove the primary gossip key; `use` another key first")
        self._keys.pop(kid, None)

    def seal(self, message: Message, nonce: bytes | None = None) -> bytes:
        """Encrypt and authenticate `message`. `nonce` is for tests only; by default it is random."""
        plain = encode(message)
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        sealed = self._primary + nonce + self._keys[self._primary].encrypt(nonce, plain, self._primary)
        if len(sealed) > size_limit(message.type):
            raise GossipProtocolError(
                f"{message.type.name} of {len(sealed)} bytes exceeds the {size_limit(message.type)}-byte limit"
            )
        return sealed

    def open(self, data: bytes) -> Message:
        """The message sealed in `data`, or GossipProtocolError if it is oversized, sealed with a key this
        ring does not hold, tampered with, or malformed."""
        if len(data) > MAX_STREAM_BYTES:
            raise GossipProtocolError(f"gossip message of {len(data)} bytes exceeds {MAX_STREAM_BYTES}")
        if len(data) < SEAL_OVERHEAD:
            raise GossipProtocolError("gossip message too short to be sealed")
        kid, nonce, body = (
            data[:KEY_ID_BYTES],
            data[KEY_ID_BYTES : KEY_ID_BYTES + NONCE_BYTES],
            data[KEY_ID_BYTES + NONCE_BYTES :],
        )
        aead = self._keys.get(kid)
        if aead is None:
            raise GossipProtocolError("gossip message sealed with a key this node does not hold")
        try:
            plain = aead.decrypt(nonce, body, kid)
        except InvalidTag:
            raise GossipProtocolError("gossip message failed authentication (tampered or wrong key)") from None
        message = decode(plain)
        if len(data) > size_limit(message.type):
            raise GossipProtocolError(
                f"{message.type.name} of {len(data)} bytes exceeds the {size_limit(message.type)}-byte limit"
            )
        return message
