"""Gossip wire format and keyring: every bad input is a GossipProtocolError, and keys rotate safely."""

import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftswarm.gossip.wire import (
    MAX_PACKET_BYTES,
    MAX_STREAM_BYTES,
    GossipProtocolError,
    Keyring,
    MemberState,
    Message,
    MessageType,
    decode,
    encode,
)

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32
UPDATE = {"t": MessageType.ALIVE, "node": "a", "addr": "a:7946", "inc": 3, "meta": b"10.0.0.2", "from": "a"}

SAMPLES = [
    Message(MessageType.PING, {"seq": 1, "target": "b", "updates": [UPDATE]}),
    Message(MessageType.PING_REQ, {"seq": 2, "target": "b", "target_addr": "b:7946", "updates": []}),
    Message(MessageType.ACK, {"seq": 2, "updates": []}),
    Message(MessageType.GOSSIP, {"updates": [UPDATE, {**UPDATE, "t": MessageType.DEAD, "from": "c"}]}),
    Message(
        MessageType.PUSH_PULL,
        {
            "join": True,
            "reply": False,
            "members": [{"node": "a", "addr": "a:7946", "inc": 0, "meta": b"", "state": MemberState.SUSPECT}],
        },
    ),
    Message(
        MessageType.TABLE_EVENT,
        {"network": "n1", "table": "ep", "key": "k", "value": b"v", "owner": "a", "ltime": 7, "deleted": False},
    ),
    Message(MessageType.NETWORK_EVENT, {"node": "a", "network": "n1", "ltime": 1, "leaving": False}),
    Message(
        MessageType.NETWORK_SYNC,
        {
            "network": "n1",
            "reply": True,
            "entries": [{"table": "ep", "key": "k", "value": b"", "owner": "a", "ltime": 1, "deleted": True}],
            "nodes": [{"node": "a", "network": "n1", "ltime": 1, "leaving": False}],
        },
    ),
    Message(MessageType.ATTACHMENTS, {"attachments": []}),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type.name)
def test_every_message_type_survives_seal_and_open(message):
    ring = Keyring([NEW])
    assert ring.open(ring.seal(message)) == message
    assert decode(encode(message)) == message


def test_key_rotation_previous_key_still_opens_until_removed():
    old_ring = Keyring([OLD])
    sealed_with_old = old_ring.seal(SAMPLES[0])
    rotated = Keyring([OLD])
    rotated.add(NEW)
    rotated.use(NEW)
    assert rotated.open(sealed_with_old) == SAMPLES[0]
    # A node still on the old primary (but holding the new key) opens what the rotated node now seals.
    old_ring.add(NEW)
    assert old_ring.open(rotated.seal(SAMPLES[0])) == SAMPLES[0]
    rotated.remove(OLD)
    with pytest.raises(GossipProtocolError, match="does not hold"):
        rotated.open(sealed_with_old)


def test_unknown_key_is_rejected():
    with pytest.raises(GossipProtocolError, match="does not hold"):
        Keyring([OTHER]).open(Keyring([NEW]).seal(SAMPLES[0]))


@pytest.mark.parametrize("where", [0, 5, 20, -1])
def test_any_tampered_byte_is_rejected(where):
    ring = Keyring([NEW])
    sealed = bytearray(ring.seal(SAMPLES[0]))
    sealed[where] ^= 0x01
    with pytest.raises(GossipProtocolError):
        ring.open(bytes(sealed))


def test_primary_key_cannot_be_removed_and_keys_are_aes_256():
    ring = Keyring([NEW])
    with pytest.raises(ValueError):
        ring.remove(NEW)
    with pytest.raises(ValueError):
        Keyring([b"short"])


def test_udp_packet_over_1400_bytes_is_refused_both_ways():
    ring = Keyring([NEW])
    big = Message(
        MessageType.TABLE_EVENT,
        {
            "network": "n",
            "table": "t",
            "key": "k",
            "value": b"v" * MAX_PACKET_BYTES,
            "owner": "a",
            "ltime": 1,
            "deleted": False,
        },
    )
    with pytest.raises(GossipProtocolError, match="1400"):
        ring.seal(big)
    # A peer that ignores the limit when sealing still gets refused on open.
    raw_nonce = os.urandom(12)
    from raftswarm.gossip import wire

    kid = wire.key_id(NEW)
    forged = kid + raw_nonce + ring._keys[kid].encrypt(raw_nonce, encode(big), kid)
    with pytest.raises(GossipProtocolError, match="exceeds"):
        ring.open(forged)


def test_stream_messages_may_exceed_a_packet_but_not_the_stream_cap():
    ring = Keyring([NEW])
    members = [
        {"node": f"node-{i}", "addr": f"10.0.{i // 256}.{i % 256}:7946", "inc": i, "meta": b"m" * 40, "state": 0}
        for i in range(100)
    ]
    big_push = Message(MessageType.PUSH_PULL, {"join": False, "reply": False, "members": members})
    sealed = ring.seal(big_push)
    assert len(sealed) > MAX_PACKET_BYTES
    assert ring.open(sealed).body["members"][99]["node"] == "node-99"
    with pytest.raises(GossipProtocolError, match="exceeds"):
        ring.open(b"\0" * (MAX_STREAM_BYTES + 1))


@pytest.mark.parametrize(
    "raw",
    [
        [1, 2],
        {"t": 99},
        {"t": MessageType.ALIVE},  # update records only travel inside other messages
        {"t": 3, "seq": 1},  # missing updates
        {"t": 3, "seq": -1, "updates": []},
        {"t": 3, "seq": True, "updates": []},  # a bool is not a sequence number
        {"t": 3, "seq": 1, "updates": [], "extra": 1},
        {"t": 7, "updates": [{**UPDATE, "meta": b"m" * 513}]},  # meta over memberlist's 512-byte cap
        {"t": 7, "updates": [{**UPDATE, "t": MessageType.PING}]},
    ],
)
def test_malformed_messages_are_protocol_errors(raw):
    with pytest.raises(GossipProtocolError):
        decode(msgpack.packb(raw, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_open_or_decode(data):
    ring = Keyring([NEW])
    for parse in (ring.open, decode):
        try:
            parse(data)
        except GossipProtocolError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["t", "seq", "target", "updates", "node", "addr", "inc", "meta", "from", "members", "join", "reply"]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["t", "seq", "target", "updates", "members", "join", "reply"]), msgpack_values, max_size=5
    ),
    st.integers(1, 12),
)
def test_structured_garbage_is_rejected_cleanly(body, kind):
    data = msgpack.packb({**body, "t": kind}, use_bin_type=True)
    try:
        decode(data)
    except GossipProtocolError:
        pass
