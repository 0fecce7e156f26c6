"""Runs a `RaftCore` on asyncio: a clock, a disk, a network and a state machine around the pure core.

Inputs (ticks, peer messages, proposals, reads) step the core as they arrive, on the event loop. Their
Readies go into the persistence pipeline (`raft.pipeline`, whose rules say what must be written and what
may be sent or applied before); one flusher task takes a batch, persists it with a single write and fsync
(group commit) -- applying meanwhile the committed entries an earlier write holds -- then sends its messages,
then applies the rest of its committed entries, then answers reads. While a batch is being persisted the
next one fills up, so fsync cost is shared by everything that arrived meanwhile. A leader's batch that only
commits applies first and queues its messages behind the answers; a follower writes small batches on the
loop while its disk is fast (`_start_write`).

Entries carry a 16-byte tag (proposer Raft ID, proposal sequence) before the payload, so the node that
proposed an entry -- leader or follower, whose proposal the core forwarded -- wakes the right caller when
it applies the entry. The state machine sees only payloads.

Snapshots wrap the state machine's bytes together with the members' addresses, so a restarted node knows
whom to talk to before it replays anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from ..addresses import parse_host_port
from ..errors import ProposalDropped, Unavailable
from .core import RaftConfig, RaftCore
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    PersistedState,
    Ready,
    Role,
    Snapshot,
)
from .pipeline import Batch, Pipeline

log = logging.getLogger(__name__)

_TAG = struct.Struct(">QQ")


INLINE_WRITE_SECONDS = 0.002
"""A node writes its next small batch on the event loop while its last write took less than this (see
`RaftDriver._start_write`): a fast local disk's write and fdatasync take 0.1-0.3 ms."""

COMMIT_HOLD_SECONDS = 0.005
"""How long a COMMIT message waits for an APPEND to the same follower that would carry it instead (see
`RaftDriver._send`): a follower learns of a commit at most this much later than it could (unless it proposed
what was committed), and a client writing one entry after another saves a message to each follower per write.
More than the 1 ms granularity of uvloop's timers."""

INLINE_WRITE_BYTES = 256 << 10
"""... and the batch's entries hold at most this many bytes (a follower catching up writes larger ones)."""


