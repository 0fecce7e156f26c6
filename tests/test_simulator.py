"""The deterministic Raft simulator (`chaos/`): the real core keeps every invariant, broken cores and broken
drivers are caught, a seed replays exactly, and the CLI reports a failure with the command that replays it.

Both persistence modes run: `driver` (the default: the production driver's batched, asynchronous writes that
may send before they return) and `sync` (each Ready written before anything else happens).

CI runs the full sweep separately (`python -m chaos sim`: 500 seeds x 2000 steps for 3, 5 and 7 nodes);
these tests keep a smaller sweep in the ordinary test run.
"""

from types import SimpleNamespace

import pytest
from raft_mutants import AcksBeforeWriting, AppliesWhatItWrites, CommitsOldTerms, VotesForAnyLog

from chaos.checks import (
    DURABILITY,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LINEARIZABLE_READS,
    LIVENESS,
    LOG_MATCHING,
    PERSIST_BEFORE_APPLY,
    STATE_MACHINE_SAFETY,
    InvariantViolation,
    SafetyChecker,
)
from chaos.cli import main
from chaos.driver import DRIVER, PERSISTENCE_MODES, SYNC, Pipeline
from chaos.nemesis import BEFORE_PERSIST
from chaos.sim import Simulator, run_seed
from raftswarm.raft.core import RaftCore
from raftswarm.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

STEPS = 2000
SEEDS_PER_SIZE = 50
MUTANT_SEED_BUDGET = 200
SAFETY = {ELECTION_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, DURABILITY, LINEARIZABLE_READS}


def _first_failure(core_cls, size: int, persistence: str = DRIVER, pipeline_cls=Pipeline, caught=None):
    """The first seed in the budget that fails (with one of the `caught` invariants, if given)."""
    for seed in range(MUTANT_SEED_BUDGET):
        result = run_seed(seed, size, STEPS, core_cls, persistence=persistence, pipeline_cls=pipeline_cls)
        if not result.ok and (caught is None or result.violation.invariant in caught):
            return result
    return None


@pytest.mark.parametrize("persistence", PERSISTENCE_MODES)
@pytest.mark.parametrize("size", [3, 5, 7])
def test_real_core_keeps_every_invariant_under_chaos(size, persistence):
    for seed in range(SEEDS_PER_SIZE):
        result = run_seed(seed, size, STEPS, persistence=persistence)
        assert result.ok, f"{result.violation}\nreplay: {result.replay_command()}\n" + "\n".join(result.trace)
        assert result.stats["committed"] > size, "the cluster never got past its bootstrap entries"


@pytest.mark.parametrize("persistence", PERSISTENCE_MODES)
@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(VotesForAnyLog, id="election restriction (5.4.1) broken"),
        pytest.param(CommitsOldTerms, id="commit only in current term (5.4.2, Figure 8) broken"),
    ],
)
def test_a_broken_core_is_caught_within_the_seed_budget(mutant, persistence):
    failure = _first_failure(mutant, 3, persistence)
    assert failure is not None, f"{mutant.__name__} passed {MUTANT_SEED_BUDGET} seeds: the checks are vacuous"
    assert failure.violation.invariant in SAFETY, failure.violation


def test_a_driver_that_acks_before_its_write_returns_is_caught_losing_data():
    """A follower's APPEND_RESP says "your entries are on my disk"; sent before the write returns, it lets a
    leader commit (and clients hear "ok") on a copy that a crash then loses. Until a later leader, elected
    without the entry, overwrites it, the leader that counted the ack is stuck re-sending what follows it."""
    first = _first_failure(RaftCore, 3, pipeline_cls=AcksBeforeWriting)
    assert first is not None, f"AcksBeforeWriting passed {MUTANT_SEED_BUDGET} seeds: the crash windows are not hit"
    assert first.violation.invariant in SAFETY | {LIVENESS}, first.violation
    lost = _first_failure(RaftCore, 3, pipeline_cls=AcksBeforeWriting, caught=SAFETY)
    assert lost is not None, f"AcksBeforeWriting lost no acknowledged write in {MUTANT_SEED_BUDGET} seeds"


