"""Deliberately broken Raft cores, each breaking one safety rule, to show the simulator's checks bite.

Used only by tests/test_simulator.py: a checker that passes these would be vacuous.
"""

from raftswarm.raft.core import RaftCore


class VotesForAnyLog(RaftCore):
    """Breaks the election restriction (§5.4.1): grants votes and pre-votes whatever the candidate's log."""

    def _log_is_up_to_date(self, last_term: int, last_index: int) -> bool:
        return True


class CommitsOldTerms(RaftCore):
    """Breaks "commit only in the current term" (§5.4.2, Figure 8): counts replicas of entries of any term."""

    def _can_commit_at(self, index: int) -> bool:
        return True
