"""Membership changes (dissertation §4.1 single-server changes, §4.2.1 learners / non-voting members): one change
at a time, taking effect when committed; learners replicate without voting; quorums follow the membership; a
removed leader steps down (§4.2.2).
"""

import random

import pytest
from raft_harness import MT, Network, win_election

from raftswarm.errors import ProposalDropped
from raftswarm.raft.core import RaftConfig, RaftCore
from raftswarm.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    PersistedState,
    Role,
)

ADD_VOTER, ADD_LEARNER, REMOVE = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE
ELECTION_TICKS = 10


def change_membership(net: Network, leader: int, kind: ConfChangeType, node_id: int) -> None:
    """Propose a change and let it commit and reach everyone (a new node catches up over a few heartbeats)."""
    if kind is not REMOVE and node_id not in net.nodes:
        net.add_node(node_id)
    net.propose_conf_change(leader, kind, node_id)
    net.deliver()
    net.tick_all(3)


def log_of(net: Network, node_id: int) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in net[node_id].entries_after_snapshot()]


def test_learner_receives_entries_but_does_not_count_toward_quorum_4_2_1():
    """§4.2.1: a new server joins as a non-voting learner: it learns the membership from the log, receives and
    applies every entry, but the leader does not count it when deciding what is committed."""
    net = Network((1, 2))
    net.elect(1)
    net.tick_all(1)
    change_membership(net, 1, ADD_LEARNER, 3)
    for node_id in (1, 2, 3):
        assert net[node_id].conf_state == ConfState(frozenset({1, 2}), frozenset({3}))
    assert log_of(net, 3) == log_of(net, 1)

    net.propose(1, b"x")
    net.deliver()
    net.tick_all(1)
    assert net.nodes[3].applied_data() == [b"x"]

    net.isolate(2)
    net.propose(1, b"y")
    net.deliver()
    assert net[3].last_index == net[1].last_index, "the learner stores the entry..."
    assert net[1].commit_index == net[1].last_index - 1, "...but leader + learner are no majority of {1, 2}"


def test_promoted_learner_counts_toward_quorum_4_2_1():
    """§4.2.1: once caught up, a learner is promoted with ADD_VOTER; from then on its acknowledgement counts, so
    leader + new voter form a majority of three."""
    net = Network((1, 2))
    net.elect(1)
    net.tick_all(1)
    change_membership(net, 1, ADD_LEARNER, 3)
    change_membership(net, 1, ADD_VOTER, 3)
    for node_id in (1, 2, 3):
        assert net[node_id].conf_state == ConfState(frozenset({1, 2, 3}))

    net.isolate(2)
    net.propose(1, b"y")
    net.deliver()
    assert net[1].commit_index == net[1].last_index
    assert net.nodes[1].applied_data() == [b"y"]


def test_learner_never_campaigns_4_2_1():
    """§4.2.1: a learner cannot become leader: it does not time out into an election, ignores an explicit
    campaign and TIMEOUT_NOW, and the leader refuses to transfer leadership to it."""
    net = Network(seed=3)
    net.elect(1)
    net.tick_all(1)
    change_membership(net, 1, ADD_LEARNER, 4)
    net.crash(1)
    net.sent.clear()
    net.tick_all(6 * ELECTION_TICKS)
    assert not net.sent_by(4, MT.PRE_VOTE) and not net.sent_by(4, MT.VOTE)
    leader = net.leader()
    assert leader in (2, 3)
    assert net[4].leader_id == leader

    assert net.campaign(4).messages == []
    ready = net[4].step(Message(MT.TIMEOUT_NOW, to=4, frm=leader, term=net[leader].term))
    assert ready.messages == [] and net[4].role is Role.FOLLOWER
    with pytest.raises(ProposalDropped):
        net[leader].transfer_leadership(4)


