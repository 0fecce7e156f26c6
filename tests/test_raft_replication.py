"""Log replication (Raft paper §5.3) with etcd's flow control: probe/replicate states, bounded in-flight
APPENDs, batching by bytes, and fast backtracking by term on rejection.

Each test names the rule it guards; each would fail if the leader or follower stopped following it.
"""

import random

import pytest
from raft_harness import MT, Network, messages_of, new_core

from raftswarm.errors import ProposalDropped
from raftswarm.raft.core import RaftConfig, RaftCore
from raftswarm.raft.messages import COMMIT_AWAITED, Entry, EntryType, HardState, Message, PersistedState, Role

ELECTION_TICKS = 10


def follower_with_log(*terms: int, commit: int = 3, term: int = 3) -> RaftCore:
    """Node 1 of {1, 2, 3} holding the bootstrap entries 1-3 and then one entry per term in `terms`."""
    entries = RaftCore.bootstrap([1, 2, 3]).entries
    entries += [Entry(4 + i, t, EntryType.NORMAL, f"{4 + i}@{t}".encode()) for i, t in enumerate(terms)]
    return RaftCore(RaftConfig(1), PersistedState(HardState(term, 0, commit), None, entries), random.Random(0))


def log_of(core: RaftCore) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in core.entries_after_snapshot()]


def test_leader_appends_proposal_to_its_log_and_sends_it_to_every_follower_5_3():
    """§5.3: the leader appends a proposal to its log in its current term, persists it, and sends it in
    AppendEntries carrying the index and term of the entry before it and the leader's commit index."""
    net = Network()
    leader = net.elect(1)
    net.tick_all(1)
    ready = net.propose(1, b"x")
    new = Entry(5, 2, EntryType.NORMAL, b"x")
    assert ready.entries == [new]
    appends = messages_of(ready, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    assert all((m.term, m.index, m.log_term, m.entries, m.commit) == (2, 4, 2, [new], 4) for m in appends)
    assert leader.commit_index == 4, "not committed before a majority stored it"

    net.deliver()
    assert leader.commit_index == 5
    net.tick_all(1)
    assert all(n.applied_data() == [b"x"] for n in net.nodes.values())


@pytest.mark.parametrize(
    "prev_index, prev_term, hint",
    [
        (7, 3, (5, 2)),  # the follower has no entry at 7: it points at its last entry
        (5, 3, (5, 2)),  # it has 5 but of term 2: it points at its last entry of term <= 3
        (5, 1, (3, 1)),  # ... of term <= 1: skip the term-2 entries in one go
    ],
)
def test_follower_rejects_append_whose_previous_entry_does_not_match_5_3(prev_index, prev_term, hint):
    """§5.3 consistency check: a follower that does not hold the entry before the new ones (same index and term)
    refuses the AppendEntries and changes nothing; its reply carries a hint (index, term) for fast backtracking."""
    core = follower_with_log(2, 2)
    ready = core.step(Message(MT.APPEND, to=1, frm=2, term=3, index=prev_index, log_term=prev_term, entries=[]))
    (reply,) = ready.messages
    assert (reply.type, reply.reject, reply.index) == (MT.APPEND_RESP, True, prev_index)
    assert (reply.reject_hint, reply.log_term) == hint
    assert log_of(core)[3:] == [(4, 2), (5, 2)] and ready.entries == []


def test_follower_overwrites_conflicting_uncommitted_entries_5_3():
    """§5.3: if an existing entry conflicts with a new one (same index, different term), the follower deletes it
    and everything after it, then appends the leader's entries."""
    core = follower_with_log(2, 2, 2)
    ready = core.step(
        Message(MT.APPEND, to=1, frm=2, term=3, index=4, log_term=2, entries=[Entry(5, 3, data=b"new")], commit=3)
    )
    assert log_of(core)[3:] == [(4, 2), (5, 3)]
    assert ready.entries == [Entry(5, 3, data=b"new")], "the overwrite must be persisted"
    assert [(m.reject, m.index) for m in ready.messages] == [(False, 5)]


def test_follower_keeps_entries_after_ones_it_already_has_5_3():
    """§5.3: only a conflict truncates: an AppendEntries whose entries the follower already holds (a delayed
    duplicate) leaves the entries after them in place."""
    core = follower_with_log(2, 2, 2)
    ready = core.step(Message(MT.APPEND, to=1, frm=2, term=3, index=3, log_term=1, entries=[Entry(4, 2, data=b"4@2")]))
    assert log_of(core)[3:] == [(4, 2), (5, 2), (6, 2)]
    assert ready.entries == []
    assert [(m.reject, m.index) for m in ready.messages] == [(False, 4)]


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "follower_terms",
    [
        [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing one entry
        [1, 1, 1, 4],  # (b) missing many
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) one extra uncommitted entry
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d) extra entries of a newer term
        [1, 1, 1, 4, 4, 4, 4],  # (e) missing entries and extra ones of term 4
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f) a whole divergent history of terms 2 and 3
    ],
    ids=list("abcdef"),
)
def test_leader_brings_every_figure_7_follower_log_into_line_5_3(follower_terms):
    """§5.3, Figure 7: whatever the follower's log (missing entries, extra uncommitted ones, or both), the new
    leader of term 8 finds the last entry they agree on, deletes the follower's entries after it, and sends its
    own, until the two logs are identical."""

    def disk(terms: list[int], term: int) -> PersistedState:
        entries = RaftCore.bootstrap([1, 2, 3]).entries  # indexes 1-3, term 1, as in the figure
        entries += [Entry(i, t, data=b"%d@%d" % (i, t)) for i, t in enumerate(terms[3:], start=4)]
        return PersistedState(HardState(term, 0, 3), None, entries)

    net = Network(
        disks={1: disk(FIGURE_7_LEADER, 7), 2: disk(follower_terms, 7), 3: disk(FIGURE_7_LEADER, 7)},
        pre_vote=False,
        check_quorum=False,
    )
    net.elect(1)
    net.tick_all(2)
    assert net[1].term == 8
    assert log_of(net[2]) == log_of(net[1]) == [(i, t) for i, t in enumerate(FIGURE_7_LEADER + [8], start=1)]
    assert net[2].commit_index == 11


