"""The swarm's gossip keys: rotated by the leader's key manager, handed out newest first, used by nodes to
seal with the second newest (so no node seals under a key another has not received yet)."""

from raftswarm.manager.keymanager import GOSSIP_KEY_ROTATION, gossip_keyring_order, rotated_gossip_keys


def test_gossip_keys_rotate_when_due_keeping_the_newest_three_and_nodes_seal_with_the_second_newest():
    keys = rotated_gossip_keys([], now=1000.0)
    assert [k["LamportTime"] for k in keys] == [1]
    assert rotated_gossip_keys(keys, now=1000.0 + GOSSIP_KEY_ROTATION - 1) is None  # not due yet
    for step in range(1, 5):
        keys = rotated_gossip_keys(keys, now=1000.0 + step * GOSSIP_KEY_ROTATION)
    assert [k["LamportTime"] for k in keys] == [5, 4, 3]
    assert len({k["Key"] for k in keys}) == 3
    assert gossip_keyring_order([b"newest", b"older", b"oldest"]) == [b"older", b"newest", b"oldest"]
    assert gossip_keyring_order([b"only"]) == [b"only"]