def test_added_voter_raises_the_quorum_4_1():
    """§4.1: adding a fourth voter makes the majority three: the two original nodes alone no longer commit."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    change_membership(net, 1, ADD_VOTER, 4)
    assert net[1].conf_state.voters == {1, 2, 3, 4}
    assert net[4].conf_state.voters == {1, 2, 3, 4}

    net.isolate(3, 4)
    net.propose(1, b"x")
    net.deliver()
    assert net[1].commit_index == net[1].last_index - 1, "2 of 4 is no majority"
    net.heal()
    net.isolate(3)
    net.tick_all(1)
    assert net[1].commit_index == net[1].last_index, "1, 2 and the new voter 4 are"
    assert net.nodes[4].applied_data() == [b"x"]


def test_removed_voter_gets_nothing_more_and_quorum_shrinks_4_1():
    """§4.1: once a REMOVE commits, the leader stops replicating to that server and the majority is computed
    over the remaining voters: with {1, 2, 3, 4} two nodes cannot commit, with {1, 2, 3} they can."""
    net = Network((1, 2, 3, 4))
    net.elect(1)
    net.tick_all(1)
    net.isolate(3, 4)
    net.propose(1, b"a")
    net.deliver()
    assert net[1].commit_index == net[1].last_index - 1
    net.heal()
    net.tick_all(1)

    change_membership(net, 1, REMOVE, 4)
    for node_id in (1, 2, 3):
        assert net[node_id].conf_state == ConfState(frozenset({1, 2, 3}))
    assert set(net[1].progress()) == {1, 2, 3}

    net.sent.clear()
    net.isolate(3, 4)
    net.propose(1, b"b")
    net.deliver()
    net.tick_all(1)
    assert net[1].commit_index == net[1].last_index
    assert net.nodes[2].applied_data() == [b"a", b"b"]
    assert not [m for m in net.sent if m.to == 4]


def test_applying_a_removal_commits_entries_held_back_only_by_the_removed_voter_4_1():
    """§4.1: the new, smaller majority applies as soon as the removal is applied: an entry stored only on the
    leader and one follower of {1, 2, 3, 4} commits in the same step, once voter 4 is gone."""
    net = Network((1, 2, 3, 4), max_size_per_msg=1)
    net.elect(1)
    net.tick_all(1)
    net.isolate(4)
    net.propose_conf_change(1, REMOVE, 4)  # index 6
    net.propose(1, b"x")  # index 7
    net.drop_if(lambda m: m.type is MT.APPEND and m.to == 3 and any(e.index == 7 for e in m.entries))
    net.deliver()
    assert (net[2].last_index, net[3].last_index) == (7, 6)
    assert net[1].conf_state.voters == {1, 2, 3}
    assert net[1].commit_index == 7
    assert net.nodes[1].applied_data() == [b"x"]


def test_only_one_membership_change_may_be_pending_4_1():
    """§4.1: a leader accepts a new membership change only once the previous one has been applied; a second
    one proposed meanwhile is refused (ProposalDropped) and leaves the log unchanged."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.add_node(4)
    net.add_node(5)
    net.propose_conf_change(1, ADD_LEARNER, 4)
    last = net[1].last_index
    with pytest.raises(ProposalDropped):
        net[1].propose_conf_change(ConfChange(ADD_LEARNER, 5))
    assert net[1].last_index == last

    net.deliver()
    net.tick_all(3)
    change_membership(net, 1, ADD_LEARNER, 5)
    assert net[1].conf_state == ConfState(frozenset({1, 2, 3}), frozenset({4, 5}))