def test_entry_commits_once_stored_on_a_majority_5_3():
    """§5.3: an entry is committed once the leader has replicated it on a majority of the servers, and only then
    applied; a minority of replicas is not enough."""
    net = Network((1, 2, 3, 4, 5))
    leader = net.elect(1)
    net.tick_all(1)
    net.propose(1, b"x")
    appends = {m.to: m for m in net.take()}
    assert leader.last_index == 7

    net.step(appends[2])
    net.deliver()
    assert leader.commit_index == 6, "leader + one follower of five is no majority"
    assert net.nodes[1].applied_data() == []

    net.step(appends[3])
    net.deliver()
    assert leader.commit_index == 7
    assert net.nodes[1].applied_data() == [b"x"]


def test_followers_learn_commit_from_next_append_5_3():
    """§5.3: the leader includes its commit index in every AppendEntries, so followers apply an entry once the
    leader has committed it; one that has every entry sent to it hears it in a COMMIT, which it does not answer."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.propose(1, b"x")
    delivered = net.deliver()
    commit_carriers = [m for m in delivered if m.type in (MT.APPEND, MT.COMMIT) and m.commit == 5]
    assert not [m for m in delivered if m.type is MT.APPEND_RESP and m.index == 5 and m.frm in (2, 3)][2:], (
        "one answer per follower for the entry, none for the commit"
    )
    assert sorted(m.to for m in commit_carriers) == [2, 3]
    assert all(n.core.commit_index == 5 and n.applied_data() == [b"x"] for n in net.nodes.values())


def test_followers_learn_commit_from_heartbeat_5_3():
    """§5.3 (etcd): heartbeats carry the commit index too, so a follower that missed the message announcing a
    commit applies the entry at the next heartbeat."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.drop_if(lambda m: m.type is MT.COMMIT or (m.type is MT.APPEND and not m.entries))
    net.propose(1, b"x")
    net.deliver()
    assert net[1].commit_index == 5
    assert [net[i].commit_index for i in (2, 3)] == [4, 4]

    net.heal()
    net.tick(1)
    net.deliver()
    assert [n.applied_data() for n in net.nodes.values()] == [[b"x"]] * 3


