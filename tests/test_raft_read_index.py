"""Linearizable reads with ReadIndex (dissertation §6.4): the leader records its commit index, confirms it is
still leader with a round of heartbeats acknowledged by a majority, and only then releases the read; a new
leader first commits an entry of its term; a follower forwards its reads to the leader (§6.4.1).
"""

from raft_harness import MT, Network, messages_of, new_core

from raftswarm.raft.messages import Entry, EntryType, Message, ReadState, Role


def settled_cluster() -> Network:
    """Nodes 1-3, node 1 leader of term 2 with one entry committed at index 5 everywhere."""
    net = Network()
    net.elect(1)
    net.propose(1, b"x")
    net.deliver()
    net.tick_all(1)
    assert net[1].commit_index == 5
    return net


def test_leader_answers_read_only_after_a_majority_confirms_its_leadership_6_4():
    """§6.4 steps 1-3: the leader records its commit index as the read index, sends a heartbeat round, and
    answers only once a majority (itself included) acknowledged that round."""
    net = settled_cluster()
    ready = net.read_index(1, b"r1")
    assert ready.read_states == []
    beats = messages_of(ready, MT.HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3] and all(m.context for m in beats)

    net.deliver(lambda m: m.type is MT.HEARTBEAT and m.to == 2)
    assert net.nodes[1].read_states == [], "the follower heard the round but the leader has not heard back"
    net.deliver(lambda m: m.type is MT.HEARTBEAT_RESP and m.frm == 2)
    assert net.nodes[1].read_states == [ReadState(5, b"r1")]


def test_read_index_is_the_commit_index_when_the_read_arrived_6_4():
    """§6.4 step 1: the read index is the commit index at the time of the request; entries committed while the
    round is under way do not change it (serving at the older index is already linearizable)."""
    net = settled_cluster()
    net.read_index(1, b"r1")
    held = net.take(lambda m: m.type is MT.HEARTBEAT)
    net.propose(1, b"later")
    net.deliver()
    assert net[1].commit_index == 6
    for m in held:
        net.step(m)
    net.deliver()
    assert net.nodes[1].read_states == [ReadState(5, b"r1")]


def test_acknowledging_a_later_round_answers_earlier_reads_too_6_4():
    """§6.4: a majority acknowledging a later heartbeat round proves the leader was still leader after every
    earlier read arrived, so those are answered too, in order."""
    net = settled_cluster()
    net.read_index(1, b"r1")
    net.take(lambda m: m.type is MT.HEARTBEAT)  # the first round is lost
    net.read_index(1, b"r2")
    net.deliver()
    assert net.nodes[1].read_states == [ReadState(5, b"r1"), ReadState(5, b"r2")]


def test_plain_heartbeats_do_not_confirm_a_read_round_6_4():
    """§6.4 step 3: only acknowledgements of heartbeats sent after the read arrived prove leadership for it;
    responses to ordinary heartbeats sent before the read do not."""
    net = settled_cluster()
    net.tick(1)
    earlier = net.take(lambda m: m.type is MT.HEARTBEAT)
    net.read_index(1, b"r1")
    net.take(lambda m: m.type is MT.HEARTBEAT and m.context)
    for m in earlier:
        net.step(m)
    net.deliver()
    assert net.nodes[1].read_states == []


def test_read_whose_heartbeat_round_was_lost_is_answered_at_a_later_heartbeat_6_4():
    """§6.4 (liveness): if the heartbeat round of a read is lost, the leader, which keeps heartbeating, still
    confirms its leadership and answers the read (etcd sends the last pending read's context with every
    heartbeat); nothing tells the caller to retry, so the read must not hang while the leader is healthy."""
    net = settled_cluster()
    net.read_index(1, b"r1")
    net.take(lambda m: m.type is MT.HEARTBEAT)
    net.tick_all(3)
    assert net[1].role is Role.LEADER
    assert net.nodes[1].read_states == [ReadState(5, b"r1")]


def test_follower_read_is_forwarded_to_the_leader_and_answered_6_4_1():
    """§6.4.1: a follower sends its read to the leader, which runs the ReadIndex protocol and returns the read
    index; the follower serves the read once it has applied that index."""
    net = settled_cluster()
    ready = net.read_index(2, b"f1")
    assert [(m.type, m.to, m.context) for m in ready.messages] == [(MT.READ_INDEX, 1, b"f1")]
    net.deliver()
    assert net.nodes[2].read_states == [ReadState(5, b"f1")]
    assert net.nodes[2].applied_index >= 5
    reply = next(i for i, m in enumerate(net.sent) if m.type is MT.READ_INDEX_RESP)
    confirmed = next(i for i, m in enumerate(net.sent) if m.type is MT.HEARTBEAT_RESP and m.context)
    assert confirmed < reply, "the leader answered before confirming its leadership"