def test_change_forwarded_while_another_is_pending_becomes_a_no_op_4_1():
    """§4.1: a change a follower forwards while another is pending cannot be refused to the proposer directly, so
    the leader logs it as an empty entry instead (as etcd does): it never takes effect."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.add_node(4)
    net.add_node(5)
    net.propose_conf_change(1, ADD_LEARNER, 4)
    net.propose_conf_change(2, ADD_LEARNER, 5)
    net.deliver()
    net.tick_all(3)
    assert net[1].conf_state.learners == {4}
    blank = net[1].entries_after_snapshot()[-1]
    assert (blank.type, blank.data, blank.index) == (EntryType.NORMAL, b"", 6)


def test_new_leader_accepts_no_change_before_applying_its_log_4_1():
    """§4.1 (etcd): a new leader cannot tell whether an entry from an earlier term in its log (possibly a
    membership change) is committed, so it refuses membership changes until it has applied everything it held
    when elected."""
    entries = RaftCore.bootstrap([1, 2, 3]).entries + [
        Entry(4, 2, EntryType.CONF_CHANGE, ConfChange(ADD_LEARNER, 9).encode())
    ]
    core = RaftCore(RaftConfig(1), PersistedState(HardState(2, 0, 3), None, entries), random.Random(0))
    win_election(core)
    assert core.term == 3 and core.last_index == 5
    with pytest.raises(ProposalDropped):
        core.propose_conf_change(ConfChange(ADD_LEARNER, 4))
    assert core.last_index == 5

    ready = core.step(Message(MT.APPEND_RESP, to=1, frm=2, term=3, index=5))
    assert [e.index for e in ready.committed_entries] == [4, 5]
    ready = core.propose_conf_change(ConfChange(ADD_LEARNER, 4))
    assert [(e.index, e.type) for e in ready.entries] == [(6, EntryType.CONF_CHANGE)]


def test_removed_leader_steps_down_and_never_campaigns_4_2_2():
    """§4.2.2: a leader removed from the cluster steps down once the removal commits; the others, which learned
    the commit from it, elect a leader among themselves, and the removed node never campaigns."""
    net = Network(seed=2)
    net.elect(1)
    net.tick_all(1)
    net.propose_conf_change(1, REMOVE, 1)
    net.deliver()
    assert net[1].role is Role.FOLLOWER
    for node_id in (1, 2, 3):
        assert net[node_id].conf_state.voters == {2, 3}

    net.sent.clear()
    net.tick_all(6 * ELECTION_TICKS)
    assert not [m for m in net.sent if m.frm == 1 and m.type in (MT.PRE_VOTE, MT.VOTE)]
    leader = net.leader()
    assert leader in (2, 3)
    net.propose(leader, b"after")
    net.deliver()
    net.tick_all(1)
    assert net.nodes[2].applied_data() == net.nodes[3].applied_data() == [b"after"]


def test_last_voter_cannot_be_removed_4_1():
    """§4.1: removing the only voter would leave no one to elect; the leader refuses."""
    net = Network((1,))
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net[1].propose_conf_change(ConfChange(REMOVE, 1))
    assert net[1].conf_state.voters == {1}


def test_force_new_cluster_recovers_a_lone_survivor_with_every_entry_it_holds_4():
    """Recovery from permanent quorum loss (--force-new-cluster): the survivor keeps every entry it holds -- its
    persisted commit index may lag the cluster's, so its tail may hold acknowledged writes -- commits the removal
    of every other member, and then leads alone."""
    net = Network(seed=1)
    net.elect(1)
    net.propose(1, b"committed")
    net.deliver()
    net.tick_all(1)
    net.crash(2)
    net.crash(3)
    net.propose(1, b"never committed")
    assert net[1].last_index == 6 and net[1].commit_index == 5

    net.crash(1)
    state, removals = RaftCore.force_new_cluster(net.nodes[1].disk, 1)
    assert [ConfChange.decode(e.data) for e in removals] == [ConfChange(REMOVE, 2), ConfChange(REMOVE, 3)]
    assert [e.index for e in removals] == [7, 8] and state.hard_state.commit == 8
    net.nodes[1].disk = state
    survivor = net.restart(1)
    assert survivor.conf_state == ConfState(frozenset({1}))

    net.tick_all(3 * ELECTION_TICKS)
    assert survivor.role is Role.LEADER
    net.propose(1, b"after recovery")
    assert net.nodes[1].applied_data() == [b"committed", b"never committed", b"after recovery"]
