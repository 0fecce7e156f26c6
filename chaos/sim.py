"""Deterministic discrete-event simulation of a Raft cluster of `RaftCore`s under faults.

One seeded random.Random drives a run: the scenario, message delays and losses, disk write latencies,
faults, client operations, and the seed of every core's own random.Random. Events wait in a priority queue
ordered by virtual time and then by a sequence number, so a seed replays exactly. A step is one event
processed: a node tick, one message delivered, one disk write returning, one fault, one client operation.
The checks in `chaos.checks` run on what each step changed.

Each node handles its Readies in one of two persistence modes (`chaos.driver`):
- `driver` (the default, what runs in production): the driver's pipeline. Readies pile up into batches;
  a batch's write takes simulated time (a disk-write event, later still on a slow disk), and only when it
  returns does the node send the batch's remaining messages, apply its entries and serve its reads, batch
  after batch in order. Some batches send before their write returns, some are not written at all. A crash
  loses every write that has not returned, including one whose messages are already out.
- `sync`: each Ready is written, then its messages sent, then its entries applied, all within the step.

After the chaos steps the simulator heals everything (and stops compacting) and requires the cluster to
elect a leader and to commit and apply a fresh write on every member within a bound: LIVENESS_TIMEOUTS
election timeouts, plus a round trip per entry of backlog and per chunk of the biggest snapshot.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import random
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from chaos.checks import (
    APPLY_ORDER,
    COMMIT_WITHIN_DISK,
    CORE_ERROR,
    LIVENESS,
    NOTHING_UNWRITTEN,
    PERSIST_BEFORE_APPLY,
    PERSIST_BEFORE_SEND,
    READY_CONTRACT,
    InvariantViolation,
    SafetyChecker,
)
from chaos.driver import DRIVER, PERSISTENCE_MODES, Batch, Pipeline
from chaos.nemesis import BEFORE_APPLY, BEFORE_PERSIST, BEFORE_SEND, COMMITTED, ELECTED, Nemesis
from chaos.network import SimNetwork
from chaos.scenario import ELECTION_TICKS, TICK_MS, Scenario
from chaos.storage import AppliedLog, SimDisk
from chaos.workload import ClientWorkload
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
    ReadState,
    Ready,
    Role,
    Snapshot,
)

LIVENESS_TIMEOUTS = 20
"""Election timeouts a healed cluster gets to elect a leader and commit a write on every member."""

RESTART_DELAY_MS = (5, 400)
TRACE_LEN = 30


@dataclass
class Result:
    """The outcome of one seed: the first violation (if any), the last steps, counters and a fingerprint."""

    size: int
    seed: int
    steps: int
    persistence: str
    violation: InvariantViolation | None
    trace: list[str]
    stats: Counter[str]
    checks: int
    digest: str
    """SHA-256 of the applied history; two runs of one seed must agree on it."""

    @property
    def ok(self) -> bool:
        return self.violation is None

    def replay_command(self) -> str:
        return (
            f"python -m chaos sim --nodes {self.size} --steps {self.steps} --seed {self.seed} "
            f"--persistence {self.persistence}"
        )


def run_seed(
    seed: int,
    size: int,
    steps: int,
    core_cls: type[RaftCore] = RaftCore,
    trace_len: int | None = TRACE_LEN,
    persistence: str = DRIVER,
    pipeline_cls: type[Pipeline] = Pipeline,
) -> Result:
    """Simulate `size` nodes for `steps` chaos steps from `seed`, then heal and check liveness.

    `persistence` is one of PERSISTENCE_MODES; `pipeline_cls` (mode `driver` only) lets tests run a driver
    that breaks its rules on purpose."""
    return Simulator(seed, size, core_cls, trace_len, persistence, pipeline_cls).run(steps)


class SimNode:
    """A cluster member as the simulator drives it: a core, its disk and application, and its fate."""

    __slots__ = (
        "app",
        "config",
        "core",
        "crash_stage",
        "delay_ms",
        "disk",
        "disk_episode",
        "disk_write_ms",
        "id",
        "incarnation",
        "pending_reads",
        "pipeline",
        "removed",
        "role",
        "sent_before_written",
        "slow_episode",
        "tick_ms",
        "up",
    )

    def __init__(self, node_id: int, config: RaftConfig, disk: SimDisk, disk_write_ms: tuple[int, int]) -> None:
        self.id = node_id
        self.config = config
        self.disk = disk
        self.core: RaftCore
        self.app = AppliedLog()
        self.up = False
        self.removed = False
        self.incarnation = 0
        """Bumped on every crash and restart: events addressed to an older incarnation are void."""
        self.tick_ms = TICK_MS
        self.delay_ms = 0
        self.slow_episode = 0
        self.disk_write_ms = disk_write_ms
        self.disk_episode = 0
        self.crash_stage: str | None = None
        self.pending_reads: list[ReadState] = []
        self.role = Role.FOLLOWER
        self.pipeline: Pipeline | None = None
        """Persistence mode `driver`: the batches and flush rules of this incarnation (None in mode `sync`)."""
        self.sent_before_written = False
        """Whether the write in progress belongs to a batch whose messages went out before it (for the stats)."""


class Simulator:
    """One run: the cluster, the event queue, the network, the nemesis, the clients and the checker."""

    def __init__(
        self,
        seed: int,
        size: int,
        core_cls: type[RaftCore],
        trace_len: int | None,
        persistence: str = DRIVER,
        pipeline_cls: type[Pipeline] = Pipeline,
    ) -> None:
        if persistence not in PERSISTENCE_MODES:
            raise ValueError(f"persistence must be one of {', '.join(PERSISTENCE_MODES)}, not {persistence!r}")
        self.seed = seed
        self.size = size
        self.core_cls = core_cls
        self.persistence = persistence
        self._pipeline_cls = pipeline_cls if persistence == DRIVER else None
        self.rng = random.Random(f"raftswarm-sim/{size}/{seed}")
        self.scenario = Scenario.draw(self.rng, persistence)
        self.network = SimNetwork(
            self.rng,
            self.scenario.loss,
            self.scenario.duplication,
            self.scenario.min_delay_ms,
            self.scenario.max_delay_ms,
        )
        self.checker = SafetyChecker()
        self.stats: Counter[str] = Counter()
        self.trace: deque[tuple] = deque(maxlen=trace_len)
        self.now = 0
        self.step = 0
        self.chaos_on = True
        self.nodes: dict[int, SimNode] = {}
        self.next_node_id = size + 1
        self._queue: list[tuple] = []
        self._seq = 0
        self._reads = 0
        self._probe_writes: list[bytes] = []
        self._probe_sent_at = -(1 << 62)
        self._live = False
        bootstrap = core_cls.bootstrap(range(1, size + 1))
        for node_id in range(1, size + 1):
            self._add_node(node_id, bootstrap)
        self.nemesis = Nemesis(self, self.scenario, self.rng)
        self.workload = ClientWorkload(self, self.scenario, self.rng)
        self.schedule(self._fault_gap(), self._on_fault)
        self.schedule(self._client_gap(), self._on_client)

    # --- running ------------------------------------------------------------------------------------------

    def run(self, steps: int) -> Result:
        violation = None
        try:
            self._run_chaos(steps)
            self.heal()
            self._await_liveness()
            self.checker.check_durability((n.id, n.app.entries) for n in self.nodes.values() if n.up)
        except InvariantViolation as broken:
            violation = broken
        except Exception as error:  # noqa: BLE001 -- a crash inside the core fails the run like a broken check
            violation = InvariantViolation(CORE_ERROR, _describe_error(error))
        return Result(
            size=self.size,
            seed=self.seed,
            steps=steps,
            persistence=self.persistence,
            violation=violation,
            trace=[_format_step(item) for item in self.trace],
            stats=self._final_stats(),
            checks=self.checker.checks,
            digest=_history_digest(self.checker),
        )

    def _run_chaos(self, steps: int) -> None:
        queue = self._queue
        while self.step < steps:
            time, _, handler, args = heapq.heappop(queue)
            self.now = time
            if handler(*args):
                self.step += 1

    def heal(self) -> None:
        """No more faults: perfect network, normal speed, every member that is down comes back."""
        self.chaos_on = False
        self.network.heal()
        self.record("heal", "network healed, all nodes at normal speed and up")
        for node in self.nodes.values():
            node.crash_stage = None
            node.tick_ms = TICK_MS
            node.delay_ms = 0
            node.slow_episode += 1
            node.disk_write_ms = self.scenario.disk_write_ms
            node.disk_episode += 1
            if not node.up and not node.removed:
                self._boot(node)

    def _await_liveness(self) -> None:
        budget = self._liveness_budget_ms()
        deadline = self.now + budget
        self.schedule(0, self._on_probe)
        queue = self._queue
        while not self._live:
            time, _, handler, args = heapq.heappop(queue)
            if time > deadline:
                raise InvariantViolation(
                    LIVENESS,
                    f"{budget}ms after healing, no leader has a fresh write applied on every member\n{self.status()}",
                )
            self.now = time
            if handler(*args):
                self.step += 1

    def _liveness_budget_ms(self) -> int:
        """LIVENESS_TIMEOUTS election timeouts, plus one slow round trip (with a write at each end) for every
        entry of the backlog and every chunk of the biggest snapshot: a lagging member may need all of them,
        one at a time."""
        live = self.live_nodes()
        backlog = max(n.core.last_index for n in live) - min(n.app.applied_index for n in live)
        biggest = max((len(n.disk.snapshot.data) for n in live if n.disk.snapshot), default=0)
        chunks = -(-biggest // self.scenario.snapshot_chunk_size)
        round_trip = 2 * self.scenario.max_delay_ms + TICK_MS + 2 * self.scenario.disk_write_ms[1]
        return LIVENESS_TIMEOUTS * ELECTION_TICKS * TICK_MS + (backlog + chunks) * round_trip

    def run_until(self, done: Callable[[], bool], within_ms: int) -> bool:
        """Process events until `done()` holds (True) or `within_ms` of virtual time have passed (False).

        For tests that script a run move by move: with `chaos_on` False, no fault or client acts on its own."""
        deadline = self.now + within_ms
        queue = self._queue
        while not done():
            if queue[0][0] > deadline:
                return False
            time, _, handler, args = heapq.heappop(queue)
            self.now = time
            if handler(*args):
                self.step += 1
        return True

    def schedule(self, delay_ms: int, handler: Callable[..., bool], *args) -> None:
        """Run `handler(*args)` after `delay_ms`; it returns whether it did something (counts as a step)."""
        heapq.heappush(self._queue, (self.now + delay_ms, self._seq, handler, args))
        self._seq += 1

    def record(self, kind: str, detail: object) -> None:
        self.trace.append((self.step, self.now, kind, detail))

    # --- events -------------------------------------------------------------------------------------------

    def _on_tick(self, node: SimNode, incarnation: int) -> bool:
        if node.incarnation != incarnation:
            return False
        ready = node.core.tick()
        if not ready.is_empty():  # a tick that did nothing would only crowd the trace
            self.trace.append((self.step, self.now, "tick", node.id))
        self._handle(node, ready)
        if node.incarnation == incarnation:
            self.schedule(node.tick_ms, self._on_tick, node, incarnation)
        return True

    def _on_deliver(self, node: SimNode, incarnation: int, sender: int, msg: Message) -> bool:
        if node.incarnation != incarnation or self.network.is_blocked(sender, node.id):
            return False
        self.trace.append((self.step, self.now, "deliver", (sender, node.id, msg)))
        self._handle(node, node.core.step(msg))
        return True

    def _on_fault(self) -> bool:
        if not self.chaos_on:
            return False
        self.nemesis.strike()
        self.schedule(self._fault_gap(), self._on_fault)
        return True

    def _on_client(self) -> bool:
        if not self.chaos_on:
            return False
        self.workload.act()
        self.schedule(self._client_gap(), self._on_client)
        return True

    def _on_restart(self, node: SimNode) -> bool:
        if node.up or node.removed or not self.chaos_on:
            return False
        self.record("restart", node.id)
        self._boot(node)
        self.stats["restarts"] += 1
        return True

    def _on_probe(self) -> bool:
        """The liveness client: write through the leader until every member has applied one such write."""
        leader = self.leader()
        if leader is not None and self._all_members_applied_probe(leader):
            self.record("liveness", f"leader {leader.id} term {leader.core.term}: fresh write applied everywhere")
            self._live = True
            return True
        self.schedule(TICK_MS, self._on_probe)
        retry_ms = 2 * ELECTION_TICKS * TICK_MS
        if leader is None or self.now - self._probe_sent_at < retry_ms:
            return False
        write = b"liveness-%d" % len(self._probe_writes)
        self._probe_writes.append(write)
        self._probe_sent_at = self.now
        self.propose(leader, write)
        return True

    def _all_members_applied_probe(self, leader: SimNode) -> bool:
        acked = self.checker.acked_index
        indexes = [acked[w] for w in self._probe_writes if w in acked]
        if not indexes:
            return False
        index = min(indexes)
        for member in sorted(leader.core.conf_state.members()):
            node = self.nodes.get(member)
            if node is None or not node.up or node.app.applied_index < index:
                return False
        return True

    def _fault_gap(self) -> int:
        return self.rng.randint(*self.scenario.fault_gap_ms)

    def _client_gap(self) -> int:
        return self.rng.randint(*self.scenario.client_gap_ms)

    # --- handling a Ready: persistence mode `sync` -------------------------------------------------------

    def _handle(self, node: SimNode, ready: Ready) -> None:
        """Hand the Ready of the input `node` just took to its persistence mode."""
        if self._pipeline_cls is None:
            self._handle_sync(node, ready)
        else:
            self._feed(node, ready)

    def _handle_sync(self, node: SimNode, ready: Ready) -> None:
        """Persist, send, apply, serve reads -- unless a torn crash cuts the handling short."""
        persists = ready.hard_state is not None or bool(ready.entries) or ready.snapshot is not None
        torn = node.crash_stage if persists else None
        if torn == BEFORE_PERSIST:
            self.crash(node, torn)
            return
        if persists:
            self._persist(node, ready.hard_state, ready.entries, ready.snapshot)
        if torn == BEFORE_SEND:
            self.crash(node, torn)
            return
        for msg in ready.messages:
            self._send(node, msg)
        elected = self._check_node(node)
        self._check_disk_holds_core(node, PERSIST_BEFORE_SEND, "sent its messages")
        if self.chaos_on and node.role is Role.LEADER:
            self._leader_moment(node, elected, ready.committed_entries)
        if torn == BEFORE_APPLY:
            self.crash(node, torn)
            return
        self._apply_batch(node, ready.snapshot, ready.committed_entries, ready.read_states, ready.dropped_reads)

    # --- handling a Ready: persistence mode `driver` (the names are RaftDriver's) ------------------------

    def _feed(self, node: SimNode, ready: Ready) -> None:
        """The driver's `_feed`: the Ready joins the open batch; an idle flusher takes it at once."""
        pipeline = node.pipeline
        if not ready.is_empty():
            pipeline.feed(ready)
        elected = self._check_node(node)
        if self.chaos_on and node.role is Role.LEADER:
            self._leader_moment(node, elected, ready.committed_entries)
        if pipeline.writing is None:
            self._run_flusher(node)

    def _run_flusher(self, node: SimNode) -> None:
        """The driver's `_run_flusher`: flush batches strictly in order, until one waits for its write."""
        pipeline = node.pipeline
        while node.up and (batch := pipeline.take_batch()) is not None:
            self._flush(node, batch)
        if node.up and pipeline.is_idle():
            self._check_disk_holds_core(node, NOTHING_UNWRITTEN, "has nothing left to write")

    def _flush(self, node: SimNode, batch: Batch) -> None:
        """The driver's `_flush` up to its write: send early if allowed, then start the write (if one is due)
        and let `_on_written` finish the batch when it returns."""
        pipeline = node.pipeline
        send_early = pipeline.may_send_before_persisting(batch)
        if send_early:
            for msg in batch.messages:
                self._send(node, msg)
        early = pipeline.appliable_before_persisting(batch)
        hard_state = batch.hard_state
        if not pipeline.must_sync(batch):
            self.stats["commits_carried"] += hard_state is not None
            if early:
                self._apply(node, early)
            self._finish_flush(node, batch, send_early, applied_early=len(early))
            return
        node.sent_before_written = send_early and bool(batch.messages)
        self.stats["writes"] += 1
        self.stats["sent_before_written"] += node.sent_before_written
        if node.crash_stage == BEFORE_PERSIST:
            self.crash(node, BEFORE_PERSIST)
            return
        hard_state = pipeline.start_write(batch)
        delay = self.rng.randint(*node.disk_write_ms)
        self.schedule(delay, self._on_written, node, node.incarnation, batch, hard_state, send_early, len(early))
        self.stats["applied_while_writing"] += len(early)
        if early:
            self._apply(node, early)  # the driver applies them while the disk writes
        if node.sent_before_written and self.chaos_on:
            self.nemesis.sent_before_written(node)

    def _on_written(
        self,
        node: SimNode,
        incarnation: int,
        batch: Batch,
        hard_state: HardState | None,
        send_early: bool,
        applied_early: int = 0,
    ) -> bool:
        """A write returned: the rest of the driver's `_flush`, then the flusher takes the next batch."""
        if node.incarnation != incarnation:
            return False  # the node crashed while writing: the write never reached the disk
        self.trace.append((self.step, self.now, "written", (node.id, batch, hard_state)))
        self._persist(node, hard_state, batch.entries, batch.snapshot)
        node.pipeline.written(hard_state)
        torn = node.crash_stage
        if torn == BEFORE_SEND:
            self.crash(node, torn)
            return True
        self._finish_flush(node, batch, send_early, torn, applied_early)
        if node.up:
            self._run_flusher(node)
        return True

    def _finish_flush(
        self, node: SimNode, batch: Batch, sent: bool, torn: str | None = None, applied_early: int = 0
    ) -> None:
        """The end of the driver's `_flush`: the messages not sent early, then apply what was not applied while
        writing, then serve reads."""
        if not sent:
            for msg in batch.messages:
                self._send(node, msg)
        if torn == BEFORE_APPLY:
            self.crash(node, torn)
            return
        rest = batch.committed[applied_early:]
        self._apply_batch(node, batch.snapshot, rest, batch.read_states, batch.dropped_reads)

    # --- what both modes do -------------------------------------------------------------------------------

    def _persist(
        self, node: SimNode, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None
    ) -> None:
        disk = node.disk
        prev_term = disk.save(hard_state, entries, snapshot)
        self.checker.entries_persisted(node.id, entries, prev_term)
        if disk.hard_state.commit > disk.last_index:
            raise InvariantViolation(
                COMMIT_WITHIN_DISK,
                f"node {node.id}'s disk holds commit index {disk.hard_state.commit} but entries only up to "
                f"{disk.last_index}: a restart would start from a commit index past its log",
            )

    def _apply_batch(
        self,
        node: SimNode,
        snapshot: Snapshot | None,
        committed: list[Entry],
        read_states: list[ReadState],
        dropped_reads: list[bytes],
    ) -> None:
        """Restore the snapshot, apply the committed entries, serve the reads: what follows a write."""
        if snapshot is not None:
            self._restore(node, snapshot)
        if committed:
            self._apply(node, committed)
        if read_states or node.pending_reads:
            self._serve_reads(node, read_states)
        if dropped_reads:
            self.stats["reads_dropped"] += len(dropped_reads)

    def _leader_moment(self, leader: SimNode, elected: bool, committed: list[Entry]) -> None:
        """Tell the nemesis when a leader is at one of the moments it may strike."""
        if elected:
            self.nemesis.leader_at_risk(leader, ELECTED)
        elif committed and committed[0].term < leader.core.term:
            self.nemesis.leader_at_risk(leader, COMMITTED)

    def _send(self, node: SimNode, msg: Message) -> None:
        dest = self.nodes.get(msg.to)
        if dest is None or not dest.up:
            return
        delays = self.network.deliveries(node.id, dest.id, node.delay_ms + dest.delay_ms)
        for copy_number, delay in enumerate(delays):
            delivered = copy.copy(msg) if copy_number else msg
            self.schedule(delay, self._on_deliver, dest, dest.incarnation, node.id, delivered)

    def _check_node(self, node: SimNode) -> bool:
        """Run the per-input checks; True when the node has just become leader."""
        core = node.core
        elected = False
        if core.role is not node.role:
            node.role = core.role
            self.record("role", f"node {node.id} is {core.role.value} in term {core.term}")
            elected = core.role is Role.LEADER
            self.stats["leaders_elected"] += elected
        self.checker.node_stepped(node.id, core)
        return elected

    def _check_disk_holds_core(self, node: SimNode, invariant: str, moment: str) -> None:
        """At `moment`, everything the core would need after a restart -- term, vote, log -- is on disk."""
        core, disk = node.core, node.disk
        if disk.last_index != core.last_index or disk.hard_state.term != core.term or disk.hard_state.vote != core.vote:
            raise InvariantViolation(
                invariant,
                f"node {node.id} {moment} at term {core.term}, vote {core.vote}, last index {core.last_index}, but "
                f"its disk holds term {disk.hard_state.term}, vote {disk.hard_state.vote}, last index {disk.last_index}",
            )

    def _restore(self, node: SimNode, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index < node.app.applied_index:
            raise InvariantViolation(
                APPLY_ORDER,
                f"node {node.id} was told to restore a snapshot at {meta.index} after applying {node.app.applied_index}",
            )
        if node.disk.snapshot_index < meta.index:
            raise InvariantViolation(
                PERSIST_BEFORE_APPLY,
                f"node {node.id} restored a snapshot at {meta.index} before writing it (its disk's is at "
                f"{node.disk.snapshot_index})",
            )
        entries = AppliedLog.decode(snapshot.data)
        self.checker.snapshot_restored(node.id, meta, entries)
        node.app = AppliedLog(entries)
        self.stats["snapshots_installed"] += 1

    def _apply(self, node: SimNode, committed: list[Entry]) -> None:
        disk, last = node.disk, committed[-1]
        if last.index > disk.last_index or (last.index > disk.snapshot_index and disk.term_at(last.index) != last.term):
            # By log matching (checked on every write), the disk then holds the entries before `last` too.
            raise InvariantViolation(
                PERSIST_BEFORE_APPLY,
                f"node {node.id} was given {last.index} (term {last.term}) to apply, but its disk holds entries up "
                f"to {disk.last_index}" + ("" if last.index > disk.last_index else " with another term there"),
            )
        app = node.app
        for entry in committed:
            if entry.index != app.applied_index + 1:
                raise InvariantViolation(
                    READY_CONTRACT,
                    f"node {node.id} was given entry {entry.index} to apply after applying {app.applied_index}",
                )
            app.entries.append(entry)
            self.checker.entry_applied(node.id, entry)
            if entry.type is EntryType.CONF_CHANGE:
                self._membership_changed(ConfChange.decode(entry.data))
        if self.chaos_on and node.up:
            first, last = self.compactable(node)
            if app.applied_index - first + 1 >= self.scenario.compact_every and last >= first:
                self.compact(node, last)

    def _serve_reads(self, node: SimNode, read_states: list[ReadState]) -> None:
        applied = node.app.applied_index
        waiting = []
        for read in node.pending_reads + read_states:
            if read.index <= applied:
                self.checker.read_served(node.id, read.request_id, applied)
                self.stats["reads_served"] += 1
            else:
                waiting.append(read)
        node.pending_reads = waiting

    def _membership_changed(self, change: ConfChange) -> None:
        """Act as the operator would: start a node once it is added, stop it for good once it is removed."""
        if change.type is ConfChangeType.REMOVE:
            node = self.nodes.get(change.node_id)
            if node is not None and not node.removed:
                node.removed = True
                node.up = False
                node.incarnation += 1
                self.record("removed", f"node {node.id} stopped for good")
        elif change.node_id not in self.nodes:
            self._add_node(change.node_id, PersistedState())
            self.next_node_id = max(self.next_node_id, change.node_id + 1)
            self.record("joined", f"node {change.node_id} started with an empty disk")

    # --- the cluster, as the nemesis and the clients see it -----------------------------------------------

    def leader(self) -> SimNode | None:
        """The live leader with the highest term, if any."""
        best = None
        for node in self.nodes.values():
            if node.up and node.core.role is Role.LEADER and (best is None or node.core.term > best.core.term):
                best = node
        return best

    def live_nodes(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.up]

    def membership(self) -> ConfState:
        """The leader's view of the membership, or the most advanced live node's when there is no leader."""
        leader = self.leader()
        if leader is not None:
            return leader.core.conf_state
        live = self.live_nodes()
        if not live:
            return ConfState(frozenset(self.nodes))
        return max(live, key=lambda node: node.core.commit_index).core.conf_state

    def crash(self, node: SimNode, stage: str = "") -> None:
        """Stop a node: everything not on its disk is gone (a write in progress too), messages on their way to
        it are lost."""
        if node.pipeline is not None and (node.pipeline.writing is not None or stage == BEFORE_PERSIST):
            self.stats["writes_lost"] += 1
            self.stats["writes_lost_after_send"] += node.sent_before_written
        node.up = False
        node.incarnation += 1
        node.crash_stage = None
        node.pending_reads = []
        node.pipeline = None
        self.record("crash", f"node {node.id} {stage}".rstrip())
        self.stats["crashes"] += 1
        self.schedule(self.rng.randint(*RESTART_DELAY_MS), self._on_restart, node)

    def propose(self, node: SimNode, data: bytes) -> None:
        self.record("propose", f"at node {node.id}: {data[:24]!r}")
        try:
            ready = node.core.propose(data)
        except ProposalDropped:
            self.stats["proposals_dropped"] += 1
            return
        self.stats["proposals"] += 1
        self._handle(node, ready)

    def read(self, node: SimNode) -> None:
        self._reads += 1
        request_id = b"read-%d" % self._reads
        self.record("read", f"at node {node.id}: {request_id.decode()}")
        self.checker.read_invoked(request_id)
        self.stats["reads"] += 1
        self._handle(node, node.core.read_index(request_id))

    def change_membership(self, node: SimNode, change: ConfChange) -> bool:
        """Propose a membership change at `node`; False if the core refused it."""
        self.record("conf change", f"at node {node.id}: {change.type.name} {change.node_id}")
        try:
            ready = node.core.propose_conf_change(change)
        except ProposalDropped:
            self.stats["conf_changes_dropped"] += 1
            return False
        self.stats["conf_changes_proposed"] += 1
        self._handle(node, ready)
        return True

    def transfer_leadership(self, node: SimNode, target: int) -> None:
        self.record("transfer", f"leader {node.id} to {target}")
        try:
            ready = node.core.transfer_leadership(target)
        except ProposalDropped:
            self.stats["transfers_refused"] += 1
            return
        self.stats["transfers"] += 1
        self._handle(node, ready)

    def campaign(self, node: SimNode) -> None:
        self.record("campaign", f"node {node.id}")
        self.stats["campaigns"] += 1
        self._handle(node, node.core.campaign())

    def compactable(self, node: SimNode) -> tuple[int, int]:
        """The first and last index `node` may compact at: after its core's snapshot (in mode `driver`, one
        received may still be waiting for its write), up to what both core and application have applied."""
        meta = node.core.snapshot_meta
        return (meta.index if meta is not None else 0) + 1, min(node.app.applied_index, node.core.applied_index)

    def compact(self, node: SimNode, index: int) -> None:
        """Snapshot the application at `index` and let the core drop the log up to there."""
        self.record("compact", f"node {node.id} at {index}")
        snapshot = node.core.compact(index, node.app.snapshot_data(index))
        if snapshot.meta.index != index:
            raise InvariantViolation(READY_CONTRACT, f"node {node.id} compacted at {index} but got {snapshot.meta}")
        node.disk.compact(snapshot)
        self.stats["compactions"] += 1

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _add_node(self, node_id: int, persisted: PersistedState) -> None:
        node = SimNode(
            node_id, self.scenario.raft_config(node_id), SimDisk(node_id, persisted), self.scenario.disk_write_ms
        )
        self.nodes[node_id] = node
        self._boot(node)

    def _boot(self, node: SimNode) -> None:
        """(Re)start a node from exactly what its disk holds."""
        disk = node.disk
        node.core = self.core_cls(node.config, disk.persisted_state(), random.Random(self.rng.getrandbits(64)))
        node.app = AppliedLog(AppliedLog.decode(disk.snapshot.data) if disk.snapshot is not None else [])
        node.up = True
        node.incarnation += 1
        node.pending_reads = []
        node.role = node.core.role
        if self._pipeline_cls is not None:
            node.pipeline = self._pipeline_cls(disk.hard_state)
        self.checker.node_restarted(node.id)
        self.schedule(self.rng.randint(1, node.tick_ms), self._on_tick, node, node.incarnation)

    # --- reporting ----------------------------------------------------------------------------------------

    def status(self) -> str:
        """One line per node: what a human needs to see why a cluster is stuck."""
        lines = []
        for node in self.nodes.values():
            state = "removed" if node.removed else "up" if node.up else "down"
            core = node.core
            lines.append(
                f"  node {node.id}: {state} {core.role.value} term {core.term} leader {core.leader_id} "
                f"commit {core.commit_index} applied {node.app.applied_index} last {core.last_index} "
                f"written {node.disk.last_index} "
                f"voters {sorted(core.conf_state.voters)} learners {sorted(core.conf_state.learners)}"
            )
        return "\n".join(lines)

    def _final_stats(self) -> Counter[str]:
        stats = Counter(self.stats)
        stats["steps_run"] = self.step
        stats["committed"] = len(self.checker.history)
        stats["membership_changes"] = sum(e.type is EntryType.CONF_CHANGE for e in self.checker.history) - self.size
        stats["virtual_ms"] = self.now
        return stats


def _format_step(item: tuple) -> str:
    step, now, kind, detail = item
    if kind == "deliver":
        text = _format_delivery(*detail)
    elif kind == "written":
        text = _format_write(*detail)
    else:
        text = str(detail)
    return f"{step:>6} {now:>7}ms {kind:<11} {text}"


def _format_delivery(frm: int, to: int, msg: Message) -> str:
    """A delivered message; sender and receiver come from the event: a core forwarding a message reuses it."""
    parts = [f"{frm}->{to} {msg.type.name} term={msg.term}"]
    if msg.index or msg.log_term:
        parts.append(f"index={msg.index} log_term={msg.log_term}")
    if msg.entries:
        parts.append(f"entries={msg.entries[0].index}..{msg.entries[-1].index}")
    if msg.commit:
        parts.append(f"commit={msg.commit}")
    if msg.reject:
        parts.append(f"REJECT hint={msg.reject_hint}")
    if msg.context:
        parts.append(f"context={msg.context!r}")
    if msg.snapshot_meta is not None:
        parts.append(f"snapshot=({msg.snapshot_meta.index},{msg.snapshot_meta.term}) chunk={len(msg.chunk)}B")
    if msg.done:
        parts.append("done")
    return " ".join(parts)


def _format_write(node_id: int, batch: Batch, hard_state: HardState | None) -> str:
    parts = [f"node {node_id}"]
    if batch.snapshot is not None:
        parts.append(f"snapshot=({batch.snapshot.meta.index},{batch.snapshot.meta.term})")
    if batch.entries:
        parts.append(f"entries={batch.entries[0].index}..{batch.entries[-1].index}")
    if hard_state is not None:
        parts.append(f"term={hard_state.term} vote={hard_state.vote} commit={hard_state.commit}")
    return " ".join(parts)


def _describe_error(error: Exception) -> str:
    frames = traceback.format_exception(error)
    return "".join(frames[-6:]).rstrip()


def _history_digest(checker: SafetyChecker) -> str:
    digest = hashlib.sha256()
    for entry in checker.history:
        digest.update(b"%d/%d/%d/%d:" % (entry.index, entry.term, entry.type, len(entry.data)) + entry.data)
    return digest.hexdigest()