def test_the_real_driver_sends_before_its_writes_return_and_is_never_flagged():
    """The production rule (thesis §10.2.1) on the seeds where the broken driver above fails: leaders send
    before their writes return and crash with those writes lost, and every check still holds."""
    sent = lost = 0
    for seed in range(MUTANT_SEED_BUDGET):
        result = run_seed(seed, 3, STEPS)
        assert result.ok, f"{result.violation}\nreplay: {result.replay_command()}\n" + "\n".join(result.trace)
        sent += result.stats["sent_before_written"]
        lost += result.stats["writes_lost_after_send"]
    assert sent > 1000 and lost > 50, f"{sent} batches sent before their write, {lost} of those writes lost"


def test_a_driver_that_applies_what_its_running_write_holds_is_caught():
    """Applying while a write runs is safe only for entries an earlier write holds (`appliable_before_persisting`):
    a driver that also applies the running write's own entries is caught applying what its disk lacks."""
    failure = _first_failure(RaftCore, 3, pipeline_cls=AppliesWhatItWrites)
    assert failure is not None, f"AppliesWhatItWrites passed {MUTANT_SEED_BUDGET} seeds: the checks are vacuous"
    assert failure.violation.invariant == PERSIST_BEFORE_APPLY, failure.violation


def test_the_real_driver_applies_while_writing_and_is_never_flagged():
    applied = 0
    for seed in range(SEEDS_PER_SIZE):
        result = run_seed(seed, 3, STEPS)
        assert result.ok, f"{result.violation}\nreplay: {result.replay_command()}\n" + "\n".join(result.trace)
        applied += result.stats["applied_while_writing"]
    assert applied > 200, f"only {applied} entries applied while a write ran"


def test_what_a_batch_may_apply_while_its_write_runs():
    """Committed entries an earlier write holds, yes; those this batch writes (a lone voter's, or a follower's
    told of the commit with them), after the write; nothing before a snapshot is restored."""
    pipeline = Pipeline(HardState(term=3, vote=1, commit=5))
    earlier = [Entry(5, 3), Entry(6, 3)]
    batch = _batch_of(pipeline, Ready(HardState(3, 1, 8), [Entry(7, 3), Entry(8, 3)], committed_entries=earlier))
    assert pipeline.appliable_before_persisting(batch) == earlier
    pipeline.start_write(batch)
    pipeline.written(batch.hard_state)
    follower = _batch_of(pipeline, Ready(HardState(3, 1, 10), [Entry(9, 3), Entry(10, 3)],
                                        committed_entries=[Entry(9, 3), Entry(10, 3)]))  # fmt: skip
    assert pipeline.appliable_before_persisting(follower) == []
    pipeline.start_write(follower)
    pipeline.written(follower.hard_state)
    commit_only = _batch_of(pipeline, Ready(HardState(3, 1, 11), committed_entries=[Entry(11, 3)]))
    assert pipeline.appliable_before_persisting(commit_only) == [Entry(11, 3)]
    snapshot = Snapshot(SnapshotMeta(20, 3, ConfState(frozenset({1, 2, 3}))), b"")
    restored = _batch_of(pipeline, Ready(HardState(3, 1, 20), snapshot=snapshot, committed_entries=[]))
    assert pipeline.appliable_before_persisting(restored) == []


def test_a_lone_voter_announces_no_commit_before_its_own_write_returns():
    """A single-manager swarm adding a second manager: one voter, one learner catching up. The voter is a
    quorum alone, so its core commits a proposal in the very Ready that appends it; if the APPEND carrying
    that commit index leaves before the voter's write returns and the voter crashes, the learner applies an
    entry that the restarted voter no longer has and replaces."""
    _lone_voter_crashes_after_sending(DRIVER)


def test_a_lone_voter_that_writes_before_sending_keeps_its_learner_consistent():
    _lone_voter_crashes_after_sending(SYNC)


