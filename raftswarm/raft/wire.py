"""Raft messages on the wire: length-prefixed msgpack frames, sans-I/O (in the manner of h11).

`encode_frame(message)` gives bytes to write; a `FrameDecoder` takes bytes as they arrive and gives back
whole `Message`s. Anything malformed -- an oversized length prefix, bad msgpack, a field of the wrong
type or out of range -- raises `FrameError`; the connection owner closes that connection, counts it, and
carries on serving everyone else.
"""

from __future__ import annotations

import struct

import msgpack

from ..errors import RaftswarmError
from .messages import ConfState, Entry, EntryType, Message, MessageType, SnapshotMeta

MAX_FRAME_BYTES = 16 << 20
"""The largest frame accepted. APPENDs carry at most max_size_per_msg (1 MiB) of entries, or one entry if
a single entry is bigger, and the store refuses proposals over 4 MiB; snapshot chunks are 1 MiB. 16 MiB
leaves room for all of those while a peer cannot make us buffer without bound."""

MAX_ENTRIES_PER_FRAME = 100_000
MAX_MEMBERS = 1_000
_U64 = (1 << 64) - 1
_HEADER = struct.Struct(">I")


class FrameError(RaftswarmError):
    """A peer sent bytes that are not a valid Raft frame. Close the connection; the node keeps serving."""


# -- encoding ----------------------------------------------------------------------------------------------


def encode_message(m: Message) -> bytes:
    meta = m.snapshot_meta
    return msgpack.packb(
        [
            int(m.type),
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            [[e.index, e.term, int(e.type), e.data] for e in m.entries],
            m.commit,
            m.reject,
            m.reject_hint,
            m.context,
            None
            if meta is None
            else [meta.index, meta.term, sorted(meta.conf_state.voters), sorted(meta.conf_state.learners)],
            m.chunk,
            m.done,
        ],
        use_bin_type=True,
    )


def encode_frame(m: Message) -> bytes:
    payload = encode_message(m)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"message of {len(payload)} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


# -- decoding ----------------------------------------------------------------------------------------------


def _uint(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= _U64:
        raise FrameError(f"field {name} must be an unsigned 64-bit integer")
    return value


def _bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise FrameError(f"field {name} must be bytes")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise FrameError(f"field {name} must be a boolean")
    return value


def _list(value: object, name: str, limit: int) -> list:
    if type(value) is not list:
        raise FrameError(f"field {name} must be a list")
    if len(value) > limit:
        raise FrameError(f"field {name} has {len(value)} items, more than {limit}")
    return value


def _entry(raw: object) -> Entry:
    fields = _list(raw, "entry", 4)
    if len(fields) != 4:
        raise FrameError("an entry must have 4 fields")
    index, term, kind, data = fields
    try:
        entry_type = EntryType(_uint(kind, "entry.type"))
    except ValueError:
        raise FrameError(f"unknown entry type {kind}") from None
    return Entry(_uint(index, "entry.index"), _uint(term, "entry.term"), entry_type, _bytes(data, "entry.data"))


def _snapshot_meta(raw: object) -> SnapshotMeta | None:
    if raw is None:
        return None
    fields = _list(raw, "snapshot_meta", 4)
    if len(fields) != 4:
        raise FrameError("snapshot_meta must have 4 fields")
    index, term, voters, learners = fields
    conf = ConfState(
        frozenset(_uint(v, "voter") for v in _list(voters, "voters", MAX_MEMBERS)),
        frozenset(_uint(v, "learner") for v in _list(learners, "learners", MAX_MEMBERS)),
    )
    return SnapshotMeta(_uint(index, "snapshot.index"), _uint(term, "snapshot.term"), conf)


def decode_message(payload: bytes) -> Message:
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise FrameError(f"frame is not valid msgpack: {exc}") from None
    fields = _list(raw, "message", 14)
    if len(fields) != 14:
        raise FrameError(f"a message has 14 fields, this frame has {len(fields)}")
    kind, to, frm, term, log_term, index, entries, commit, reject, reject_hint, context, meta, chunk, done = fields
    try:
        message_type = MessageType(_uint(kind, "type"))
    except ValueError:
        raise FrameError(f"unknown message type {kind}") from None
    return Message(
        message_type,
        to=_uint(to, "to"),
        frm=_uint(frm, "frm"),
        term=_uint(term, "term"),
        log_term=_uint(log_term, "log_term"),
        index=_uint(index, "index"),
        entries=[_entry(e) for e in _list(entries, "entries", MAX_ENTRIES_PER_FRAME)],
        commit=_uint(commit, "commit"),
        reject=_bool(reject, "reject"),
        reject_hint=_uint(reject_hint, "reject_hint"),
        context=_bytes(context, "context"),
        snapshot_meta=_snapshot_meta(meta),
        chunk=_bytes(chunk, "chunk"),
        done=_bool(done, "done"),
    )


class FrameDecoder:
    """Feed it bytes in any pieces; it returns the complete messages they finish."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes of a frame begun but not yet complete (0 between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self._max:
                raise FrameError(f"frame of {length} bytes announced; the limit is {self._max}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            messages.append(decode_message(payload))
        return messages