class StateMachine(Protocol):
    def apply(self, index: int, payload: bytes) -> Any:
        """Apply one committed entry; the return value goes to the caller that proposed it (on this node)."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class Storage(Protocol):
    def load(self) -> PersistedState: ...

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...


class Sender(Protocol):
    def send(self, messages: list[Message], urgent: bool = True) -> None:
        """Queue `messages`; urgent ones are written at once, others once the event loop has run what is
        ready (answers to clients first). Either way in the order sent."""

    def add_peer(self, raft_id: int, host: str, port: int) -> None: ...

    def remove_peer(self, raft_id: int) -> None: ...


class Timeout(Unavailable):
    """The operation did not complete in time; a write may or may not have been applied."""


@dataclass
class DriverConfig:
    tick_interval: float = 0.1
    snapshot_interval: int = 10_000
    """Take a snapshot and drop old WAL segments every this many applied entries."""
    proposal_timeout: float = 10.0
    max_proposal_bytes: int = 4 << 20
    """Proposals larger than this are refused: every entry must fit a wire frame (see raft.wire)."""


def encode_address(host: str, port: int) -> bytes:
    return f"{host}:{port}".encode()


def decode_address(context: bytes) -> tuple[str, int] | None:
    return parse_host_port(context.decode()) if context else None


class RaftDriver:
    def __init__(
        self,
        raft_config: RaftConfig,
        storage: Storage,
        transport: Sender,
        state_machine: StateMachine,
        config: DriverConfig | None = None,
        rng: random.Random | None = None,
        on_role_change: Callable[[Role, int, int], None] | None = None,
        known_peers: dict[int, tuple[str, int]] | None = None,
    ) -> None:
        """`known_peers`: addresses to use until the log says otherwise -- a manager that just joined has an
        empty log, and must reach the leader to answer it (the join response lists the members, as SwarmKit's
        JoinResponse does)."""
        self.config = config or DriverConfig()
        self.id = raft_config.id
        self._storage = storage
        self._transport = transport
        self._state_machine = state_machine
        self._on_role_change = on_role_change
        self._peers: dict[int, tuple[str, int]] = {}

        persisted = storage.load()
        if persisted.snapshot is not None:
            self._restore_snapshot(persisted.snapshot)
        for raft_id, (host, port) in (known_peers or {}).items():
            if raft_id != self.id and raft_id not in self._peers:
                self._peers[raft_id] = (host, port)
                transport.add_peer(raft_id, host, port)
        self.core = RaftCore(raft_config, persisted, rng or random.Random())
        self._applied = self.core.applied_index

        self._pipeline = Pipeline(persisted.hard_state)
        self._storage_calls: deque[tuple[Callable[[Storage], Any], asyncio.Future[Any]]] = deque()
        self._carried_commit: HardState | None = None
        self._last_write_seconds = 0.0
        self._held_commits: dict[int, Message] = {}
        self._held_timer: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._proposal_seq = 0
        self._proposals: dict[int, asyncio.Future[Any]] = {}
        self._queued: list[tuple[bytes, int]] = []
        self._drain_scheduled = False
        self._conf_waiters: dict[bytes, asyncio.Future[None]] = {}
        self._reads: dict[bytes, asyncio.Future[None]] = {}
        self._read_waits: list[tuple[int, asyncio.Future[None]]] = []  # (index, future) until applied
        self._read_seq = 0
        self._applied_event = asyncio.Event()
        self._role = (self.core.role, self.core.term, self.core.leader_id)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        # Entries committed before a restart are re-emitted by the first input: give it one now.
        self._feed(self.core.tick())
        if self.core.conf_state.voters == {self.id}:
            self._feed(self.core.campaign())  # alone, there is no one to wait for: lead at once
        self._tasks = [
            asyncio.create_task(self._run_clock(), name=f"raft-{self.id}-clock"),
            asyncio.create_task(self._run_flusher(), name=f"raft-{self.id}-flusher"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    async def close(self) -> None:
        self._closed = True
        if self._held_timer is not None:
            self._held_timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail_all(ProposalDropped("this node is shutting down"))

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("raft node %x: %s stopped", self.id, task.get_name(), exc_info=task.exception())
            self._closed = True
            self._fail_all(ProposalDropped(f"the Raft node stopped: {task.exception()}"))

    # -- views -----------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    @property
    def leader_id(self) -> int:
        return self.core.leader_id

    @property
    def applied_index(self) -> int:
        return self._applied

    def peer_addresses(self) -> dict[int, tuple[str, int]]:
        return dict(self._peers)

    # -- inputs ----------------------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """Step a message from a peer (the transport calls this)."""
        if not self._closed:
            self._feed(self.core.step(message))

    async def propose(self, payload: bytes, timeout: float | None = None) -> Any:
        """Replicate `payload`; returns what the state machine's apply returned for it, once applied here."""
        if len(payload) > self.config.max_proposal_bytes:
            raise ProposalDropped(
                f"proposal of {len(payload)} bytes is over the {self.config.max_proposal_bytes}-byte limit"
            )
        self._check_open()
        timeout = timeout or self.config.proposal_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        await self._wait_for_leader(deadline)
        self._proposal_seq += 1
        seq = self._proposal_seq
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[seq] = future
        self._queued.append((_TAG.pack(self.id, seq) + payload, seq))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_proposals)
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
        return await self._wait(future, remaining, lambda: self._proposals.pop(seq, None))

    async def _wait_for_leader(self, deadline: float) -> None:
        """Right after a restart or during an election no leader is known; wait for one (as etcd's server does)
        rather than fail a request that could succeed a moment later."""
        while self.core.leader_id == NONE:
            if asyncio.get_running_loop().time() >= deadline:
                raise Timeout("no leader was elected in time; a majority of managers may be unreachable")
            await asyncio.sleep(self.config.tick_interval / 4)
            self._check_open()

    def _drain_proposals(self) -> None:
        """Everything proposed during one loop iteration goes to the core as one batch."""
        self._drain_scheduled = False
        queued, self._queued = self._queued, []
        if not queued or self._closed:
            return
        try:
            self._feed(self.core.propose_batch([data for data, _ in queued]))
        except ProposalDropped as exc:
            for _, seq in queued:
                future = self._proposals.pop(seq, None)
                if future is not None and not future.done():
                    future.set_exception(ProposalDropped(str(exc)))

    async def read_barrier(self, timeout: float | None = None) -> int:
        """Wait until this node's state machine reflects every write acknowledged before the call
        (ReadIndex); returns the applied index reads may then be served at."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.config.proposal_timeout)
        while True:
            await self._wait_for_leader(deadline)
            self._read_seq += 1
            request_id = _TAG.pack(self.id, self._read_seq)
            future: asyncio.Future[None] = loop.create_future()
            self._reads[request_id] = future
            self._feed(self.core.read_index(request_id))
            try:
                remaining = max(deadline - loop.time(), 0.001)
                await self._wait(future, remaining, lambda rid=request_id: self._reads.pop(rid, None))
                return self._applied
            except ProposalDropped:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(self.config.tick_interval / 4)  # leadership moved: ask the new leader

    async def change_membership(self, change: ConfChange, timeout: float | None = None) -> None:
        """Propose a single-server membership change and wait until it is applied here."""
        self._check_open()
        key = change.encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_waiters[key] = future
        try:
            self._feed(self.core.propose_conf_change(change))
        except ProposalDropped:
            self._conf_waiters.pop(key, None)
            raise
        await self._wait(future, timeout, lambda: self._conf_waiters.pop(key, None))

    async def add_learner(self, raft_id: int, host: str, port: int, timeout: float | None = None) -> None:
        await self.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, raft_id, encode_address(host, port)), timeout)

    async def add_voter(self, raft_id: int, host: str, port: int, timeout: float | None = None) -> None:
        """Add a manager the safe way: as a learner first, promoted to voter only once its log has caught up
        with the leader's commit index, so a slow newcomer never counts toward a quorum it cannot serve."""
        timeout = timeout or self.config.proposal_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        if raft_id not in self.core.conf_state.members():
            await self.add_learner(raft_id, host, port, timeout)
        while True:
            match = self.core.progress().get(raft_id, (0,))[0]
            if self.is_leader and match >= self.core.commit_index:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise Timeout(f"the new manager {raft_id:x} did not catch up in time; it stays a non-voting learner")
            await asyncio.sleep(self.config.tick_interval / 4)
        await self.promote(raft_id, max(deadline - asyncio.get_running_loop().time(), 1.0))

    async def promote(self, raft_id: int, timeout: float | None = None) -> None:
        host, port = self._peers[raft_id]
        await self.change_membership(ConfChange(ConfChangeType.ADD_VOTER, raft_id, encode_address(host, port)), timeout)

    async def remove(self, raft_id: int, timeout: float | None = None) -> None:
        await self.change_membership(ConfChange(ConfChangeType.REMOVE, raft_id), timeout)

    async def transfer_leadership(self, target: int, timeout: float | None = None) -> None:
        """Hand leadership to `target` and wait until this node knows someone else leads."""
        self._check_open()
        self._feed(self.core.transfer_leadership(target))
        deadline = asyncio.get_running_loop().time() + (timeout or self.config.proposal_timeout)
        while self.core.leader_id in (self.id, NONE):
            if asyncio.get_running_loop().time() > deadline:
                raise Timeout(f"leadership did not move to node {target:x} in time")
            await asyncio.sleep(self.config.tick_interval / 4)

    def _check_open(self) -> None:
        if self._closed:
            raise ProposalDropped("this Raft node is stopped")

    async def _wait(self, future: asyncio.Future[Any], timeout: float | None, forget: Callable[[], object]) -> Any:
        try:
            async with asyncio.timeout(timeout or self.config.proposal_timeout):
                return await future
        except TimeoutError:
            raise Timeout("the operation did not complete in time; a write may or may not have been applied") from None
        finally:
            forget()

    # -- the loop --------------------------------------------------------------------------------------

    async def _run_clock(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            self._feed(self.core.tick())

    def _feed(self, ready: Ready) -> None:
        if not ready.is_empty():
            self._pipeline.feed(ready)
            self._wakeup.set()
        self._note_role()

    def _note_role(self) -> None:
        role = (self.core.role, self.core.term, self.core.leader_id)
        if role == self._role:
            return
        previous_leader = self._role[2]
        self._role = role
        if role[0] is Role.LEADER:
            # One line per term won: the chaos suite checks from these that no term had two leaders.
            log.info("raft %x: became leader in term %d", self.id, role[1])
        if role[2] != previous_leader and self._proposals:
            # Entries in flight under the old leader may be lost or may still commit: callers must not
            # wait forever; they get an error saying the outcome is unknown.
            error = ProposalDropped("leadership changed while the write was in flight; it may or may not be applied")
            for future in self._proposals.values():
                if not future.done():
                    future.set_exception(error)
        if role[2] != previous_leader and self._reads:
            # A read waits for the leader's confirmation; one asked of a leader that is gone would wait for its
            # whole timeout. Reads change nothing, so they are simply asked again of the new leader.
            moved = ProposalDropped("leadership changed while the read was waiting; asking the new leader")
            for future in self._reads.values():
                if not future.done():
                    future.set_exception(moved)
        if self._on_role_change is not None:
            self._on_role_change(*role)

    async def storage_call(self, call: Callable[[Storage], Any]) -> Any:
        """Run `call(storage)` (e.g. re-wrap the data key) in the flusher's sequence: never during a save."""
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._storage_calls.append((call, future))
        self._wakeup.set()
        return await future

    async def _run_flusher(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._storage_calls:
                call, future = self._storage_calls.popleft()
                try:
                    result = await asyncio.to_thread(call, self._storage)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            while (batch := self._pipeline.take_batch()) is not None:
                await self._flush(batch)

    async def _flush(self, batch: Batch) -> None:
        pipeline = self._pipeline
        send_early = pipeline.may_send_before_persisting(batch) and bool(batch.messages)
        early = pipeline.appliable_before_persisting(batch)
        to_apply = early  # what of `early` is still to apply
        if send_early and early and not batch.entries and not any(e.type is EntryType.CONF_CHANGE for e in early):
            # A leader's batch that only commits: applying answers proposers, and their answers go out first;
            # the messages (the new commit index) once the loop has run them, still in order with whatever this
            # node sends next. A membership change is sent first, so a removed member hears of its removal.
            self._apply_entries(early)
            self._send(batch.messages, urgent=False)
            to_apply = []
        elif send_early:
            self._send(batch.messages)
        if pipeline.must_sync(batch):
            hard_state = pipeline.start_write(batch)
            write = self._start_write(hard_state, batch)
            try:
                if not write.done():
                    self._apply_entries(to_apply)  # while the disk writes
                    to_apply = []
            finally:
                try:
                    await write
                finally:
                    pipeline.written(hard_state)
        if any(entry.type is EntryType.CONF_CHANGE for entry in to_apply):
            self._apply_entries(to_apply)  # peers added or removed before sending, as the log says
            to_apply = []
        if batch.messages and not send_early:
            self._send(batch.messages)  # acknowledgements before applying: the leader waits for them
        self._apply_entries(to_apply)
        if batch.snapshot is not None:
            self._restore_snapshot(batch.snapshot)
            self._applied = batch.snapshot.meta.index
        self._apply_entries(batch.committed[len(early) :])
        for read in batch.read_states:
            future = self._reads.pop(read.request_id, None)
            if future is not None and not future.done():
                self._read_waits.append((read.index, future))
        for request_id in batch.dropped_reads:
            future = self._reads.pop(request_id, None)
            if future is not None and not future.done():
                future.set_exception(ProposalDropped("no leader could confirm this read; retry"))
        self._release_reads()
        await self._maybe_snapshot()

    def _start_write(self, hard_state: HardState | None, batch: Batch) -> asyncio.Future[None]:
        """Start persisting `batch`: in a thread, so the loop goes on (a busy leader keeps taking proposals and
        answering while its disk writes), or right here, while the disk is fast, for a small batch of a follower
        or a leader's batch of at most one entry. Handing a write to a thread and back costs more than a fast
        fsync (`bench raft`: 0.1-0.2 ms of CPU per write). A follower's write is what its leader waits for,
        and nothing it could do meanwhile would speed that up; a leader's lone entry is written while its
        followers' round trip runs anyway, and under load its batches grow past one entry. A write slower than
        `INLINE_WRITE_SECONDS` sends the next ones to the thread, so a slow disk never holds the loop for
        long, and a fast one brings them back."""
        loop = asyncio.get_running_loop()
        inline = (
            self._last_write_seconds < INLINE_WRITE_SECONDS
            and batch.snapshot is None
            and (len(batch.entries) <= 1 or self.core.role is not Role.LEADER)
            and sum(len(entry.data) for entry in batch.entries) <= INLINE_WRITE_BYTES
        )
        started = time.monotonic()
        if not inline:
            write = loop.run_in_executor(None, self._storage.save, hard_state, batch.entries, batch.snapshot)
            write.add_done_callback(lambda _: self._note_write(started))
            return write
        done: asyncio.Future[None] = loop.create_future()
        try:
            self._storage.save(hard_state, batch.entries, batch.snapshot)
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        self._note_write(started)
        return done

    def _note_write(self, started: float) -> None:
        self._last_write_seconds = time.monotonic() - started

    def _send(self, messages: list[Message], urgent: bool = True) -> None:
        """Send, holding COMMIT messages back for `COMMIT_HOLD_SECONDS`: an APPEND to the same follower sent
        meanwhile carries the commit index too (a client writing one entry after another sends its next within
        that time), and the COMMIT is not sent at all. A COMMIT a follower's caller waits for (`COMMIT_AWAITED`)
        goes at once."""
        held = self._held_commits
        outgoing = []
        for message in messages:
            if message.type is MessageType.COMMIT and not message.context:
                held[message.to] = message
                continue
            if message.type is MessageType.APPEND or message.type is MessageType.COMMIT:
                held.pop(message.to, None)  # it carries the commit index a held COMMIT would
            outgoing.append(message)
        if held and self._held_timer is None:
            self._held_timer = asyncio.get_running_loop().call_later(COMMIT_HOLD_SECONDS, self._send_held)
        if outgoing:
            self._transport.send(outgoing, urgent)

    def _send_held(self) -> None:
        self._held_timer = None
        held = [message for message in self._held_commits.values() if message.term == self.core.term]
        self._held_commits.clear()
        if held and self.core.role is Role.LEADER and not self._closed:
            self._transport.send(held)

    def _apply_entries(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._apply(entry)
        if entries:
            self._applied = entries[-1].index

    def _release_reads(self) -> None:
        waiting = []
        for index, future in self._read_waits:
            if index <= self._applied:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((index, future))
        self._read_waits = waiting

    def _apply(self, entry: Entry) -> None:
        if entry.type is EntryType.CONF_CHANGE:
            self._apply_conf_change(ConfChange.decode(entry.data), entry.data)
            return
        if not entry.data:
            return  # a new leader's empty entry
        proposer, seq = _TAG.unpack_from(entry.data)
        result = self._state_machine.apply(entry.index, entry.data[_TAG.size :])
        if proposer == self.id:
            future = self._proposals.pop(seq, None)
            if future is not None and not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _apply_conf_change(self, change: ConfChange, key: bytes) -> None:
        if change.type is ConfChangeType.REMOVE:
            self._peers.pop(change.node_id, None)
            if change.node_id != self.id:
                self._transport.remove_peer(change.node_id)
        else:
            address = decode_address(change.context)
            if address is not None:
                self._peers[change.node_id] = address
                if change.node_id != self.id:
                    self._transport.add_peer(change.node_id, *address)
        waiter = self._conf_waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- snapshots -------------------------------------------------------------------------------------

    async def _maybe_snapshot(self) -> None:
        meta = self.core.snapshot_meta
        taken_at = meta.index if meta else 0
        if self._applied - taken_at < self.config.snapshot_interval:
            return
        data = msgpack.packb(
            [{str(k): [h, p] for k, (h, p) in self._peers.items()}, self._state_machine.snapshot()], use_bin_type=True
        )
        snapshot = self.core.compact(self._applied, data)
        await asyncio.to_thread(self._storage.save_snapshot, snapshot)

    def _restore_snapshot(self, snapshot: Snapshot) -> None:
        peers, state = msgpack.unpackb(snapshot.data, raw=False)
        for raft_id in list(self._peers):
            if raft_id != self.id:
                self._transport.remove_peer(raft_id)
        self._peers = {int(k): (h, p) for k, (h, p) in peers.items()}
        for raft_id, (host, port) in self._peers.items():
            if raft_id != self.id:
                self._transport.add_peer(raft_id, host, port)
        self._state_machine.restore(state)

    def _fail_all(self, error: Exception) -> None:
        for futures in (self._proposals, self._conf_waiters, self._reads):
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
            futures.clear()
        for _, future in self._read_waits:
            if not future.done():
                future.set_exception(error)
        self._read_waits = []
