"""The leader's view of each follower: how far its log matches, and how replication to it is paced.

A follower is in one of three states (etcd's tracker.StateType):
- PROBE: we do not know where its log diverges; send one APPEND per heartbeat until one is accepted.
- REPLICATE: its log matches up to `match`; stream entries optimistically, bounded by `Inflights`.
- SNAPSHOT: the entries it needs were compacted; send the snapshot in chunks, one unacknowledged at a time.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """APPEND messages sent but not yet acknowledged, bounded by count and by bytes (flow control)."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._sent: deque[tuple[int, int]] = deque()  # (last index in the message, payload bytes)
        self._bytes = 0

    def add(self, last_index: int, size: int) -> None:
        self._sent.append((last_index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        while self._sent and self._sent[0][0] <= index:
            self._bytes -= self._sent.popleft()[1]

    def free_first_one(self) -> None:
        if self._sent:
            self._bytes -= self._sent.popleft()[1]

    def full(self) -> bool:
        return len(self._sent) >= self.max_count or self._bytes >= self.max_bytes

    def reset(self) -> None:
        self._sent.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._sent)


class Progress:
    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_offset = 0
        """Bytes of the snapshot the follower has acknowledged: the next chunk starts here."""
        self.snapshot_chunk_in_flight = False
        self.snapshot_quiet_heartbeats = 0
        """Heartbeats since the chunk in flight was sent with no answer; at a limit it is sent again."""
        self.recent_active = True
        self.inflights = inflights
        self.is_learner = is_learner

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index
        self.snapshot_offset = 0
        self.snapshot_chunk_in_flight = False
        self.snapshot_quiet_heartbeats = 0

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged `index`. False if that is old news (a duplicate or reordered ack)."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.probe_sent = False
        return True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an APPEND whose previous index was `rejected`. False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int | None, size: int) -> None:
        """Record an APPEND just sent, with `last_index` None when it carried no entries."""
        if self.state is ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