def _lone_voter_crashes_after_sending(persistence: str) -> None:
    sim = Simulator(0, 1, RaftCore, None, persistence)
    sim.chaos_on = False  # this test makes every move
    voter = sim.nodes[1]
    assert sim.run_until(lambda: voter.core.role is Role.LEADER, 2000)
    assert sim.change_membership(voter, ConfChange(ConfChangeType.ADD_LEARNER, 2))
    assert sim.run_until(lambda: voter.core.progress().get(2, (0,))[0] == voter.core.last_index, 2000)
    voter.crash_stage = BEFORE_PERSIST
    sim.propose(voter, b"lost with the voter's write")
    assert not voter.up
    sim.heal()
    learner = sim.nodes[2]
    assert sim.run_until(
        lambda: voter.core.role is Role.LEADER and learner.app.applied_index == voter.app.applied_index > 3, 2000
    )
    assert learner.app.entries == voter.app.entries


def _batch_of(pipeline: Pipeline, *readies: Ready):
    for ready in readies:
        pipeline.feed(ready)
    return pipeline.take_batch()


def _msg(kind: MessageType) -> Message:
    return Message(kind, to=2, frm=1, term=3)


def _sends_before_writing(ready: Ready, pipeline_cls=Pipeline) -> bool:
    pipeline = pipeline_cls(HardState(term=3, vote=1, commit=5))
    return pipeline.may_send_before_persisting(_batch_of(pipeline, ready))


def test_a_leader_sends_appends_before_its_write_but_votes_and_acks_wait():
    """Raft thesis §10.2.1 as the driver applies it: only messages that claim nothing about the sender's disk
    leave early, and only while term and vote stay what is on disk."""
    appends = Ready(HardState(3, 1, 6), [Entry(7, 3)], messages=[_msg(MessageType.APPEND), _msg(MessageType.HEARTBEAT)])
    ack = Ready(entries=[Entry(7, 3)], messages=[_msg(MessageType.APPEND), _msg(MessageType.APPEND_RESP)])
    new_term = Ready(HardState(4, 1, 5), messages=[_msg(MessageType.APPEND)])
    assert _sends_before_writing(appends)
    assert not _sends_before_writing(ack)
    assert not _sends_before_writing(new_term)
    assert _sends_before_writing(ack, AcksBeforeWriting)


def test_a_moved_commit_index_alone_is_not_written_but_rides_with_the_next_write():
    """etcd's MustSync, as the driver applies it: the commit index is volatile state (Figure 2)."""
    pipeline = Pipeline(HardState(term=3, vote=1, commit=5))
    commit_only = _batch_of(pipeline, Ready(HardState(3, 1, 6), messages=[_msg(MessageType.APPEND)]))
    assert not pipeline.must_sync(commit_only)
    entries = _batch_of(pipeline, Ready(entries=[Entry(7, 3)]))
    assert pipeline.must_sync(entries)
    assert pipeline.start_write(entries) == HardState(3, 1, 6)
    assert pipeline.take_batch() is None, "a second write started while one is in progress"
    pipeline.written(HardState(3, 1, 6))
    vote = _batch_of(pipeline, Ready(HardState(4, 2, 6)))
    assert pipeline.must_sync(vote)


def test_readies_merge_into_one_batch_while_a_write_is_in_progress_and_a_snapshot_starts_a_new_one():
    pipeline = Pipeline(HardState(term=3, vote=1, commit=5))
    first = _batch_of(pipeline, Ready(entries=[Entry(6, 3)]))
    pipeline.start_write(first)
    pipeline.feed(Ready(entries=[Entry(7, 3), Entry(8, 3)]))
    pipeline.feed(Ready(HardState(4, 0, 5), entries=[Entry(8, 4)]))  # a new leader overwrote entry 8
    snapshot = Snapshot(SnapshotMeta(20, 4, ConfState(frozenset({1, 2, 3}))), b"")
    pipeline.feed(Ready(HardState(4, 0, 20), snapshot=snapshot))
    pipeline.written(None)
    merged = pipeline.take_batch()
    assert [(e.index, e.term) for e in merged.entries] == [(7, 3), (8, 4)]
    assert merged.hard_state == HardState(4, 0, 5) and merged.snapshot is None
    pipeline.start_write(merged)
    assert pipeline.take_batch() is None, "the snapshot's batch went ahead of the write before it"
    pipeline.written(merged.hard_state)
    assert pipeline.take_batch().snapshot is snapshot


