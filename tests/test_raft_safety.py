"""Safety (Raft paper §5.4): the election restriction, committing entries from previous terms (§5.4.2 and
Figure 8), persistence across restarts (§5.2, Figure 2 "persistent state"), and a randomized run that checks
the paper's five guarantees (Figure 3) after every step.

The harness checks State Machine Safety on every apply: no two nodes ever apply different entries at one index.
"""

import random

import pytest
from raft_harness import MT, Network

from raftswarm.errors import ProposalDropped
from raftswarm.raft.messages import NONE, Entry, Role

PAPER = {"pre_vote": False, "check_quorum": False}
VOTING = (MT.VOTE, MT.VOTE_RESP)


def campaign_until_leader(net: Network, node_id: int, attempts: int = 5) -> None:
    """Campaign (without Pre-Vote) and deliver only the votes, so the winner's first APPENDs stay queued."""
    for _ in range(attempts):
        net.campaign(node_id)
        net.deliver(lambda m: m.type in VOTING)
        if net[node_id].role is Role.LEADER:
            return
    raise AssertionError(f"node {node_id} could not win an election in {attempts} attempts")


def lose_accepted_appends_of_term(net: Network, term: int):
    """Lose every APPEND carrying an entry of `term` that its receiver would accept; rejections still flow, so
    the leader can back up and send older entries (one per APPEND with max_size_per_msg=1)."""
    return net.drop_if(
        lambda m: (
            m.type is MT.APPEND and any(e.term == term for e in m.entries) and net[m.to].term_at(m.index) == m.log_term
        )
    )


def test_leader_does_not_commit_previous_term_entry_by_counting_replicas_5_4_2():
    """§5.4.2: a leader never commits an entry from a previous term by counting replicas, even once a majority
    stores it; it becomes committed indirectly, when an entry of the leader's own term after it commits."""
    net = Network(max_size_per_msg=1, **PAPER)  # one entry per APPEND, so the two entries travel apart
    net.elect(1)
    net.tick_all(1)
    net.isolate(1)
    net.propose(1, b"from term 2")  # index 5, term 2, only on node 1
    net.crash(1)
    net.heal()
    net.restart(1)
    campaign_until_leader(net, 1)
    leader = net[1]
    assert leader.term == 3 and leader.term_at(5) == 2 and leader.term_at(6) == 3

    net.isolate(3)
    own_term_entry = lose_accepted_appends_of_term(net, 3)
    net.deliver()
    assert net[2].term_at(5) == 2, "the term-2 entry is now on a majority (nodes 1 and 2)"
    assert leader.progress()[2][0] == 5
    assert leader.commit_index == 4
    assert net.nodes[1].applied_data() == []

    net.filters.remove(own_term_entry)
    net.tick_all(1)
    assert leader.commit_index == 6
    assert net.nodes[1].applied_data() == [b"from term 2"]


def test_figure_8_entry_on_majority_from_old_term_can_be_overwritten_5_4_2():
    """§5.4.2, Figure 8: the paper's five-server history in which an entry of term 2 reaches a majority under a
    term-4 leader and is then legitimately overwritten by a term-3 entry from S5. Committing it in (c) would have
    applied two different entries at index 7; the leader must wait, and no server ever applies it."""
    net = Network((1, 2, 3, 4, 5), max_size_per_msg=1, **PAPER)
    net.elect(1)
    net.tick_all(1)  # indexes 1-5 membership, 6 the term-2 no-op: committed everywhere

    # (a) S1 leads term 2 and replicates index 7 only to S2.
    net.isolate(3, 4, 5)
    net.propose(1, b"a")
    net.deliver()
    assert [net[i].term_at(7) for i in (1, 2, 3)] == [2, 2, None]
    net.heal()

    # (b) S1 crashes; S5 wins term 3 with S3 and S4, appends index 7 in term 3, and crashes before sending it.
    net.crash(1)
    campaign_until_leader(net, 5)
    assert net[5].term == 3 and net[5].term_at(7) == 3
    net.crash(5)
    net.take()

    # (c) S1 restarts, wins term 4, and replicates its index 7 (term 2) to S2 and S3: a majority holds it.
    net.restart(1)
    campaign_until_leader(net, 1)
    assert net[1].term == 4
    lose_accepted_appends_of_term(net, 4)
    net.deliver()
    assert [net[i].term_at(7) for i in (1, 2, 3, 4)] == [2, 2, 2, 2]
    assert net[1].commit_index == 6, "index 7 is on a majority, but it is not of the leader's term"

    # (d) S1 crashes; S5 restarts and wins (its last term, 3, beats everyone's 2) and overwrites index 7.
    net.crash(1)
    net.heal()
    net.restart(5)
    campaign_until_leader(net, 5)
    net.deliver()
    net.tick(5)
    net.deliver()
    assert [net[i].term_at(7) for i in (2, 3, 4, 5)] == [3, 3, 3, 3]
    assert net[5].commit_index >= 7
    assert all(b"a" not in node.applied_data() for node in net.nodes.values())


