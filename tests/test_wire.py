"""The Raft wire format: every message round-trips, and every malformed frame is refused with FrameError."""

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftswarm.raft.messages import ConfState, Entry, EntryType, Message, MessageType, SnapshotMeta
from raftswarm.raft.wire import MAX_FRAME_BYTES, FrameDecoder, FrameError, decode_message, encode_frame, encode_message

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), st.binary(max_size=64))
metas = st.none() | st.builds(
    SnapshotMeta, u64, u64, st.builds(ConfState, st.frozensets(u64, max_size=5), st.frozensets(u64, max_size=3))
)
messages = st.builds(
    Message,
    st.sampled_from(MessageType),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=5),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    context=st.binary(max_size=16),
    snapshot_meta=metas,
    chunk=st.binary(max_size=64),
    done=st.booleans(),
)


@given(messages)
def test_every_message_round_trips(message):
    assert decode_message(encode_message(message)) == message


@given(st.lists(messages, min_size=1, max_size=4), st.integers(min_value=1, max_value=50))
def test_decoder_reassembles_frames_split_anywhere(batch, piece):
    stream = b"".join(encode_frame(m) for m in batch)
    decoder = FrameDecoder()
    received = []
    for start in range(0, len(stream), piece):
        received += decoder.feed(stream[start : start + piece])
    assert received == batch


def test_oversized_length_prefix_is_refused_before_buffering_the_body():
    decoder = FrameDecoder()
    with pytest.raises(FrameError, match="limit"):
        decoder.feed(struct.pack(">I", MAX_FRAME_BYTES + 1))


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb({"type": 1}),
        msgpack.packb([1, 2, 3]),
        msgpack.packb([99] + [0] * 5 + [[]] + [0, False, 0, b"", None, b"", False]),  # unknown type
        msgpack.packb([1, -1, 0, 0, 0, 0, [], 0, False, 0, b"", None, b"", False]),  # negative ID
        msgpack.packb([1, 2, 1, 0, 0, 0, [[1, 1, 7, b""]], 0, False, 0, b"", None, b"", False]),  # entry type
        msgpack.packb([1, 2, 1, 0, 0, 0, [], 0, "no", 0, b"", None, b"", False]),  # reject not a bool
        msgpack.packb([1, 2, 1, 0, 0, 0, [], 0, False, 0, "text", None, b"", False]),  # context not bytes
    ],
)
def test_malformed_payloads_raise_frame_error(payload):
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", len(payload)) + payload)


@given(st.binary(min_size=1, max_size=200))
def test_garbage_never_escapes_as_another_exception(garbage):
    try:
        FrameDecoder().feed(struct.pack(">I", len(garbage)) + garbage)
    except FrameError:
        pass