@pytest.mark.parametrize("persistence", PERSISTENCE_MODES)
def test_a_seed_replays_exactly(persistence):
    first = run_seed(7, 5, STEPS, trace_len=None, persistence=persistence)
    run_seed(8, 5, STEPS, persistence=persistence)  # nothing may leak from one run into the next
    second = run_seed(7, 5, STEPS, trace_len=None, persistence=persistence)
    assert first.trace == second.trace
    assert first.stats == second.stats
    assert first.digest == second.digest
    assert first.stats["steps_run"] >= STEPS
    assert first.trace


@pytest.mark.parametrize("persistence", PERSISTENCE_MODES)
def test_cli_fails_and_prints_the_replay_command(capsys, persistence):
    failure = _first_failure(VotesForAnyLog, 3, persistence)
    replay = f"python -m chaos sim --nodes 3 --steps {STEPS} --seed {failure.seed} --persistence {persistence}"
    code = main(replay.split()[3:], core_cls=VotesForAnyLog)
    out = capsys.readouterr().out
    assert code == 1
    assert replay in out
    assert failure.violation.invariant in out
    assert "last 30 steps" in out


@pytest.mark.parametrize("persistence", PERSISTENCE_MODES)
def test_cli_passes_with_the_real_core(capsys, persistence):
    code = main(["sim", "--nodes", "3", "--seeds", "4", "--steps", "500", "--jobs", "2", "--persistence", persistence])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{persistence} persistence: sizes 3, 4 seeds, 500 steps: all checks held" in out


def _leader(term: int) -> SimpleNamespace:
    return SimpleNamespace(
        role=Role.LEADER,
        term=term,
        commit_index=0,
        last_index=0,
        applied_index=0,
        snapshot_meta=None,
        term_at=lambda index: None,
    )


def test_two_leaders_in_one_term_break_election_safety():
    checker = SafetyChecker()
    checker.node_stepped(1, _leader(term=4))
    checker.node_stepped(2, _leader(term=5))
    with pytest.raises(InvariantViolation) as broken:
        checker.node_stepped(3, _leader(term=4))
    assert broken.value.invariant == ELECTION_SAFETY


def test_a_read_that_misses_an_acknowledged_write_is_not_linearizable():
    checker = SafetyChecker()
    for index in (1, 2, 3):
        checker.entry_applied(1, Entry(index, 1, data=b"write-%d" % index))
    checker.read_invoked(b"read-1")
    checker.read_served(2, b"read-1", applied_index=3)
    with pytest.raises(InvariantViolation) as broken:
        checker.read_served(3, b"read-1", applied_index=2)
    assert broken.value.invariant == LINEARIZABLE_READS


def test_an_acknowledged_write_missing_from_a_node_breaks_durability():
    checker = SafetyChecker()
    write = Entry(1, 1, data=b"write-1")
    checker.entry_applied(1, write)
    checker.check_durability([(1, [write]), (2, [])])
    with pytest.raises(InvariantViolation) as broken:
        checker.check_durability([(2, [Entry(1, 2, data=b"write-9")])])
    assert broken.value.invariant == DURABILITY


@pytest.mark.slow
def test_full_simulator_run_holds_every_check(capsys):
    """The issue's bar, run in CI: 500 seeds of 2,000 steps for each of 3, 5 and 7 nodes (the CLI's defaults)."""
    code = main(["sim"])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0, summary
    assert "driver persistence: sizes 3,5,7, 500 seeds, 2000 steps: all checks held" in summary
