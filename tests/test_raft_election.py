"""Leader election (Raft paper §5.2, §5.4.1), Pre-Vote and CheckQuorum (dissertation §9.6).

In the manner of etcd's raft_paper_test.go: each test names the rule it guards and the section it comes
from. Tests of the paper's plain algorithm turn Pre-Vote and CheckQuorum off, as etcd's paper tests do.
"""

import random

import pytest
from raft_harness import MT, Network, messages_of, new_core, win_election

from raftswarm.raft.core import RaftConfig, RaftCore
from raftswarm.raft.messages import NONE, TRANSFER_CONTEXT, Entry, EntryType, HardState, Message, PersistedState, Role

PAPER = {"pre_vote": False, "check_quorum": False}
ELECTION_TICKS = 10


def ticks_until_campaign(core: RaftCore, limit: int = 100):
    """Tick `core` until it sends something; returns (ticks, that Ready)."""
    for ticks in range(1, limit + 1):
        ready = core.tick()
        if ready.messages:
            return ticks, ready
    raise AssertionError(f"node {core.id} never campaigned in {limit} ticks")


# -- §5.2 leader election ------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [False, True])
def test_follower_campaigns_after_randomized_election_timeout_5_2(pre_vote):
    """§5.2: a follower that hears from no leader for an election timeout, chosen at random from
    [election_ticks, 2*election_ticks), starts an election (a pre-election with Pre-Vote), and not earlier."""
    timeouts = set()
    for seed in range(40):
        core = new_core(1, seed=seed, pre_vote=pre_vote, election_ticks=ELECTION_TICKS)
        ticks, ready = ticks_until_campaign(core)
        assert ELECTION_TICKS <= ticks < 2 * ELECTION_TICKS
        kind = MT.PRE_VOTE if pre_vote else MT.VOTE
        assert sorted(m.to for m in messages_of(ready, kind)) == [2, 3]
        timeouts.add(ticks)
    assert len(timeouts) >= 5, f"election timeouts are not randomized: {sorted(timeouts)}"


def test_randomized_timeouts_differ_across_nodes_and_seeds_5_2():
    """§5.2: randomized timeouts make split votes rare: nodes of one cluster, and one node under different
    seeds, time out after different numbers of ticks; the same seed replays the same timeout."""
    net = Network((1, 2, 3, 4, 5), seed=7)
    per_node = {node_id: ticks_until_campaign(net[node_id])[0] for node_id in net.nodes}
    assert len(set(per_node.values())) > 1, per_node

    per_seed = [ticks_until_campaign(new_core(1, seed=seed))[0] for seed in range(10)]
    assert len(set(per_seed)) > 1, per_seed
    assert per_seed == [ticks_until_campaign(new_core(1, seed=seed))[0] for seed in range(10)]


