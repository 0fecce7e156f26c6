"""Log compaction and InstallSnapshot (Raft paper §7): the application snapshots its state, the log before it
is dropped, and a follower that needs dropped entries receives the snapshot in chunks of
`snapshot_chunk_size` bytes (any snapshot size), restores it, and continues from the entries after it.
"""

import random

import pytest
from raft_harness import MT, Network

from raftswarm.raft.core import SNAPSHOT_RESEND_HEARTBEATS, RaftConfig, RaftCore
from raftswarm.raft.messages import (
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    PersistedState,
    SnapshotMeta,
)

CHUNK = 1000


def lagging_cluster(snapshot_data: bytes, chunk_size: int = CHUNK, entries_after: int = 3) -> Network:
    """Nodes 1-3; node 3 is cut off while 20 entries commit, node 1 compacts them into a snapshot holding
    `snapshot_data`, and `entries_after` more entries commit. Node 3 is still cut off."""
    net = Network(snapshot_chunk_size=chunk_size)
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    for i in range(20):
        net.propose(1, b"before %d" % i)
    net.deliver()
    net.compact(1, snapshot_data)
    for i in range(entries_after):
        net.propose(1, b"after %d" % i)
    net.deliver()
    return net


def snapshot_chunks(net: Network, to: int) -> list[Message]:
    return [m for m in net.sent if m.type is MT.SNAPSHOT and m.to == to]


def assert_chunked_exactly(chunks: list[Message], data: bytes, size: int) -> None:
    """Every chunk is the slice of `data` at its offset, exactly `size` bytes except the last, marked done."""
    for m in chunks:
        assert m.chunk == data[m.index : m.index + size]
        assert m.done == (m.index + len(m.chunk) == len(data))
        assert len(m.chunk) == size or m.done
    assert sorted({m.index for m in chunks}) == list(range(0, len(data), size))


def test_compact_drops_the_log_up_to_the_snapshot_7():
    """§7: once the state machine has a snapshot at an applied index, the log up to and including it is dropped;
    the snapshot records the last included index and term and the membership at that point."""
    net = Network()
    net.elect(1)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver()
    leader = net[1]
    assert leader.applied_index == 9
    with pytest.raises(ValueError):
        leader.compact(10, b"not applied yet")

    snapshot = net.compact(1, b"state", index=7)
    assert snapshot.meta == SnapshotMeta(7, 2, ConfState(frozenset({1, 2, 3})))
    assert leader.snapshot_meta == snapshot.meta
    assert [e.index for e in leader.entries_after_snapshot()] == [8, 9]
    assert leader.term_at(6) is None and leader.term_at(7) == 2
    assert leader.last_index == 9
    with pytest.raises(ValueError):
        leader.compact(7, b"again")


def test_lagging_follower_gets_snapshot_in_chunks_then_entries_7():
    """§7 InstallSnapshot: a follower that needs entries the leader compacted receives the snapshot in chunks of
    exactly snapshot_chunk_size bytes (several, for a larger snapshot), restores it, and then receives the
    entries after it by ordinary replication."""
    data = bytes(range(256)) * 20  # 5120 bytes: five full chunks and a short one
    net = lagging_cluster(data)
    net.heal()
    net.sent.clear()
    net.tick_all(3)

    chunks = snapshot_chunks(net, 3)
    assert len({m.index for m in chunks}) == 6
    assert_chunked_exactly(chunks, data, CHUNK)
    assert net.nodes[3].restored_from.data == data
    assert net[3].snapshot_meta == net[1].snapshot_meta
    assert [(e.index, e.data) for e in net[3].entries_after_snapshot()] == [
        (e.index, e.data) for e in net[1].entries_after_snapshot()
    ]
    assert net.nodes[3].applied_data() == [b"after 0", b"after 1", b"after 2"]
    assert net[3].commit_index == net[1].commit_index


def test_snapshot_of_64_kib_installs_with_1_kib_chunks_7():
    """§7: a snapshot of any size installs: 70,000 bytes go as 69 chunks of 1024 bytes (the last shorter), and
    the follower ends up with the exact bytes."""
    data = random.Random(64).randbytes(70_000)
    net = lagging_cluster(data, chunk_size=1024)
    net.heal()
    net.sent.clear()
    net.tick_all(3)
    chunks = snapshot_chunks(net, 3)
    assert len({m.index for m in chunks}) == 69
    assert_chunked_exactly(chunks, data, 1024)
    assert net.nodes[3].restored_from.data == data
    assert net[3].last_index == net[1].last_index


def test_lost_snapshot_chunk_is_resent_7():
    """§7: a lost chunk stalls the transfer only until it has gone unanswered for SNAPSHOT_RESEND_HEARTBEATS
    heartbeats, when the leader resends it; the follower then continues from where it was."""
    data = bytes(range(256)) * 20
    net = lagging_cluster(data)
    net.heal()
    net.drop_next(lambda m: m.type is MT.SNAPSHOT and m.index == 2 * CHUNK)
    net.sent.clear()
    net.tick(2)
    net.tick(3)
    net.tick(1)
    net.deliver()
    assert net.nodes[3].restored_from is None, "stalled at the lost chunk"
    assert [m.index for m in snapshot_chunks(net, 3)] == [0, CHUNK, 2 * CHUNK]

    net.tick_all(SNAPSHOT_RESEND_HEARTBEATS)
    assert snapshot_chunks(net, 3)[3].index == 2 * CHUNK
    assert_chunked_exactly(snapshot_chunks(net, 3), data, CHUNK)
    assert net.nodes[3].restored_from.data == data
    assert net[3].last_index == net[1].last_index


