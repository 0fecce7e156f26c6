"""The deterministic Raft simulator (`chaos/`): the real core keeps every invariant, broken cores are caught,
a seed replays exactly, and the CLI reports a failure with the command that replays it.

CI runs the full sweep separately (`python -m chaos sim`: 500 seeds x 2000 steps for 3, 5 and 7 nodes);
these tests keep a smaller sweep in the ordinary test run.
"""

from types import SimpleNamespace

import pytest
from raft_mutants import CommitsOldTerms, VotesForAnyLog

from chaos.checks import (
    DURABILITY,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LINEARIZABLE_READS,
    LOG_MATCHING,
    STATE_MACHINE_SAFETY,
    InvariantViolation,
    SafetyChecker,
)
from chaos.cli import main
from chaos.sim import run_seed
from raftswarm.raft.messages import Entry, Role

STEPS = 2000
SEEDS_PER_SIZE = 50
MUTANT_SEED_BUDGET = 200
SAFETY = {ELECTION_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, DURABILITY, LINEARIZABLE_READS}


def _first_failure(core_cls, size: int):
    for seed in range(MUTANT_SEED_BUDGET):
        result = run_seed(seed, size, STEPS, core_cls)
        if not result.ok:
            return result
    return None


@pytest.mark.parametrize("size", [3, 5, 7])
def test_real_core_keeps_every_invariant_under_chaos(size):
    for seed in range(SEEDS_PER_SIZE):
        result = run_seed(seed, size, STEPS)
        assert result.ok, f"{result.violation}\nreplay: {result.replay_command()}\n" + "\n".join(result.trace)
        assert result.stats["committed"] > size, "the cluster never got past its bootstrap entries"


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(VotesForAnyLog, id="election restriction (5.4.1) broken"),
        pytest.param(CommitsOldTerms, id="commit only in current term (5.4.2, Figure 8) broken"),
    ],
)
def test_a_broken_core_is_caught_within_the_seed_budget(mutant):
    failure = _first_failure(mutant, 3)
    assert failure is not None, f"{mutant.__name__} passed {MUTANT_SEED_BUDGET} seeds: the checks are vacuous"
    assert failure.violation.invariant in SAFETY, failure.violation


def test_a_seed_replays_exactly():
    first = run_seed(7, 5, STEPS, trace_len=None)
    run_seed(8, 5, STEPS)  # nothing may leak from one run into the next
    second = run_seed(7, 5, STEPS, trace_len=None)
    assert first.trace == second.trace
    assert first.stats == second.stats
    assert first.digest == second.digest
    assert first.stats["steps_run"] >= STEPS
    assert first.trace


def test_cli_fails_and_prints_the_replay_command(capsys):
    failure = _first_failure(VotesForAnyLog, 3)
    replay = f"python -m chaos sim --nodes 3 --steps {STEPS} --seed {failure.seed}"
    code = main(replay.split()[3:], core_cls=VotesForAnyLog)
    out = capsys.readouterr().out
    assert code == 1
    assert replay in out
    assert failure.violation.invariant in out
    assert "last 30 steps" in out


def test_cli_passes_with_the_real_core(capsys):
    code = main(["sim", "--nodes", "3", "--seeds", "4", "--steps", "500", "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sizes 3, 4 seeds, 500 steps: all checks held" in out


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
    assert "sizes 3,5,7, 500 seeds, 2000 steps: all checks held" in summary