def test_new_leader_defers_reads_until_it_commits_an_entry_of_its_term_6_4():
    """§6.4 step 1: a new leader does not know the latest commit index until it has committed an entry of its own
    term, so a read arriving before that waits; it is then answered with the new commit index."""
    net = Network()
    net.campaign(1)
    net.deliver(lambda m: m.type in (MT.PRE_VOTE, MT.PRE_VOTE_RESP, MT.VOTE, MT.VOTE_RESP))
    assert net[1].role is Role.LEADER and net[1].commit_index == 3
    ready = net.read_index(1, b"early")
    assert ready.read_states == [] and messages_of(ready, MT.HEARTBEAT) == []

    net.deliver()
    assert net[1].commit_index == 4
    assert net.nodes[1].read_states == [ReadState(4, b"early")]


def test_deposed_leader_drops_pending_reads_6_4():
    """§6.4: a leader that loses leadership before confirming a read must not answer it; it hands the request
    back (Ready.dropped_reads) so the caller can retry with the new leader."""
    net = settled_cluster()
    net.read_index(1, b"r1")
    net.take(lambda m: m.type is MT.HEARTBEAT)
    ready = net.handle(1, net[1].step(Message(MT.APPEND, to=1, frm=2, term=3, index=5, log_term=2, commit=5)))
    assert net[1].role is Role.FOLLOWER
    assert ready.dropped_reads == [b"r1"]
    assert net.nodes[1].read_states == []


def test_deposed_new_leader_drops_reads_waiting_for_its_first_commit_6_4():
    """§6.4: reads a new leader deferred until its first commit are handed back too if it is deposed first."""
    net = Network()
    net.campaign(1)
    net.deliver(lambda m: m.type in (MT.PRE_VOTE, MT.PRE_VOTE_RESP, MT.VOTE, MT.VOTE_RESP))
    net.read_index(1, b"early")
    ready = net[1].step(Message(MT.HEARTBEAT, to=1, frm=3, term=5))
    assert ready.dropped_reads == [b"early"] and ready.read_states == []


def test_single_voter_answers_reads_immediately_6_4():
    """§6.4: with a single voter the leader is its own majority: the read is answered in the same step, with no
    messages."""
    net = Network((1,))
    net.elect(1)
    net.propose(1, b"x")
    ready = net.read_index(1, b"solo")
    assert ready.read_states == [ReadState(net[1].commit_index, b"solo")] and ready.messages == []


def test_read_with_no_known_leader_is_dropped_6_4():
    """§6.4: a node that knows no leader (a fresh follower, a candidate) cannot serve a linearizable read; it
    hands the request straight back."""
    follower = new_core(2)
    assert follower.read_index(b"nobody").dropped_reads == [b"nobody"]
    candidate = new_core(3)
    candidate.campaign()
    assert candidate.read_index(b"campaigning").dropped_reads == [b"campaigning"]


def test_a_deposed_leader_does_not_pass_on_another_nodes_read_or_proposal_under_that_nodes_name():
    """A follower forwards only its own proposals and reads. Passing on another node's (sent while it was the
    leader) keeps that node as the sender, which the transport refuses as `wrong_sender` (a frame's sender must
    be its connection's certificate) and closes the connection: what a one-way partition showed."""
    net = settled_cluster()
    forwarded_read = Message(MT.READ_INDEX, to=2, frm=3, context=b"r3")
    forwarded_proposal = Message(MT.PROPOSE, to=2, frm=3, entries=[Entry(0, 0, EntryType.NORMAL, b"p")])
    follower = net[2]
    assert follower.leader_id == 1
    sent = [m for message in (forwarded_read, forwarded_proposal) for m in follower.step(message).messages]
    assert all(m.frm == 2 for m in sent), sent
    assert not [m for m in sent if m.type in (MT.READ_INDEX, MT.PROPOSE)]
    own = net.read_index(2, b"own")  # its own read still goes to the leader, under its own name
    assert [(m.type, m.to, m.frm) for m in own.messages] == [(MT.READ_INDEX, 1, 2)]
