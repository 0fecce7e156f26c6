"""The in-memory Raft log of one core: entries after the last snapshot, commit and apply cursors.

The log remembers which suffix it has not yet handed to the driver for persistence (`unstable_from`), so
each Ready carries exactly the entries that still need writing. It never touches disk itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from .messages import Entry, SnapshotMeta


class LogInvariantBroken(AssertionError):
    """The core asked the log to do something Raft forbids (truncate a committed entry, commit past the end).

    This is a bug in the core, never a consequence of what a peer sent: peers' input is validated first.
    """


class RaftLog:
    def __init__(self, snapshot_meta: SnapshotMeta | None, entries: Iterable[Entry], commit: int) -> None:
        self.snapshot_index = snapshot_meta.index if snapshot_meta else 0
        self.snapshot_term = snapshot_meta.term if snapshot_meta else 0
        self._entries: list[Entry] = list(entries)
        for offset, entry in enumerate(self._entries):
            if entry.index != self.snapshot_index + 1 + offset:
                raise ValueError(f"persisted log is not contiguous at index {entry.index}")
        self.committed = min(max(commit, self.snapshot_index), self.last_index())
        self.applied = self.snapshot_index
        self.unstable_from = self.last_index() + 1

    # -- reading ---------------------------------------------------------------------------------------

    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when it was compacted away or does not exist yet."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return None
        return self._entries[index - self.snapshot_index - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). With `max_bytes`, stop before exceeding it, but always return at least one entry."""
        base = self.snapshot_index + 1
        if lo < base:
            raise LogInvariantBroken(f"slice from {lo} reaches into the snapshot at {self.snapshot_index}")
        selected = self._entries[lo - base : hi - base]
        if max_bytes is None or not selected:
            return selected
        size = 0
        for count, entry in enumerate(selected):
            size += len(entry.data) + 16
            if size > max_bytes and count > 0:
                return selected[:count]
        return selected

    def entries_after_snapshot(self) -> list[Entry]:
        return list(self._entries)

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        return last_term > self.last_term() or (last_term == self.last_term() and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (etcd's fast backtracking hint)."""
        while index > self.snapshot_index:
            entry_term = self.term(index)
            if entry_term is None or entry_term <= term:
                return index
            index -= 1
        return index

    # -- changing --------------------------------------------------------------------------------------

    def maybe_append(self, prev_index: int, prev_term: int, leader_commit: int, entries: list[Entry]) -> int | None:
        """§5.3 AppendEntries receiver: None if the log does not contain (prev_index, prev_term); otherwise
        append what is new, truncating a conflicting suffix, advance commit, and return the last index the
        leader's message proves to match."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise LogInvariantBroken(f"entry {conflict} conflicts with committed entry (commit {self.committed})")
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: list[Entry]) -> int:
        """The index of the first entry that is new or differs in term from ours; 0 when all are present."""
        for entry in entries:
            if entry.index <= self.snapshot_index:
                continue  # compacted entries are committed and, by log matching, identical
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise LogInvariantBroken(f"append at {first} would overwrite committed entries (commit {self.committed})")
        if first > self.last_index() + 1:
            raise LogInvariantBroken(f"append at {first} leaves a gap after {self.last_index()}")
        del self._entries[first - self.snapshot_index - 1 :]
        self._entries.extend(entries)
        self.unstable_from = min(self.unstable_from, first)

    def commit_to(self, index: int) -> None:
        if index <= self.committed:
            return
        if index > self.last_index():
            raise LogInvariantBroken(f"commit {index} is past the last index {self.last_index()}")
        self.committed = index

    def take_unstable(self) -> list[Entry]:
        """The entries not yet handed out for persistence; from now on they count as handed out."""
        if self.unstable_from > self.last_index():
            return []
        entries = self._entries[self.unstable_from - self.snapshot_index - 1 :]
        self.unstable_from = self.last_index() + 1
        return entries

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying; from now on they count as applied."""
        if self.applied >= self.committed:
            return []
        entries = self.slice(self.applied + 1, self.committed + 1)
        self.applied = self.committed
        return entries

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to `index`, which a snapshot now covers."""
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        self._entries = []
        self.snapshot_index = meta.index
        self.snapshot_term = meta.term
        self.committed = meta.index
        self.applied = meta.index
        self.unstable_from = meta.index + 1
