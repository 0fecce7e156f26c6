"""Leadership transfer (dissertation §3.10): the leader brings the target's log up to date, sends it TIMEOUT_NOW
so it starts an election at once, stops accepting proposals meanwhile, and gives up after an election timeout.
"""

import pytest
from raft_harness import MT, Network, messages_of

from raftswarm.errors import ProposalDropped
from raftswarm.raft.messages import NONE, TRANSFER_CONTEXT, Role

ELECTION_TICKS = 10


def test_transfer_to_up_to_date_follower_sends_timeout_now_3_10():
    """§3.10: if the target's log already matches, the leader sends TIMEOUT_NOW at once; the target starts a real
    election (no pre-vote) in the next term, its votes bypass the leader lease, and it wins."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    ready = net.transfer_leadership(1, 2)
    assert [(m.type, m.to) for m in ready.messages] == [(MT.TIMEOUT_NOW, 2)]
    assert net[1].lead_transferee == 2

    net.deliver()
    votes = net.sent_by(2, MT.VOTE)
    assert votes and all(m.context == TRANSFER_CONTEXT and m.term == 3 for m in votes)
    assert not net.sent_by(2, MT.PRE_VOTE)
    assert net.leader() == 2
    assert net[1].role is Role.FOLLOWER and net[1].lead_transferee == NONE
    assert {n.core.leader_id for n in net.nodes.values()} == {2}
    assert set(net.terms().values()) == {3}


def test_transfer_to_lagging_follower_first_catches_it_up_3_10():
    """§3.10 step 2: a target missing entries first receives them; the leader sends TIMEOUT_NOW only once the
    target's log matches its own, so the target can win and no committed entry is lost."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver()
    net.heal()

    net.sent.clear()
    ready = net.transfer_leadership(1, 3)
    assert messages_of(ready, MT.TIMEOUT_NOW) == []
    assert messages_of(ready, MT.APPEND, to=3)
    net.deliver()
    caught_up = next(
        i for i, m in enumerate(net.sent) if m.type is MT.APPEND_RESP and m.frm == 3 and not m.reject and m.index == 9
    )
    timeout_now = next(i for i, m in enumerate(net.sent) if m.type is MT.TIMEOUT_NOW)
    assert caught_up < timeout_now
    assert net.leader() == 3
    net.tick_all(1)
    assert all(n.applied_data() == [b"%d" % i for i in range(5)] for n in net.nodes.values())


def test_proposals_are_dropped_while_leadership_is_transferred_3_10():
    """§3.10 step 1: during a transfer the leader stops accepting client requests (they would only delay the
    target's catch-up): local proposals raise ProposalDropped and forwarded ones are discarded."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    net.transfer_leadership(1, 3)
    last = net[1].last_index
    with pytest.raises(ProposalDropped):
        net[1].propose(b"during transfer")
    net.propose(2, b"forwarded during transfer")
    net.deliver()
    assert net[1].last_index == last
    assert net[1].role is Role.LEADER


def test_transfer_is_abandoned_after_an_election_timeout_3_10():
    """§3.10: if the transfer does not complete within an election timeout the leader aborts it and resumes
    accepting proposals."""
    net = Network()
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    net.transfer_leadership(1, 3)
    net.tick_all(ELECTION_TICKS - 1)
    assert net[1].lead_transferee == 3
    with pytest.raises(ProposalDropped):
        net[1].propose(b"too early")

    net.tick_all(1)
    assert net[1].lead_transferee == NONE
    assert net[1].role is Role.LEADER and net[1].term == 2
    net.propose(1, b"accepted again")
    net.deliver()
    net.tick_all(1)
    assert net.nodes[2].applied_data() == [b"accepted again"]


def test_transfer_needs_a_leader_and_a_voting_target_3_10():
    """§3.10: only the leader can transfer leadership, and only to a voting member; transferring to itself is a
    no-op."""
    net = Network()
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net[2].transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        net[1].transfer_leadership(7)
    assert net.transfer_leadership(1, 1).messages == []
    assert net[1].lead_transferee == NONE and net[1].role is Role.LEADER