def test_candidate_increments_term_and_votes_for_itself_5_2():
    """§5.2: to begin an election a follower increments its term, votes for itself, persists both, and asks
    every other server for its vote with its last log term and index."""
    core = new_core(1, **PAPER)
    ready = core.campaign()
    assert core.role is Role.CANDIDATE
    assert (core.term, core.vote) == (2, 1)
    assert ready.hard_state == HardState(term=2, vote=1, commit=3)
    votes = messages_of(ready, MT.VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all((m.term, m.log_term, m.index) == (2, 1, 3) for m in votes)


@pytest.mark.parametrize(
    "size, votes, role",
    [
        (1, {}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True}, Role.LEADER),
        (5, {2: True, 3: True}, Role.LEADER),
        (3, {2: False, 3: False}, Role.FOLLOWER),
        (5, {2: False, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        (3, {}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: False, 3: False}, Role.CANDIDATE),
        (5, {}, Role.CANDIDATE),
    ],
)
def test_candidate_wins_with_majority_loses_or_waits_5_2(size, votes, role):
    """§5.2: a candidate wins once a majority of the full cluster granted its vote, returns to follower once a
    majority refused, and otherwise stays candidate."""
    core = new_core(1, range(1, size + 1), **PAPER)
    core.campaign()
    for voter, granted in votes.items():
        core.step(Message(MT.VOTE_RESP, to=1, frm=voter, term=2, reject=not granted))
    assert core.role is role
    assert core.term == 2


def test_new_leader_announces_itself_with_an_entry_of_its_term_5_2():
    """§5.2 and §8: a candidate that wins sends APPENDs to every other server at once, carrying an empty entry
    of its own term (which lets it learn what is committed)."""
    core = new_core(1, **PAPER)
    core.campaign()
    ready = core.step(Message(MT.VOTE_RESP, to=1, frm=2, term=2))
    assert core.role is Role.LEADER and core.leader_id == 1
    appends = messages_of(ready, MT.APPEND)
    assert sorted(m.to for m in appends) == [2, 3]
    assert ready.entries == [Entry(4, 2, EntryType.NORMAL, b"")]
    for m in appends:
        assert (m.term, m.index, m.log_term) == (2, 3, 1)
        assert m.entries == [Entry(4, 2, EntryType.NORMAL, b"")]


def test_vote_is_first_come_first_served_5_2():
    """§5.2: each server votes for at most one candidate in a term, first come first served; a repeated request
    from the candidate it voted for is granted again (the first reply may have been lost)."""
    core = new_core(1, **PAPER)
    ready = core.step(Message(MT.VOTE, to=1, frm=2, term=2, log_term=1, index=3))
    assert messages_of(ready, MT.VOTE_RESP)[0].reject is False
    assert ready.hard_state == HardState(term=2, vote=2, commit=3)

    ready = core.step(Message(MT.VOTE, to=1, frm=3, term=2, log_term=1, index=3))
    assert messages_of(ready, MT.VOTE_RESP)[0].reject is True
    assert core.vote == 2

    ready = core.step(Message(MT.VOTE, to=1, frm=2, term=2, log_term=1, index=3))
    assert messages_of(ready, MT.VOTE_RESP)[0].reject is False


@pytest.mark.parametrize(
    "last_term, last_index, granted",
    [
        (2, 10, False),  # a longer log whose last term is older is less up-to-date
        (3, 4, False),  # same last term, shorter log
        (3, 5, True),  # identical
        (3, 6, True),  # same last term, longer
        (4, 1, True),  # a newer last term wins however short
    ],
)
def test_voter_rejects_candidate_with_less_up_to_date_log_5_4_1(last_term, last_index, granted):
    """§5.4.1 election restriction: a voter denies its vote to a candidate whose log is less up-to-date than its
    own: compare last terms first, and only on equal last terms the last indexes."""
    entries = RaftCore.bootstrap([1, 2, 3]).entries + [Entry(4, 2), Entry(5, 3)]
    persisted = PersistedState(HardState(term=3, vote=NONE, commit=3), None, entries)
    core = RaftCore(RaftConfig(1, **PAPER), persisted, random.Random(0))
    ready = core.step(Message(MT.VOTE, to=1, frm=2, term=4, log_term=last_term, index=last_index))
    (reply,) = messages_of(ready, MT.VOTE_RESP)
    assert reply.reject is not granted
    assert core.term == 4
    assert core.vote == (2 if granted else NONE)


@pytest.mark.parametrize("kind", [MT.APPEND, MT.HEARTBEAT])
def test_candidate_returns_to_follower_on_append_of_its_term_5_2(kind):
    """§5.2: a candidate that receives an AppendEntries (or heartbeat) from a leader of its own term recognizes
    that leader and returns to follower."""
    core = new_core(1, **PAPER)
    core.campaign()
    core.step(Message(kind, to=1, frm=2, term=2, index=3, log_term=1, commit=3))
    assert core.role is Role.FOLLOWER
    assert (core.term, core.leader_id, core.vote) == (2, 2, 1)


def test_candidate_rejects_append_of_stale_term_5_2():
    """§5.2: if the AppendEntries carries a smaller term than the candidate's, the candidate rejects it and
    stays candidate."""
    core = new_core(1, **PAPER)
    core.campaign()
    core.campaign()  # term 3
    ready = core.step(Message(MT.APPEND, to=1, frm=2, term=2, index=3, log_term=1, entries=[Entry(4, 2)]))
    assert core.role is Role.CANDIDATE and core.term == 3
    assert core.last_index == 3 and ready.entries == []


def test_candidate_times_out_and_starts_new_election_in_higher_term_5_2():
    """§5.2: a candidate that neither wins nor loses (split vote) times out after a new randomized timeout and
    starts another election with an incremented term."""
    core = new_core(1, **PAPER)
    core.campaign()
    ticks, ready = ticks_until_campaign(core)
    assert ELECTION_TICKS <= ticks < 2 * ELECTION_TICKS
    assert core.role is Role.CANDIDATE and core.term == 3
    assert {m.term for m in messages_of(ready, MT.VOTE)} == {3}


@pytest.mark.parametrize(
    "message",
    [
        Message(MT.APPEND, to=1, frm=2, term=5, index=4, log_term=2, commit=3),
        Message(MT.HEARTBEAT, to=1, frm=2, term=5),
        Message(MT.APPEND_RESP, to=1, frm=2, term=5),
        Message(MT.HEARTBEAT_RESP, to=1, frm=3, term=5),
    ],
    ids=lambda m: m.type.name,
)
def test_higher_term_forces_leader_to_step_down_5_1(message):
    """§5.1: a server that sees a higher term updates its term; a leader that does reverts to follower at once
    (and recognizes the sender as leader when the message is one only a leader sends)."""
    core = new_core(1, **PAPER)
    win_election(core)
    ready = core.step(message)
    assert core.role is Role.FOLLOWER
    assert (core.term, core.vote) == (5, NONE)
    assert core.leader_id == (2 if message.type in (MT.APPEND, MT.HEARTBEAT) else NONE)
    assert ready.hard_state is not None and ready.hard_state.term == 5


def test_follower_rejects_stale_leader_and_tells_it_the_newer_term_5_1():
    """§5.1: a request with a stale term is rejected and the reply carries the current term, so the stale
    leader steps down when it hears back (with CheckQuorum a stale leader may hear nothing else)."""
    follower = new_core(2)
    follower.step(Message(MT.HEARTBEAT, to=2, frm=3, term=3))
    ready = follower.step(Message(MT.APPEND, to=2, frm=1, term=2, index=3, log_term=1, entries=[Entry(4, 2)]))
    assert follower.last_index == 3 and follower.term == 3 and follower.leader_id == 3
    (reply,) = ready.messages
    assert (reply.type, reply.to, reply.term) == (MT.APPEND_RESP, 1, 3)

    stale = new_core(1)
    win_election(stale)
    stale.step(reply)
    assert stale.role is Role.FOLLOWER and stale.term == 3


def test_leader_sends_heartbeats_every_heartbeat_interval_5_2():
    """§5.2: a leader sends periodic heartbeats to every follower to maintain its authority."""
    core = new_core(1, heartbeat_ticks=3, **PAPER)
    win_election(core)
    beats = [sorted(m.to for m in messages_of(core.tick(), MT.HEARTBEAT)) for _ in range(6)]
    assert beats == [[], [], [2, 3], [], [], [2, 3]]


def test_heartbeats_keep_followers_from_campaigning_5_2():
    """§5.2: a follower stays follower as long as it hears from a leader; a healthy cluster keeps one leader
    and one term forever."""
    net = Network(seed=3)
    net.elect(1)
    for _ in range(20 * ELECTION_TICKS):
        net.tick_all()
        assert net.leader() == 1
        assert set(net.terms().values()) == {2}
    assert not [m for m in net.sent if m.type in (MT.PRE_VOTE, MT.VOTE) and m.frm != 1]


def test_cluster_elects_a_leader_from_ticks_alone_5_2():
    """§5.2: started with no leader, ticking alone elects exactly one leader, and everyone agrees on it."""
    for seed in range(10):
        net = Network((1, 2, 3, 4, 5), seed=seed)
        net.tick_all(3 * ELECTION_TICKS)
        leader = net.leader()
        assert leader != NONE
        assert {n.core.leader_id for n in net.nodes.values()} == {leader}


# -- dissertation §9.6: Pre-Vote -------------------------------------------------------------------------


def test_pre_vote_changes_neither_term_nor_vote_9_6():
    """§9.6 Pre-Vote: a pre-candidate asks for votes for the term it would use (term+1) without incrementing its
    own term or voting, and a voter that grants a pre-vote records nothing either."""
    candidate = new_core(1)
    ready = candidate.campaign()
    assert candidate.role is Role.PRE_CANDIDATE
    assert (candidate.term, candidate.vote) == (1, NONE)
    assert ready.hard_state is None
    pre_votes = messages_of(ready, MT.PRE_VOTE)
    assert sorted(m.to for m in pre_votes) == [2, 3] and {m.term for m in pre_votes} == {2}

    voter = new_core(2)
    ready = voter.step(pre_votes[0] if pre_votes[0].to == 2 else pre_votes[1])
    (reply,) = messages_of(ready, MT.PRE_VOTE_RESP)
    assert (reply.reject, reply.term) == (False, 2)
    assert (voter.term, voter.vote, voter.role) == (1, NONE, Role.FOLLOWER)
    assert ready.hard_state is None


def test_pre_candidate_that_wins_runs_a_real_election_9_6():
    """§9.6 Pre-Vote: once a majority granted the pre-vote, the node increments its term, votes for itself and
    sends real VOTE requests."""
    core = new_core(1)
    core.campaign()
    ready = core.step(Message(MT.PRE_VOTE_RESP, to=1, frm=2, term=2))
    assert core.role is Role.CANDIDATE
    assert (core.term, core.vote) == (2, 1)
    assert ready.hard_state == HardState(2, 1, 3)
    assert sorted((m.to, m.term) for m in messages_of(ready, MT.VOTE)) == [(2, 2), (3, 2)]


def test_pre_candidate_refused_by_majority_returns_to_follower_without_new_term_9_6():
    """§9.6 Pre-Vote: a pre-candidate refused by a majority goes back to follower in its old term."""
    core = new_core(1)
    core.campaign()
    core.step(Message(MT.PRE_VOTE_RESP, to=1, frm=2, term=1, reject=True))
    core.step(Message(MT.PRE_VOTE_RESP, to=1, frm=3, term=1, reject=True))
    assert core.role is Role.FOLLOWER
    assert (core.term, core.vote) == (1, NONE)


def test_rejoining_partitioned_node_does_not_disturb_leader_9_6():
    """§9.6: a node cut off from the cluster keeps timing out, but with Pre-Vote it never increments its term;
    when it rejoins, the leader and the term stay as they were and it simply follows."""
    net = Network(seed=1)
    net.elect(1)
    net.isolate(3)
    for _ in range(10 * ELECTION_TICKS):
        net.tick_all()
        assert net[1].role is Role.LEADER
    assert net.sent_by(3, MT.PRE_VOTE), "the isolated node should have tried to campaign"
    assert net.terms() == {1: 2, 2: 2, 3: 2}

    net.heal()
    for _ in range(5 * ELECTION_TICKS):
        net.tick_all()
        assert net.leader() == 1
    assert net.terms() == {1: 2, 2: 2, 3: 2}
    assert net[3].role is Role.FOLLOWER and net[3].leader_id == 1


def test_pre_vote_alone_refuses_node_with_stale_log_9_6():
    """§9.6: even without CheckQuorum, a rejoining node that missed committed entries cannot win a pre-vote,
    so it does not raise the cluster's term."""
    net = Network(seed=2, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"while 3 was away")
    net.tick_all(5 * ELECTION_TICKS)
    assert net[3].role is Role.PRE_CANDIDATE

    net.heal()
    net.sent.clear()
    _, pre_election = ticks_until_campaign(net[3])  # only node 3 ticks: its pre-vote beats any heartbeat
    net.handle(3, pre_election)
    net.deliver()
    replies = [m for m in net.sent if m.type is MT.PRE_VOTE_RESP]
    assert sorted(m.frm for m in replies) == [1, 2] and all(m.reject for m in replies)
    assert net[3].role is Role.FOLLOWER
    assert net.terms() == {1: 2, 2: 2, 3: 2}
    assert net.leader() == 1

    net.tick_all(3)
    assert net.nodes[3].applied_data() == [b"while 3 was away"]


def test_without_pre_vote_rejoining_node_forces_new_term_5_2():
    """The problem Pre-Vote solves (§9.6): in the paper's plain algorithm a partitioned node increments its term
    on every timeout, and on rejoining its higher term deposes the healthy leader."""
    net = Network(seed=1, **PAPER)
    net.elect(1)
    net.isolate(3)
    net.tick_all(5 * ELECTION_TICKS)
    assert net[3].term > 2
    net.heal()
    net.tick_all(5 * ELECTION_TICKS)
    assert min(net.terms().values()) > 2


# -- dissertation §9.6: CheckQuorum and the leader lease -------------------------------------------------


def test_isolated_leader_steps_down_within_two_election_timeouts_9_6():
    """§9.6 CheckQuorum: a leader checks every election timeout whether a quorum was active since the last
    check; once cut off from the quorum it steps down at the first check that finds nobody, so after at most
    two election timeouts, and the rest of the cluster elects a new leader."""
    net = Network(seed=4)
    net.elect(1)
    net.tick_all(3)
    net.isolate(1)
    net.tick(1, ELECTION_TICKS - 1)
    assert net[1].role is Role.LEADER
    for _ in range(ELECTION_TICKS + 1):
        net.tick(1)
    assert net[1].role is Role.FOLLOWER
    assert net[1].leader_id == NONE and net[1].term == 2

    net.tick_all(4 * ELECTION_TICKS)
    assert net.leader() in (2, 3)


def test_leader_hearing_from_no_follower_steps_down_after_one_election_timeout_9_6():
    """§9.6 CheckQuorum (and RaftConfig.election_ticks): a leader that hears from no follower during an election
    timeout steps down; votes granted before it became leader do not count as activity (as in etcd's
    TestLeaderStepdownWhenQuorumLost)."""
    net = Network(seed=4)
    net.campaign(1)
    net.deliver(lambda m: m.type in (MT.PRE_VOTE, MT.PRE_VOTE_RESP, MT.VOTE, MT.VOTE_RESP))
    assert net[1].role is Role.LEADER
    net.isolate(1)
    net.tick(1, ELECTION_TICKS)
    assert net[1].role is Role.FOLLOWER


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE])
def test_follower_in_leader_lease_ignores_higher_term_candidate_9_6(kind):
    """§9.6: a follower that heard from a leader within the last election timeout ignores (pre-)vote requests,
    even for a higher term: it neither answers nor adopts the term, so a disruptive server cannot depose a
    healthy leader."""
    net = Network(seed=5)
    net.elect(1)
    net.tick_all(2)
    follower = net[2]
    ready = follower.step(Message(kind, to=2, frm=3, term=9, log_term=5, index=100))
    assert ready.messages == []
    assert (follower.term, follower.vote, follower.leader_id) == (2, 1, 1)
    assert ready.hard_state is None


