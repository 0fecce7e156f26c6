"""Deliberately broken Raft cores and drivers, each breaking one safety rule, to show the simulator's checks bite.

Used only by tests/test_simulator.py: a checker that passes these would be vacuous.
"""

from chaos.driver import SENDABLE_BEFORE_PERSIST, Pipeline
from raftswarm.raft.core import RaftCore
from raftswarm.raft.messages import MessageType


class VotesForAnyLog(RaftCore):
    """Breaks the election restriction (§5.4.1): grants votes and pre-votes whatever the candidate's log."""

    def _log_is_up_to_date(self, last_term: int, last_index: int) -> bool:
        return True


class CommitsOldTerms(RaftCore):
    """Breaks "commit only in the current term" (§5.4.2, Figure 8): counts replicas of entries of any term."""

    def _can_commit_at(self, index: int) -> bool:
        return True


class AcksBeforeWriting(Pipeline):
    """Breaks "replies that promise durability wait for the write" in the driver's pipeline: a follower's
    APPEND_RESP -- "I hold your entries up to here" -- leaves before its write returns, so a leader may count a
    copy that a crash then loses."""

    sendable_before_persist = SENDABLE_BEFORE_PERSIST | {MessageType.APPEND_RESP}


class AppliesWhatItWrites(Pipeline):
    """Breaks "apply only what a finished write holds": hands the state machine every committed entry while the
    batch's write runs, also those this very write is putting on disk (a follower told of a commit together
    with the entries), so a crash during the write leaves a node that applied what it never had."""

    def appliable_before_persisting(self, batch):
        return [] if batch.snapshot is not None else batch.committed