def test_heartbeat_never_commits_a_follower_past_its_verified_match_5_3():
    """§5.3: a follower may only commit entries the leader has verified to match its log; a heartbeat tells each
    follower at most min(commit, its match)."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.drop_if(lambda m: m.type is MT.APPEND and m.to == 3)
    net.propose(1, b"x")
    net.deliver()
    ready = net.tick(1)[0]
    (beat,) = messages_of(ready, MT.HEARTBEAT, to=3)
    assert beat.commit == 4 < net[1].commit_index == 5
    net.deliver()
    assert net[3].commit_index == 4


def test_divergent_log_is_repaired_in_few_rounds_with_term_hints_5_3():
    """§5.3 optimization (etcd fast backtracking): a follower holding 50 uncommitted entries of an old term,
    probed by a leader whose log is 50 entries longer in newer terms, is repaired after one rejection instead of
    50: its hint lets the leader skip the whole conflicting term. The conflicting entries are overwritten and
    never applied."""
    net = Network(seed=1)
    net.elect(1)
    net.tick_all(1)
    net.isolate(1)
    for i in range(50):
        net.propose(1, b"lost %d" % i)
    net.tick_all(4 * ELECTION_TICKS)
    second = net.leader()
    assert second in (2, 3)
    for i in range(50):
        net.propose(second, b"kept %d" % i)
    net.deliver()
    third = 5 - second
    net.transfer_leadership(second, third)  # a leader that will probe node 1 from the end of its log
    net.deliver()
    assert net.leader() == third
    assert net[1].last_index == 54 and net[third].last_index == 56

    net.heal()
    net.sent.clear()
    net.tick_all(3)
    rejections = [m for m in net.sent if m.type is MT.APPEND_RESP and m.frm == 1 and m.reject]
    assert rejections and rejections[0].index >= 55, "the first probe starts at the leader's last entry"
    assert len(rejections) <= 2, f"{len(rejections)} rounds of backtracking"
    assert log_of(net[1]) == log_of(net[third])
    assert net.nodes[1].applied_data() == [b"kept %d" % i for i in range(50)]


def test_follower_far_behind_is_found_after_one_rejection_5_3():
    """§5.3 optimization: a follower that missed many entries rejects once, pointing at its last entry, and the
    leader resumes from there instead of decrementing nextIndex one entry at a time."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    for i in range(30):
        net.propose(1, b"%d" % i)
    net.deliver()
    net.heal()
    net.sent.clear()
    net.tick_all(2)
    rejections = [m for m in net.sent if m.type is MT.APPEND_RESP and m.frm == 3 and m.reject]
    assert [m.reject_hint for m in rejections] == [4]
    assert log_of(net[3]) == log_of(net[1])
    assert net.nodes[3].applied_data() == [b"%d" % i for i in range(30)]


def test_replicate_state_caps_unacknowledged_appends_at_max_inflight_msgs():
    """Flow control (etcd's Inflights): in REPLICATE state the leader streams APPENDs without waiting, but never
    has more than max_inflight_msgs unacknowledged to one follower; each acknowledgement frees one slot."""
    net = Network(max_inflight_msgs=3, max_size_per_msg=1)
    net.elect(1)
    net.tick_all(1)
    assert net[1].progress()[2][2] == "replicate"
    for i in range(10):
        net.propose(1, b"%d" % i)
    to_2 = [m for m in net.queue if m.type is MT.APPEND and m.to == 2]
    assert [len(m.entries) for m in to_2] == [1, 1, 1]

    net.take(lambda m: m is to_2[0])
    net.step(to_2[0])
    net.deliver(lambda m: m.type is MT.APPEND_RESP)
    to_2_after = [m for m in net.queue if m.type is MT.APPEND and m.to == 2]
    assert len(to_2_after) == 3 and to_2_after[-1].entries[0].index == 8

    net.deliver()
    net.tick_all(1)
    assert [n.applied_data() for n in net.nodes.values()] == [[b"%d" % i for i in range(10)]] * 3