def test_leader_in_lease_ignores_higher_term_vote_9_6():
    """§9.6: the leader itself, having heard from a quorum, ignores a higher-term vote request instead of
    stepping down."""
    net = Network(seed=5)
    leader = net.elect(1)
    ready = leader.step(Message(MT.VOTE, to=1, frm=3, term=9, log_term=5, index=100))
    assert ready.messages == [] and leader.role is Role.LEADER and leader.term == 2


def test_follower_considers_votes_again_once_lease_expired_9_6():
    """§9.6: the lease lasts one election timeout: a follower that has not heard from the leader for that long
    answers (here grants) a higher-term vote request it ignored before."""
    heartbeat = Message(MT.HEARTBEAT, to=2, frm=1, term=2)
    vote = Message(MT.VOTE, to=2, frm=3, term=3, log_term=1, index=3)
    for seed in range(100):
        # Same seed, same inputs, same timeout: find a seed whose timeout outlasts the lease by a tick.
        probe = new_core(2, seed=seed)
        probe.step(heartbeat)
        if ticks_until_campaign(probe)[0] > ELECTION_TICKS:
            break
    else:
        raise AssertionError("no seed gives an election timeout longer than election_ticks")
    follower = new_core(2, seed=seed)
    follower.step(heartbeat)
    assert follower.step(vote).messages == [], "inside the lease the vote request is ignored"
    assert not any(follower.tick().messages for _ in range(ELECTION_TICKS))
    ready = follower.step(vote)
    assert [(m.type, m.reject) for m in ready.messages] == [(MT.VOTE_RESP, False)]
    assert (follower.term, follower.vote) == (3, 3)


def test_timeout_now_election_bypasses_lease_9_6():
    """§9.6 and §3.10: votes requested after a TIMEOUT_NOW carry the transfer context, which followers in the
    lease honour; a plain campaign by the same node at the same moment is ignored."""
    net = Network(seed=6)
    net.elect(1)
    net.tick_all(2)

    net.campaign(2)
    net.deliver()
    assert net.leader() == 1 and net.terms() == {1: 2, 2: 2, 3: 2}
    net.tick_all(1)
    assert net[2].role is Role.FOLLOWER and net[2].leader_id == 1

    net.step(Message(MT.TIMEOUT_NOW, to=2, frm=1, term=2))
    votes = net.sent_by(2, MT.VOTE)
    assert votes and all(m.context == TRANSFER_CONTEXT for m in votes)
    net.deliver()
    assert net.leader() == 2
    assert net.terms() == {1: 3, 2: 3, 3: 3}