def test_lost_chunk_acknowledgement_is_recovered_7():
    """§7: when a chunk arrives but its acknowledgement is lost, the leader resends that chunk; the follower,
    which already has it, answers with the offset it expects, and the transfer continues without a gap or a
    duplicate byte."""
    data = bytes(range(256)) * 20
    net = lagging_cluster(data)
    net.heal()
    net.drop_next(lambda m: m.type is MT.SNAPSHOT_RESP and m.index == 3 * CHUNK)
    net.sent.clear()
    net.tick(1)
    net.deliver()
    assert net.nodes[3].restored_from is None
    net.tick_all(SNAPSHOT_RESEND_HEARTBEATS)
    assert [m.index for m in net.sent if m.type is MT.SNAPSHOT_RESP and m.reject] == [3 * CHUNK]
    assert net.nodes[3].restored_from.data == data
    assert net[3].last_index == net[1].last_index


def test_follower_restarted_mid_transfer_receives_the_snapshot_from_the_start_7():
    """§7: the chunks a follower received are not persisted; after a restart it answers the next chunk with the
    offset it expects (0), and the leader starts the snapshot over."""
    data = bytes(range(256)) * 20
    net = lagging_cluster(data)
    net.heal()
    stall = net.drop_if(lambda m: m.type is MT.SNAPSHOT and m.index >= 3 * CHUNK)
    net.tick_all(1)
    assert net.nodes[3].restored_from is None
    net.crash(3)
    net.restart(3)
    net.filters.remove(stall)
    net.sent.clear()
    net.tick_all(3)
    assert [m.index for m in net.sent if m.type is MT.SNAPSHOT_RESP and m.reject][:1] == [0]
    assert_chunked_exactly(snapshot_chunks(net, 3), data, CHUNK)
    assert net.nodes[3].restored_from.data == data
    assert net[3].last_index == net[1].last_index


def test_snapshot_over_a_link_slower_than_a_heartbeat_sends_each_chunk_a_few_times_7():
    """§7: resending the unacknowledged chunk on a heartbeat must not multiply traffic: when a round trip takes
    longer than a heartbeat (here each message takes one tick), a 40-chunk snapshot still goes out as about one
    copy per chunk per heartbeat it is in flight, not as a growing number of duplicate streams."""
    data = random.Random(7).randbytes(40 * 1024)
    net = lagging_cluster(data, chunk_size=1024)
    net.heal()
    net.sent.clear()
    net.tick_all_with_latency(1000, latency=1, until=lambda: net.nodes[3].restored_from is not None)
    assert net.nodes[3].restored_from.data == data
    sent = len(snapshot_chunks(net, 3))
    assert sent <= 4 * 40, f"{sent} SNAPSHOT messages for a 40-chunk snapshot"


def test_restored_follower_restarts_from_snapshot_and_log_7():
    """§7 with Figure 2 persistence: a follower that installed a snapshot and crashed comes back from that
    snapshot plus the entries after it: same log, and only the entries after the snapshot are re-applied."""
    data = b"S" * 3500
    net = lagging_cluster(data)
    net.heal()
    net.tick_all(3)
    before = (net[3].snapshot_meta, net[3].entries_after_snapshot(), net[3].commit_index)

    net.crash(3)
    restarted = net.restart(3)
    assert (restarted.snapshot_meta, restarted.entries_after_snapshot(), restarted.commit_index) == before
    assert net.nodes[3].restored_from.data == data
    ready = net.tick(3)[0]
    assert [e.data for e in ready.committed_entries] == [b"after 0", b"after 1", b"after 2"]


def test_new_member_joins_from_snapshot_and_learns_membership_7():
    """§7 with §4: a server added after the log was compacted starts from the snapshot (which carries the
    membership at its index) and replays the membership changes after it, ending with the leader's view."""
    net = Network(snapshot_chunk_size=64)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver()
    net.tick_all(1)
    net.compact(1, b"state of five entries" * 10)
    net.add_node(4)
    net.propose_conf_change(1, ConfChangeType.ADD_LEARNER, 4)
    net.deliver()
    net.tick_all(3)
    assert net.nodes[4].restored_from.data == b"state of five entries" * 10
    assert net[4].conf_state == net[1].conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert net[4].last_index == net[1].last_index

    net.propose(1, b"for the learner too")
    net.deliver()
    net.tick_all(1)
    assert net.nodes[4].applied_data() == [b"for the learner too"]


def test_snapshot_the_follower_already_holds_only_advances_commit_7():
    """§7: "if the follower already has the entry the snapshot ends with, it retains the log entries following
    it": it commits up to the snapshot without replacing its log."""
    entries = RaftCore.bootstrap([1, 2, 3]).entries + [Entry(4, 2, data=b"a"), Entry(5, 2, data=b"b")]
    core = RaftCore(RaftConfig(1), PersistedState(HardState(2, 0, 3), None, entries), random.Random(0))
    meta = SnapshotMeta(4, 2, ConfState(frozenset({1, 2, 3})))
    ready = core.step(Message(MT.SNAPSHOT, to=1, frm=2, term=2, snapshot_meta=meta, chunk=b"state", done=True))
    assert ready.snapshot is None
    assert core.commit_index == 4 and core.last_index == 5
    assert [e.index for e in ready.committed_entries] == [1, 2, 3, 4]
    assert [(m.type, m.index, m.reject) for m in ready.messages] == [(MT.APPEND_RESP, 4, False)]
