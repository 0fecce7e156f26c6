"""The Raft consensus algorithm as a pure, deterministic state machine (in the style of etcd's raft).

`RaftCore` does no I/O, reads no clock and draws randomness only from the `random.Random` it is given.
Each input -- `tick`, `step`, `propose`, `propose_conf_change`, `read_index`, `transfer_leadership`,
`campaign` -- returns one `Ready` that the caller must handle fully (persist, send, apply, serve reads:
see `messages.Ready`) before giving the core its next input.

What it implements, with the paper section or etcd behaviour each part follows:
- leader election with randomized timeouts (§5.2), Pre-Vote and CheckQuorum (dissertation §9.6), and a
  leader lease on votes so a partitioned node rejoining does not depose a healthy leader;
- log replication (§5.3) with per-follower probe/replicate/snapshot progress, bounded in-flight messages
  and bytes, batching, and fast backtracking by term on rejection;
- commit only of entries from the leader's current term, counted by replicas (§5.4.2, Figure 8);
- compaction by application snapshots, sent to lagging followers as InstallSnapshot chunks of bounded size;
- single-server membership changes and learners (dissertation §4.1-4.2), one uncommitted change at a time,
  taking effect when committed; a removed leader steps down;
- leadership transfer (dissertation §3.10) and ReadIndex linearizable reads (dissertation §6.4).

Overridable predicates `_log_is_up_to_date` and `_can_commit_at` hold the two safety rules the
simulator's mutation tests break on purpose.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ProposalDropped
from .log import RaftLog
from .messages import (
    COMMIT_AWAITED,
    NONE,
    TRANSFER_CONTEXT,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    PersistedState,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from .progress import Inflights, Progress, ProgressState

MT = MessageType

# Message types that carry no term: they are requests forwarded to the leader and answered by whoever leads.
_TERMLESS = frozenset({MT.PROPOSE, MT.READ_INDEX})
SNAPSHOT_RESEND_HEARTBEATS = 3
"""Heartbeats an InstallSnapshot chunk may go unanswered before it is sent again: more than one round trip
on any sane link, few enough that a lost chunk costs little."""

# Message types only a leader of the message's term sends.
_FROM_LEADER = frozenset({MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT, MT.TIMEOUT_NOW, MT.READ_INDEX_RESP, MT.COMMIT})


@dataclass
class RaftConfig:
    id: int
    election_ticks: int = 10
    """A follower that hears no leader for a random number of ticks in [election_ticks, 2*election_ticks)
    starts an election; a leader with CheckQuorum steps down after election_ticks without a quorum."""
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per APPEND (at least one entry is always sent), as etcd's MaxSizePerMsg."""
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 << 20
    snapshot_chunk_size: int = 1 << 20
    """Bytes per InstallSnapshot chunk: big snapshots never need one big message (moby/swarmkit#2374)."""

    def __post_init__(self) -> None:
        if self.id <= NONE:
            raise ValueError("a Raft node ID must be a positive integer")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.max_inflight_msgs < 1 or self.snapshot_chunk_size < 1:
            raise ValueError("max_inflight_msgs and snapshot_chunk_size must be positive")


@dataclass
class _ReadRequest:
    index: int
    requester: int
    request_id: bytes
    acks: set[int] = field(default_factory=set)


@dataclass
class _IncomingSnapshot:
    meta: SnapshotMeta
    data: bytearray