def test_replicate_state_caps_unacknowledged_bytes_at_max_inflight_bytes():
    """Flow control (etcd's MaxInflightBytes): the in-flight window is bounded by payload bytes too: once the
    unacknowledged APPENDs to a follower carry max_inflight_bytes, no more go out."""
    net = Network(max_inflight_bytes=250, max_size_per_msg=1)
    net.elect(1)
    net.tick_all(1)
    for i in range(6):
        net.propose(1, bytes([i]) * 100)
    to_2 = [m for m in net.queue if m.type is MT.APPEND and m.to == 2]
    assert [len(m.entries[0].data) for m in to_2] == [100, 100, 100]
    net.deliver()
    net.tick_all(1)
    assert net[2].last_index == net[1].last_index == 10


def test_max_size_per_msg_bounds_the_entries_in_one_append():
    """Batching (etcd's MaxSizePerMsg): a follower catching up gets its entries in APPENDs of at most
    max_size_per_msg bytes each, yet an entry bigger than the limit still goes out, alone."""
    net = Network(max_size_per_msg=350)  # three 100-byte entries (plus 16 bytes of overhead each) fit
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    for i in range(20):
        net.propose(1, bytes([i]) * 100)
    net.deliver()
    net.heal()
    net.sent.clear()
    net.tick_all(2)
    appends = [m for m in net.sent if m.type is MT.APPEND and m.to == 3 and m.entries]
    assert max(len(m.entries) for m in appends) == 3
    assert sum(len(m.entries) for m in appends) == 20
    assert net[3].last_index == net[1].last_index

    net.sent.clear()
    net.propose(1, b"B" * 1000)
    net.deliver()
    assert [len(m.entries) for m in net.sent if m.type is MT.APPEND and m.to == 3 and m.entries] == [1]
    assert net[3].last_index == net[1].last_index


def test_probe_state_sends_one_append_per_heartbeat_until_acknowledged():
    """Flow control (etcd's StateProbe): while the leader does not know where a follower's log matches, it sends
    at most one APPEND per heartbeat response, however many proposals arrive, until one is accepted."""
    net = Network()
    net.campaign(1)
    net.deliver(lambda m: m.type in (MT.PRE_VOTE, MT.PRE_VOTE_RESP, MT.VOTE, MT.VOTE_RESP))
    assert net[1].role is Role.LEADER
    blackhole = net.drop_if(lambda m: m.type is MT.APPEND and m.to == 3)
    net.deliver()
    assert net[1].progress()[3][2] == "probe"

    net.sent.clear()
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver()
    assert net.sent_by(1, MT.APPEND, to=3) == []

    for heartbeat in range(1, 4):
        net.tick_all(1)
        assert len(net.sent_by(1, MT.APPEND, to=3)) == heartbeat
    assert net[1].progress()[3][2] == "probe"

    net.filters.remove(blackhole)
    net.tick_all(1)
    assert net[1].progress()[3][2] == "replicate"
    assert log_of(net[3]) == log_of(net[1])