def test_candidate_missing_committed_entry_cannot_win_5_4_1():
    """§5.4.1 Leader Completeness: an entry committed on a majority is in every future leader's log, because
    the election restriction keeps a candidate without it from winning."""
    net = Network(**PAPER)
    net.elect(1)
    net.tick_all(1)
    net.isolate(3)
    net.propose(1, b"committed")
    net.deliver()
    assert net[1].commit_index == 5
    net.crash(1)
    net.heal()

    net.campaign(3)
    net.deliver()
    assert net[3].role is Role.CANDIDATE, "node 2 must refuse a candidate missing a committed entry"
    campaign_until_leader(net, 2)
    net.deliver()
    net.tick(2)
    net.deliver()
    assert net.nodes[3].applied_data() == [b"committed"]


# -- persistence (Figure 2: currentTerm, votedFor and log[] are persisted before answering) ----------------


def test_restarted_node_does_not_vote_twice_in_one_term_5_2():
    """§5.2 / Figure 2: the vote is persisted before the reply is sent, so a node that crashes after voting
    refuses another candidate of that term once restarted."""
    net = Network(**PAPER)
    net.campaign(2)
    net.campaign(3)
    net.deliver(lambda m: m.type is MT.VOTE and (m.frm, m.to) == (2, 1))
    assert (net[1].term, net[1].vote) == (2, 2)
    net.take(lambda m: m.to == 1 or m.frm == 1)  # the grant is lost in the crash; node 3's request waits
    vote_from_3 = next(m for m in net.sent if m.type is MT.VOTE and (m.frm, m.to) == (3, 1))

    net.crash(1)
    restarted = net.restart(1)
    assert (restarted.term, restarted.vote) == (2, 2)
    net.step(vote_from_3)
    (reply,) = [m for m in net.queue if m.type is MT.VOTE_RESP and m.frm == 1]
    assert reply.reject and reply.to == 3
    assert restarted.vote == 2


def test_term_vote_and_log_survive_restart_5_2():
    """Figure 2: currentTerm, votedFor and the log are persistent state: a core rebuilt from what its Readys
    told the driver to persist has the same term, vote, log and commit index as before the crash."""
    net = Network(seed=2)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"%d" % i)
    net.deliver()
    net.tick_all(1)
    for node_id in (1, 2):
        before = net[node_id]
        state = (before.term, before.vote, before.entries_after_snapshot(), before.commit_index)
        net.crash(node_id)
        after = net.restart(node_id)
        assert (after.term, after.vote, after.entries_after_snapshot(), after.commit_index) == state
        assert after.role is Role.FOLLOWER and after.leader_id == NONE


def test_committed_entries_are_reapplied_after_restart_5_3():
    """§5.3 (state machine rebuilt from the log): after a restart the core hands out every committed entry again,
    from the start of the log, so the restarted state machine reaches the same state."""
    net = Network()
    net.elect(1)
    for i in range(3):
        net.propose(1, b"%d" % i)
    net.deliver()
    net.tick_all(1)
    before = list(net.nodes[2].applied)
    assert [e.data for e in before if e.data][-3:] == [b"0", b"1", b"2"]

    net.crash(2)
    net.restart(2)
    assert net.nodes[2].applied == []
    ready = net.tick(2)[0]
    assert ready.committed_entries == before
    assert net.nodes[2].applied == before


def test_whole_cluster_restart_keeps_every_committed_entry_5_4():
    """§5.4: committed entries survive any crash of all servers: after a full restart a new leader is elected
    and every node applies the old entries, then new ones."""
    net = Network(seed=3)
    net.elect(1)
    for i in range(4):
        net.propose(1, b"old %d" % i)
    net.deliver()
    net.tick_all(1)
    for node_id in list(net.nodes):
        net.crash(node_id)
    for node_id in list(net.nodes):
        net.restart(node_id)
    net.tick_all(40)
    leader = net.leader()
    assert leader != NONE
    net.propose(leader, b"new")
    net.deliver()
    net.tick_all(1)
    expected = [b"old %d" % i for i in range(4)] + [b"new"]
    assert all(node.applied_data() == expected for node in net.nodes.values())