class RaftCore:
    def __init__(self, config: RaftConfig, persisted: PersistedState, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self._rng = rng
        snapshot = persisted.snapshot
        self._snapshot = snapshot
        self.log = RaftLog(snapshot.meta if snapshot else None, persisted.entries, persisted.hard_state.commit)
        self.term = persisted.hard_state.term
        self.vote = persisted.hard_state.vote
        self.role = Role.FOLLOWER
        self.leader_id = NONE
        # Membership as of the snapshot, then every committed change after it: the conf change entries
        # between the snapshot and the commit index take effect now, though they are re-emitted for applying.
        self._conf_history: list[tuple[int, ConfState]] = [
            (snapshot.meta.index if snapshot else 0, snapshot.meta.conf_state if snapshot else ConfState(frozenset()))
        ]
        self._conf_applied = self.log.snapshot_index
        self._apply_conf_changes_up_to(self.log.committed)

        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = 0
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self._lead_transferee = NONE
        self._pending_conf_index = 0
        self._forwarded: dict[int, int] = {}
        """Leader: per follower, the last index of the proposals it forwarded that are not yet committed."""
        self._read_seq = 0
        self._reads: list[tuple[int, _ReadRequest]] = []  # (read round, request), in round order
        self._reads_waiting_for_commit: list[Message] = []
        self._incoming_snapshot: _IncomingSnapshot | None = None

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []
        self._restored: Snapshot | None = None
        self._last_hard_state = persisted.hard_state
        self._become_follower(self.term, NONE)

    # -- persisted state for a brand-new cluster ---------------------------------------------------------

    @staticmethod
    def bootstrap(voters: Iterable[int], contexts: Mapping[int, bytes] | None = None) -> PersistedState:
        """The state every member of a brand-new cluster persists before its first start.

        The initial membership is written as committed conf change entries at term 1 (as etcd bootstraps),
        so a node that joins later learns the whole membership history by replaying the log. `contexts`
        gives each voter's ConfChange context (the node layer puts addresses there).
        """
        ids = sorted(set(voters))
        if not ids or ids[0] <= NONE:
            raise ValueError("a cluster needs at least one voter with a positive ID")
        contexts = contexts or {}
        entries = [
            Entry(
                index,
                1,
                EntryType.CONF_CHANGE,
                ConfChange(ConfChangeType.ADD_VOTER, node_id, contexts.get(node_id, b"")).encode(),
            )
            for index, node_id in enumerate(ids, start=1)
        ]
        return PersistedState(HardState(term=1, vote=NONE, commit=len(entries)), None, entries)

    @staticmethod
    def force_new_cluster(persisted: PersistedState, node_id: int) -> tuple[PersistedState, list[Entry]]:
        """Recover from lost quorum on a surviving voter (`--force-new-cluster`): commit membership changes
        that remove every other member, so this node alone is a quorum. Returns the new state and the
        entries to append after the persisted log.

        Every entry this node holds is kept, and becomes committed. The persisted commit index may lag the
        cluster's (it is not synced on its own, see raft.driver), so dropping the tail after it, as etcd
        does, could drop writes that were acknowledged; keeping it can at worst keep a write whose client
        was told its outcome is unknown."""
        probe = RaftCore(RaftConfig(node_id), persisted, random.Random(0))
        probe.log.commit_to(probe.last_index)
        probe._apply_conf_changes_up_to(probe.last_index)
        conf = probe.conf_state
        if node_id not in conf.voters:
            raise ProposalDropped(f"node {node_id} is not a voting member; only a manager can force a new cluster")
        last = probe.last_index
        term = max(probe.term_at(last) or 0, persisted.hard_state.term)
        removals = [
            Entry(last + i, term, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.REMOVE, other).encode())
            for i, other in enumerate(sorted(conf.members() - {node_id}), start=1)
        ]
        commit = removals[-1].index if removals else last
        state = PersistedState(HardState(term, NONE, commit), persisted.snapshot, list(persisted.entries) + removals)
        return state, removals

    # -- read-only views -------------------------------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def conf_state(self) -> ConfState:
        return self._conf_history[-1][1]

    @property
    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot.meta if self._snapshot else None

    @property
    def lead_transferee(self) -> int:
        return self._lead_transferee

    def entries_after_snapshot(self) -> list[Entry]:
        return self.log.entries_after_snapshot()

    def term_at(self, index: int) -> int | None:
        return self.log.term(index)

    def progress(self) -> dict[int, tuple[int, int, str]]:
        """On the leader, each member's (match, next, state); empty elsewhere."""
        return {pid: (pr.match, pr.next, pr.state.value) for pid, pr in self._progress.items()}

    def _promotable(self) -> bool:
        return self.id in self.conf_state.voters

    def _quorum(self) -> int:
        return len(self.conf_state.voters) // 2 + 1

    # -- inputs ----------------------------------------------------------------------------------------

    def tick(self) -> Ready:
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()
        return self._ready()

    def step(self, msg: Message) -> Ready:
        if msg.to == self.id and msg.frm != self.id:
            self._step(msg)
        return self._ready()

    def campaign(self) -> Ready:
        """Start an election now (as etcd's MsgHup): with Pre-Vote, a pre-election first."""
        if self.role is not Role.LEADER:
            self._campaign(pre=self.config.pre_vote, transfer=False)
        return self._ready()

    def propose(self, data: bytes) -> Ready:
        self._propose_entries([Entry(0, 0, EntryType.NORMAL, data)])
        return self._ready()

    def propose_batch(self, items: Sequence[bytes]) -> Ready:
        """Propose several entries at once: one APPEND per follower carries them all (group commit)."""
        if items:
            self._propose_entries([Entry(0, 0, EntryType.NORMAL, data) for data in items])
        return self._ready()

    def propose_conf_change(self, change: ConfChange) -> Ready:
        if self.role is Role.LEADER:
            if self._pending_conf_index > self.log.applied:
                raise ProposalDropped("a membership change is already in progress; retry once it is committed")
            voters = self.conf_state.voters
            if change.type is ConfChangeType.REMOVE and voters == {change.node_id}:
                raise ProposalDropped("removing the last voter would leave the cluster with no one to elect")
        self._propose_entries([Entry(0, 0, EntryType.CONF_CHANGE, change.encode())])
        return self._ready()

    def read_index(self, request_id: bytes) -> Ready:
        """Ask for a linearizable read. The answer is a `ReadState` in a later (or this) Ready; if the core
        gives up on the request (leadership lost, no leader known), the ID is in `Ready.dropped_reads`."""
        self._step(Message(MT.READ_INDEX, to=self.id, frm=self.id, context=request_id))
        return self._ready()

    def transfer_leadership(self, target: int) -> Ready:
        """Hand leadership to `target` once its log is caught up (dissertation §3.10)."""
        if self.role is not Role.LEADER:
            raise ProposalDropped(f"node {self.id} is not the leader; ask the leader to transfer leadership")
        if target != self.id:
            progress = self._progress.get(target)
            if progress is None or progress.is_learner:
                raise ProposalDropped(f"node {target} is not a voting member and cannot become leader")
            if self._lead_transferee != target:
                self._lead_transferee = target
                self._election_elapsed = 0  # the transfer must finish within one election timeout
                if progress.match == self.log.last_index():
                    self._send(Message(MT.TIMEOUT_NOW, to=target, frm=self.id))
                else:
                    self._send_append(target)
        return self._ready()

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application has a snapshot of its state at `index` (<= applied_index): the log up to there
        is no longer needed. Returns the snapshot (with term and membership filled in) to persist."""
        if index > self.log.applied:
            raise ValueError(f"cannot compact at {index}: only {self.log.applied} is applied")
        if index <= self.log.snapshot_index:
            raise ValueError(f"cannot compact at {index}: the log is already compacted to {self.log.snapshot_index}")
        term = self.log.term(index)
        assert term is not None
        conf = self._conf_state_at(index)
        self._conf_history = [(index, conf)] + [(i, c) for i, c in self._conf_history if i > index]
        self.log.compact(index, term)
        self._snapshot = Snapshot(SnapshotMeta(index, term, conf), data)
        return self._snapshot

    # -- the Ready batch -------------------------------------------------------------------------------

    def _ready(self) -> Ready:
        committed = self._take_committed()
        ready = Ready(
            entries=self.log.take_unstable(),
            snapshot=self._restored,
            messages=self._msgs,
            committed_entries=committed,
            read_states=self._read_states,
            dropped_reads=self._dropped_reads,
        )
        hard_state = HardState(self.term, self.vote, self.log.committed)
        if hard_state != self._last_hard_state:
            ready.hard_state = hard_state
            self._last_hard_state = hard_state
        self._restored = None
        self._msgs = []
        self._read_states = []
        self._dropped_reads = []
        return ready

    def _take_committed(self) -> list[Entry]:
        """Hand out every committed entry, applying membership changes as they pass. On a leader a change
        can shrink the quorum and commit more, so loop until nothing new is committed."""
        committed: list[Entry] = []
        while self.log.applied < self.log.committed:
            batch = self.log.take_committed()
            committed.extend(batch)
            self._apply_conf_changes_up_to(batch[-1].index)
        return committed

    # -- membership ------------------------------------------------------------------------------------

    def _apply_conf_changes_up_to(self, index: int) -> None:
        if index <= self._conf_applied:
            return
        for entry in self.log.slice(self._conf_applied + 1, index + 1):
            if entry.type is EntryType.CONF_CHANGE:
                self._apply_conf_change(entry.index, ConfChange.decode(entry.data))
        self._conf_applied = index

    def _apply_conf_change(self, index: int, change: ConfChange) -> None:
        voters = set(self.conf_state.voters)
        learners = set(self.conf_state.learners)
        node = change.node_id
        if change.type is ConfChangeType.ADD_VOTER:
            voters.add(node)
            learners.discard(node)
        elif change.type is ConfChangeType.ADD_LEARNER:
            if node not in voters:  # demotion would need joint consensus; a voter stays a voter
                learners.add(node)
        else:
            voters.discard(node)
            learners.discard(node)
        self._conf_history.append((index, ConfState(frozenset(voters), frozenset(learners))))
        if self.role is not Role.LEADER:
            return
        if node == self.id and node not in voters:
            self._become_follower(self.term, NONE)  # a removed leader steps down
            return
        self._sync_progress_with_conf()
        if self._lead_transferee not in self.conf_state.voters:
            self._lead_transferee = NONE
        if self._maybe_commit():
            self._broadcast_append()

    def _sync_progress_with_conf(self) -> None:
        conf = self.conf_state
        for pid in list(self._progress):
            if pid not in conf.members():
                del self._progress[pid]
        for pid in conf.members():
            progress = self._progress.get(pid)
            if progress is None:
                self._progress[pid] = self._new_progress(pid)
            else:
                progress.is_learner = pid in conf.learners

    def _new_progress(self, pid: int) -> Progress:
        progress = Progress(
            self.log.last_index() + 1,
            Inflights(self.config.max_inflight_msgs, self.config.max_inflight_bytes),
            is_learner=pid in self.conf_state.learners,
        )
        if pid == self.id:
            progress.match = self.log.last_index()
        return progress

    def _conf_state_at(self, index: int) -> ConfState:
        conf = self._conf_history[0][1]
        for at, state in self._conf_history:
            if at > index:
                break
            conf = state
        return conf

    # -- role changes ----------------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = self.config.election_ticks + self._rng.randrange(self.config.election_ticks)
        self._votes = {}
        self._progress = {}
        self._lead_transferee = NONE
        self._pending_conf_index = 0
        self._forwarded = {}
        self._drop_pending_reads()

    def _drop_pending_reads(self) -> None:
        for _, request in self._reads:
            if request.requester == self.id:
                self._dropped_reads.append(request.request_id)
        for msg in self._reads_waiting_for_commit:
            if msg.frm == self.id:
                self._dropped_reads.append(msg.context)
        self._reads = []
        self._reads_waiting_for_commit = []

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def _become_pre_candidate(self) -> None:
        # Pre-Vote changes neither term nor vote: a node that cannot win disturbs no one.
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        self._sync_progress_with_conf()
        for pid, progress in self._progress.items():
            progress.recent_active = pid == self.id  # CheckQuorum counts only peers heard from in this term
        # A leader does not know which entries of earlier terms are committed, so it allows no new
        # membership change until everything it holds now has been applied.
        self._pending_conf_index = self.log.last_index()
        self._append_entries([Entry(0, 0, EntryType.NORMAL, b"")])  # §8: commit an entry of the new term

    # -- elections -------------------------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_election_timeout:
            self._election_elapsed = 0
            self._campaign(pre=self.config.pre_vote, transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self.term, NONE)
                return
            self._lead_transferee = NONE  # a transfer that did not finish in an election timeout is abandoned
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            # Carry the newest pending read round, so a round whose own heartbeats were lost still completes
            # (confirming it confirms every earlier round too).
            self._broadcast_heartbeat(self._reads[-1][0].to_bytes(8, "big") if self._reads else b"")
            for pid, progress in self._progress.items():
                if pid != self.id and progress.state is ProgressState.SNAPSHOT:
                    self._maybe_resend_snapshot_chunk(pid, progress)

    def _quorum_recently_active(self) -> bool:
        active = 0
        for pid, progress in self._progress.items():
            if pid == self.id:
                active += pid in self.conf_state.voters
                continue
            if progress.recent_active and not progress.is_learner:
                active += 1
            progress.recent_active = False
        return active >= self._quorum()

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if not self._promotable():
            return
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._record_vote(self.id, granted=True):
            return
        context = TRANSFER_CONTEXT if transfer else b""
        for voter in sorted(self.conf_state.voters):
            if voter != self.id:
                self._send(
                    Message(
                        vote_type,
                        to=voter,
                        frm=self.id,
                        term=term,
                        log_term=self.log.last_term(),
                        index=self.log.last_index(),
                        context=context,
                    )
                )

    def _record_vote(self, voter: int, granted: bool) -> bool:
        """Count a vote; on a decision, move on (pre-election -> election -> leader, or back to follower).
        Returns True when the vote decided the election."""
        self._votes.setdefault(voter, granted)
        granted_count = sum(1 for v, g in self._votes.items() if g and v in self.conf_state.voters)
        rejected_count = sum(1 for v, g in self._votes.items() if not g and v in self.conf_state.voters)
        if granted_count >= self._quorum():
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
                self._broadcast_append()
            return True
        if rejected_count >= self._quorum():
            self._become_follower(self.term, NONE)
            return True
        return False

    def _log_is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """§5.4.1 election restriction: grant a vote only to a candidate whose log is at least as up-to-date."""
        return self.log.is_up_to_date(last_term, last_index)

    # -- message handling ------------------------------------------------------------------------------

    def _step(self, m: Message) -> None:
        if m.type in _TERMLESS:
            pass
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = (
                    self.config.check_quorum
                    and self.leader_id != NONE
                    and self._election_elapsed < self.config.election_ticks
                )
                if in_lease and m.context != TRANSFER_CONTEXT:
                    return  # we heard from a leader recently: ignore a candidate that may just be partitioned
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes carry the term the candidate would use; they change no one's term
            elif m.type in _FROM_LEADER:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            self._step_stale(m)
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_stale(self, m: Message) -> None:
        """A message from an older term. Tell a stale leader about the newer term so it steps down (with
        CheckQuorum or Pre-Vote a node may otherwise never hear a higher term from us); reject a stale
        pre-vote so the pre-candidate does not wait forever; ignore the rest."""
        if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.APPEND, MT.HEARTBEAT, MT.COMMIT):
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id))
        elif m.type is MT.PRE_VOTE:
            self._send(Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _handle_vote_request(self, m: Message) -> None:
        response = MT.VOTE_RESP if m.type is MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader_id == NONE)
            or (m.type is MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self._log_is_up_to_date(m.log_term, m.index):
            self._send(Message(response, to=m.frm, frm=self.id, term=m.term))
            if m.type is MT.VOTE:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(response, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        if m.type is MT.PROPOSE or m.type is MT.READ_INDEX:
            if m.frm != self.id:
                # Another node's proposal or read, sent while it took us for the leader. etcd forwards it on
                # under its original sender, but our transport refuses a frame whose sender is not the
                # certificate's node (`wrong_sender`) and closes the connection: dropped instead. The sender
                # learns of the new leader and its driver asks again (a read) or fails the write as of
                # unknown outcome.
                return
            if self.leader_id == NONE:
                if m.type is MT.READ_INDEX:
                    self._dropped_reads.append(m.context)
                return
            m.to = self.leader_id
            self._send(m)
        elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT, MT.COMMIT):
            self._election_elapsed = 0
            self.leader_id = m.frm
            if m.type is MT.APPEND:
                self._handle_append(m)
            elif m.type is MT.COMMIT:
                self._handle_commit(m)
            elif m.type is MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot_chunk(m)
        elif m.type is MT.TIMEOUT_NOW:
            self._campaign(pre=False, transfer=True)  # the leader asked: skip Pre-Vote, bypass the lease
        elif m.type is MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        if m.type is MT.READ_INDEX and m.frm == self.id:
            self._dropped_reads.append(m.context)
        elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT, MT.COMMIT):
            self._become_follower(m.term, m.frm)  # someone won this term
            self._step_follower(m)
        elif (m.type is MT.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            m.type is MT.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            self._record_vote(m.frm, granted=not m.reject)

    def _step_leader(self, m: Message) -> None:
        if m.type is MT.PROPOSE:
            if self._lead_transferee == NONE:
                self._append_proposed(m.entries)
                self._forwarded[m.frm] = self.log.last_index()
            return
        if m.type is MT.READ_INDEX:
            self._handle_read_index(m)
            return
        progress = self._progress.get(m.frm)
        if progress is None:
            return  # not a member (any more)
        if m.type is MT.APPEND_RESP:
            progress.recent_active = True
            self._handle_append_response(m, progress)
        elif m.type is MT.HEARTBEAT_RESP:
            progress.recent_active = True
            self._handle_heartbeat_response(m, progress)
        elif m.type is MT.SNAPSHOT_RESP:
            progress.recent_active = True
            self._handle_snapshot_response(m, progress)

    # -- proposals -------------------------------------------------------------------------------------

    def _propose_entries(self, entries: list[Entry]) -> None:
        if self.role is Role.LEADER:
            if self._lead_transferee != NONE:
                raise ProposalDropped(f"leadership is being transferred to node {self._lead_transferee}; retry")
            self._append_proposed(entries)
        elif self.leader_id == NONE:
            raise ProposalDropped("no leader is known right now (an election is under way); retry")
        else:
            self._send(Message(MT.PROPOSE, to=self.leader_id, frm=self.id, entries=entries))

    def _append_proposed(self, entries: list[Entry]) -> None:
        accepted = []
        for entry in entries:
            if entry.type is EntryType.CONF_CHANGE:
                if self._pending_conf_index > self.log.applied:
                    # A forwarded change while another is pending: keep its slot as a no-op, as etcd does.
                    entry = Entry(0, 0, EntryType.NORMAL, b"")
                else:
                    self._pending_conf_index = self.log.last_index() + len(accepted) + 1
            accepted.append(entry)
        self._append_entries(accepted)
        self._broadcast_append()

    def _append_entries(self, entries: list[Entry]) -> None:
        first = self.log.last_index() + 1
        self.log.append([Entry(first + i, self.term, e.type, e.data) for i, e in enumerate(entries)])
        self._progress[self.id].maybe_update(self.log.last_index())
        self._maybe_commit()

    # -- replication: leader side ----------------------------------------------------------------------

    def _can_commit_at(self, index: int) -> bool:
        """§5.4.2 (Figure 8): a leader commits by counting replicas only entries of its own term."""
        return self.log.term(index) == self.term

    def _maybe_commit(self) -> bool:
        matches = sorted((self._progress[v].match for v in self.conf_state.voters if v in self._progress), reverse=True)
        if len(matches) < self._quorum():
            return False
        candidate = matches[self._quorum() - 1]
        if candidate <= self.log.committed or not self._can_commit_at(candidate):
            return False
        first_in_term = self.log.term(self.log.committed) != self.term
        self.log.commit_to(candidate)
        if first_in_term:
            waiting, self._reads_waiting_for_commit = self._reads_waiting_for_commit, []
            for msg in waiting:
                self._handle_read_index(msg)
        return True

    def _broadcast_append(self) -> None:
        for pid in self._progress:
            if pid != self.id:
                self._send_append(pid)

    def _announce_commit(self) -> None:
        """Tell every follower the new commit index: with its next entries if it has some to get, else with a
        COMMIT, which it does not answer (marked `COMMIT_AWAITED` if it commits a proposal the follower forwarded:
        the follower's caller waits for it). An empty APPEND would do (etcd sends one) but its answer, one more
        message each way per commit, tells a leader in the replicating state nothing new; a follower being
        probed still gets an APPEND, whose answer the probe waits for."""
        last = self.log.last_index()
        for pid, progress in self._progress.items():
            if pid == self.id:
                continue
            awaited = 0 < self._forwarded.get(pid, 0) <= self.log.committed
            if awaited:
                del self._forwarded[pid]
            replicated = progress.state is ProgressState.REPLICATE and progress.next > last
            prev_term = self.log.term(progress.next - 1) if replicated else None
            if prev_term is None:  # entries to send, a probe waiting for its answer, or compacted: an APPEND
                self._send_append(pid)
                continue
            self._send(
                Message(
                    MT.COMMIT,
                    to=pid,
                    frm=self.id,
                    index=progress.next - 1,
                    log_term=prev_term,
                    commit=self.log.committed,
                    context=COMMIT_AWAITED if awaited else b"",
                )
            )

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send `to` the entries it needs next (or a snapshot chunk if they were compacted). Returns
        False when nothing was sent (paused by flow control, or nothing to send)."""
        progress = self._progress[to]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None:
            if self._snapshot is None:
                return False
            progress.become_snapshot(self._snapshot.meta.index)
            self._send_snapshot_chunk(to)
            return True
        entries = self.log.slice(progress.next, self.log.last_index() + 1, self.config.max_size_per_msg)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APPEND,
                to=to,
                frm=self.id,
                index=prev_index,
                log_term=prev_term,
                entries=entries,
                commit=self.log.committed,
            )
        )
        progress.sent_entries(entries[-1].index if entries else None, sum(len(e.data) for e in entries))
        return True

    def _handle_append_response(self, m: Message, progress: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if progress.maybe_decrease_to(m.index, next_probe):
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._send_append(m.frm)
            return
        if progress.maybe_update(m.index):
            if progress.state is ProgressState.PROBE:
                progress.become_replicate()
            elif progress.state is ProgressState.SNAPSHOT and progress.match >= progress.pending_snapshot:
                progress.become_probe()
                progress.become_replicate()
            elif progress.state is ProgressState.REPLICATE:
                progress.inflights.free_le(m.index)
            if self._maybe_commit():
                self._announce_commit()
            while self._send_append(m.frm, send_if_empty=False):
                pass  # pipelining: fill the window
            if m.frm == self._lead_transferee and progress.match == self.log.last_index():
                self._send(Message(MT.TIMEOUT_NOW, to=m.frm, frm=self.id))

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for pid, progress in self._progress.items():
            if pid != self.id:
                commit = min(progress.match, self.log.committed)  # never tell a follower to commit past its match
                self._send(Message(MT.HEARTBEAT, to=pid, frm=self.id, commit=commit, context=context))

    def _handle_heartbeat_response(self, m: Message, progress: Progress) -> None:
        progress.probe_sent = False
        if progress.match < self.log.last_index():
            if progress.state is ProgressState.REPLICATE and progress.inflights.full():
                progress.inflights.free_first_one()  # an ack was lost: let one more APPEND out to find out
            self._send_append(m.frm)
        if m.context:
            self._ack_read_round(int.from_bytes(m.context, "big"), m.frm)

    # -- snapshots -------------------------------------------------------------------------------------

    def _maybe_resend_snapshot_chunk(self, to: int, progress: Progress) -> None:
        """One chunk is in flight per follower; send it again only after it went unanswered for a while, so
        a round trip longer than a heartbeat does not multiply the chunks in flight."""
        if progress.snapshot_chunk_in_flight:
            progress.snapshot_quiet_heartbeats += 1
            if progress.snapshot_quiet_heartbeats < SNAPSHOT_RESEND_HEARTBEATS:
                return
        self._send_snapshot_chunk(to)

    def _send_snapshot_chunk(self, to: int) -> None:
        progress = self._progress[to]
        snapshot = self._snapshot
        assert snapshot is not None
        if progress.pending_snapshot != snapshot.meta.index:
            progress.become_snapshot(snapshot.meta.index)  # we compacted again meanwhile: send the newer one
        progress.snapshot_chunk_in_flight = True
        progress.snapshot_quiet_heartbeats = 0
        offset = progress.snapshot_offset
        chunk = snapshot.data[offset : offset + self.config.snapshot_chunk_size]
        self._send(
            Message(
                MT.SNAPSHOT,
                to=to,
                frm=self.id,
                snapshot_meta=snapshot.meta,
                index=offset,
                chunk=chunk,
                done=offset + len(chunk) >= len(snapshot.data),
            )
        )

    def _handle_snapshot_response(self, m: Message, progress: Progress) -> None:
        if progress.state is not ProgressState.SNAPSHOT or m.reject_hint != progress.pending_snapshot:
            return  # about a snapshot we no longer send
        if self._snapshot is None or m.index > len(self._snapshot.data):
            return
        if m.reject:
            # The follower expects another offset: further on (it has more than we thought) or 0 (it lost
            # what it had, e.g. restarted). Anything else answers a duplicate of an older chunk.
            if m.index != 0 and m.index <= progress.snapshot_offset:
                return
        elif m.index <= progress.snapshot_offset:
            return  # a duplicate or reordered ack
        progress.snapshot_offset = m.index
        self._send_snapshot_chunk(m.frm)

    # -- replication: follower side --------------------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=last_new))
            return
        hint_index = self.log.find_conflict_by_term(min(m.index, self.log.last_index()), m.log_term)
        self._send(
            Message(
                MT.APPEND_RESP,
                to=m.frm,
                frm=self.id,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=self.log.term(hint_index) or 0,
            )
        )

    def _handle_commit(self, m: Message) -> None:
        """An APPEND without entries, left unanswered (see `_announce_commit`): a follower that has the entry
        the leader last sent it commits up to it; one that does not waits for the next APPEND or heartbeat."""
        if m.index >= self.log.committed and self.log.match_term(m.index, m.log_term):
            self.log.commit_to(min(m.commit, m.index))

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, context=m.context))

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot_meta
        if meta is None:
            return
        if meta.index <= self.log.committed:
            self._incoming_snapshot = None
            self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=self.log.committed))
            return
        incoming = self._incoming_snapshot
        if m.index == 0 and (incoming is None or incoming.meta != meta or not incoming.data):
            incoming = self._incoming_snapshot = _IncomingSnapshot(meta, bytearray())
        if incoming is None or incoming.meta != meta or len(incoming.data) != m.index:
            expected = len(incoming.data) if incoming is not None and incoming.meta == meta else 0
            self._send(
                Message(MT.SNAPSHOT_RESP, to=m.frm, frm=self.id, index=expected, reject=True, reject_hint=meta.index)
            )
            return
        incoming.data += m.chunk
        if not m.done:
            self._send(Message(MT.SNAPSHOT_RESP, to=m.frm, frm=self.id, index=len(incoming.data), reject_hint=meta.index))
            return
        self._incoming_snapshot = None
        self._restore(Snapshot(meta, bytes(incoming.data)))
        # Acknowledge only what the snapshot proves: entries after it in our log may still differ.
        self._send(Message(MT.APPEND_RESP, to=m.frm, frm=self.id, index=self.log.committed))

    def _restore(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if self.log.match_term(meta.index, meta.term):
            # We already hold the entry the snapshot ends with: keep our log, just commit up to it.
            self.log.commit_to(meta.index)
            return
        self.log.restore(meta)
        self._snapshot = snapshot
        self._restored = snapshot
        self._conf_history = [(meta.index, meta.conf_state)]
        self._conf_applied = meta.index

    # -- linearizable reads ----------------------------------------------------------------------------

    def _handle_read_index(self, m: Message) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Until the leader commits an entry of its term it does not know the latest commit index.
            self._reads_waiting_for_commit.append(m)
            return
        request = _ReadRequest(self.log.committed, m.frm, m.context)
        if len(self.conf_state.voters) == 1 and self.id in self.conf_state.voters:
            self._answer_read(request)
            return
        self._read_seq += 1
        request.acks.add(self.id)
        self._reads.append((self._read_seq, request))
        self._broadcast_heartbeat(self._read_seq.to_bytes(8, "big"))

    def _ack_read_round(self, round_id: int, voter: int) -> None:
        """A heartbeat of read round `round_id` came back: once a quorum confirmed it, that round and every
        earlier one are safe to answer (we were still leader after they were received)."""
        if voter not in self.conf_state.voters:
            return
        confirmed = None
        for position, (seq, request) in enumerate(self._reads):
            if seq > round_id:
                break
            if seq == round_id:
                request.acks.add(voter)
                if len(request.acks & self.conf_state.voters) >= self._quorum():
                    confirmed = position
        if confirmed is None:
            return
        ready, self._reads = self._reads[: confirmed + 1], self._reads[confirmed + 1 :]
        for _, request in ready:
            self._answer_read(request)

    def _answer_read(self, request: _ReadRequest) -> None:
        if request.requester == self.id:
            self._read_states.append(ReadState(request.index, request.request_id))
        else:
            self._send(
                Message(MT.READ_INDEX_RESP, to=request.requester, frm=self.id, index=request.index, context=request.request_id)
            )

    # -- output ----------------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.type not in _TERMLESS and m.type not in (MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP):
            m.term = self.term
        self._msgs.append(m)