def test_lost_acknowledgements_are_recovered_by_heartbeats():
    """Flow control: when a follower's acknowledgements are lost the in-flight window stays full and the leader
    stops sending; a heartbeat response frees a slot so one APPEND goes out, its ack resyncs the window, and
    replication resumes."""
    net = Network(max_inflight_msgs=2, max_size_per_msg=1)
    net.elect(1)
    net.tick_all(1)
    lost_acks = net.drop_if(lambda m: m.type is MT.APPEND_RESP and m.frm == 2)
    for i in range(6):
        net.propose(1, b"%d" % i)
    net.deliver()
    assert net[2].last_index == 6 and net[1].last_index == 10
    assert net[1].progress()[2][0] == 4

    net.filters.remove(lost_acks)
    net.deliver()
    assert net[2].last_index == 6, "nothing is in flight: only a heartbeat can restart replication"
    net.tick_all(1)
    assert net[1].progress()[2][0] == 10
    assert log_of(net[2]) == log_of(net[1])


def test_proposed_batch_travels_in_one_append_per_follower():
    """Group commit: entries proposed together are appended together and reach each follower in one APPEND,
    whether proposed at the leader or forwarded by a follower in one PROPOSE."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    ready = net.handle(1, net[1].propose_batch([b"a", b"b", b"c"]))
    assert [(e.index, e.data) for e in ready.entries] == [(5, b"a"), (6, b"b"), (7, b"c")]
    appends = messages_of(ready, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    assert all([e.index for e in m.entries] == [5, 6, 7] for m in appends)

    ready = net.handle(2, net[2].propose_batch([b"d", b"e"]))
    assert [(m.type, m.to, [e.data for e in m.entries]) for m in ready.messages] == [(MT.PROPOSE, 1, [b"d", b"e"])]
    net.deliver()
    net.tick_all(1)
    assert all(n.applied_data() == [b"a", b"b", b"c", b"d", b"e"] for n in net.nodes.values())


def test_follower_forwards_proposals_to_the_leader_5_1():
    """§5.1: clients may talk to any server; a follower passes proposals on to the leader it knows, and refuses
    them (ProposalDropped) when it knows none."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    ready = net.propose(2, b"via 2")
    assert [(m.type, m.to) for m in ready.messages] == [(MT.PROPOSE, 1)]
    assert ready.entries == []
    net.deliver()
    net.tick_all(1)
    assert all(n.applied_data() == [b"via 2"] for n in net.nodes.values())

    leaderless = new_core(2)
    with pytest.raises(ProposalDropped):
        leaderless.propose(b"nobody to ask")
    assert leaderless.last_index == 3


def test_a_commit_message_commits_only_what_the_follower_holds_and_gets_no_answer_5_3():
    """COMMIT (the leader's new commit index for a follower with every entry sent to it) is an APPEND without
    entries and without an answer: a follower whose log does not hold the entry it names commits nothing."""
    core = follower_with_log(3, 3)
    ready = core.step(Message(MT.COMMIT, to=1, frm=2, term=3, index=5, log_term=3, commit=9))
    assert core.commit_index == 5 and ready.messages == []
    core = follower_with_log(3, 3)
    for index, log_term in ((5, 2), (6, 3)):  # another term at 5; past its last entry
        ready = core.step(Message(MT.COMMIT, to=1, frm=2, term=3, index=index, log_term=log_term, commit=9))
        assert core.commit_index == 3 and ready.messages == []


def test_a_stale_leaders_commit_message_is_answered_with_the_newer_term():
    core = follower_with_log(3, 3, term=5)
    ready = core.step(Message(MT.COMMIT, to=1, frm=2, term=3, index=5, log_term=3, commit=5))
    assert core.commit_index == 3
    assert [(m.type, m.to, m.term) for m in ready.messages] == [(MT.APPEND_RESP, 2, 5)]


def test_a_commit_of_a_followers_own_proposal_is_marked_awaited():
    """The driver holds a COMMIT back for an APPEND to carry it, unless a caller on the follower waits for it:
    the leader marks the COMMIT that takes in a proposal the follower forwarded."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.propose(2, b"from 2")
    delivered = net.deliver()
    commits = {m.to: m.context for m in delivered if m.type is MT.COMMIT}
    assert commits == {2: COMMIT_AWAITED, 3: b""}
    net.propose(1, b"from 1")
    assert all(not m.context for m in net.deliver() if m.type is MT.COMMIT), "once: the proposal is committed"