# -- the paper's guarantees under random faults ------------------------------------------------------------


def check_log_matching(net: Network) -> None:
    """Figure 3 Log Matching: if two logs hold an entry with the same index and term, they are identical up to
    that index (compared over the indexes both still hold)."""
    logs = {i: {e.index: e for e in n.core.entries_after_snapshot()} for i, n in net.nodes.items()}
    ids = sorted(logs)
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1 :]:
            common = sorted(set(logs[a]) & set(logs[b]))
            last_same = max((i for i in common if logs[a][i].term == logs[b][i].term), default=0)
            for index in common:
                if index <= last_same:
                    assert logs[a][index] == logs[b][index], f"nodes {a} and {b} differ at {index} below {last_same}"


def check_leader_completeness(net: Network, committed_by: dict[int, int]) -> None:
    """Figure 3 Leader Completeness: an entry committed by the leader of some term is in the log of every leader
    of a later term. `committed_by` bounds that term from above for each applied index."""
    for node_id in net.leaders():
        core = net[node_id]
        compacted = core.snapshot_meta.index if core.snapshot_meta else 0
        for index, entry in net.chosen.items():
            if index > compacted and core.term > committed_by[index]:
                assert core.term_at(index) == entry.term, f"leader {node_id} of term {core.term} lacks entry {index}"


@pytest.mark.parametrize("seed", range(24))
def test_random_faults_preserve_the_raft_guarantees_5_4(seed):
    """Figure 3, under random message loss, partitions, crashes, restarts and compaction: at most one leader per
    term (Election Safety), a leader's log only grows during its term (Leader Append-Only), Log Matching,
    Leader Completeness and State Machine Safety; and once the faults stop, all nodes converge."""
    rng = random.Random(seed)
    net = Network((1, 2, 3, 4, 5), seed=seed, max_size_per_msg=64, max_inflight_msgs=4, snapshot_chunk_size=16)
    net.drop_if(lambda m: rng.random() < 0.1)
    leader_of_term: dict[int, int] = {}
    leader_log: dict[tuple[int, int], list[Entry]] = {}
    committed_by: dict[int, int] = {}
    proposed = 0
    for _ in range(300):
        roll = rng.random()
        running = [i for i in net.nodes if i not in net.down]
        if roll < 0.3:
            target = rng.choice(running)
            try:
                net.propose(target, b"v%d" % proposed)
                proposed += 1
            except ProposalDropped:
                pass
        elif roll < 0.34 and len(net.down) < 2:
            net.crash(rng.choice(running))
        elif roll < 0.40 and net.down:
            net.restart(rng.choice(sorted(net.down)))
        elif roll < 0.44:
            net.isolated = {rng.choice(list(net.nodes))}
        elif roll < 0.50:
            net.isolated = set()
        elif roll < 0.52:
            node = net.nodes[rng.choice(running)]
            if node.core.applied_index > (node.core.snapshot_meta.index if node.core.snapshot_meta else 0):
                net.compact(node.core.id, b"state up to %d;" % node.core.applied_index * 4)
        net.tick_all(1)

        for node_id in net.leaders():
            core = net[node_id]
            assert leader_of_term.setdefault(core.term, node_id) == node_id, f"two leaders in term {core.term}"
            log = core.entries_after_snapshot()
            previous = leader_log.get((core.term, node_id), [])
            held = {e.index: e for e in log}
            assert all(held.get(e.index, e) == e for e in previous), f"leader {node_id} rewrote its own log"
            assert not previous or core.last_index >= previous[-1].index
            leader_log[(core.term, node_id)] = log
        top_term = max(n.core.term for n in net.nodes.values())
        for index in net.chosen.keys() - committed_by.keys():
            committed_by[index] = top_term  # it was committed in this term or an earlier one
        check_log_matching(net)
        check_leader_completeness(net, committed_by)

    net.heal()
    for node_id in sorted(net.down):
        net.restart(node_id)
    net.tick_all(60)
    leader = net.leader()
    assert leader != NONE
    net.propose(leader, b"final")
    net.deliver()
    net.tick_all(5)
    commits = {n.core.commit_index for n in net.nodes.values()}
    assert len(commits) == 1, f"nodes did not converge: {commits}"
    assert all(n.applied_data()[-1:] == [b"final"] for n in net.nodes.values())
