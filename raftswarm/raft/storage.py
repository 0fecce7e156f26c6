"""Raft storage on disk: an encrypted write-ahead log plus snapshots, under `<state-dir>/raft/`.

Layout of the directory:

    keys                               the data encryption keys (DEKs), wrapped by the KEK (`keys.py`)
    wal/<seq>.wal                      WAL segments, sequence numbers in hex, contiguous (`wal.py`)
    snap/<index>-<term>-<id>.snap      snapshots, at most two (the one in force and the one before it)

What the WAL says. Each segment starts with a STATE record (hard state, snapshot in force, last log index at
that moment), so older segments can be deleted without losing what they said; then one SAVE record per
save() or save_snapshot() call (snapshot marker, entries, hard state -- one record, so one call lands whole
or not at all); and, when the segment rolls over, a SEAL record naming the next segment, so a lost tail of an
older segment cannot go unnoticed. Replaying the records in order reproduces the log, truncations included.

Snapshots. A snapshot file is written to a temporary name, fsynced and renamed; only then does a SAVE record
name it (index, term and a random ID), and from that record on it is the snapshot in force. A file no record
names (a crash between the two steps) is never loaded and is deleted at the next compaction. The data is
encrypted in 1 MiB chunks, each its own record whose associated data carries the snapshot's ID (through the
header), its byte offset and its kind (meta, chunk, end); the end record carries the chunk count and length,
so a truncated or reordered snapshot fails. A snapshot from the leader (in save()) follows the Raft paper
(section 7): if the log holds the snapshot's last entry (same index and term) the entries after it are kept,
otherwise the whole log is discarded.

Encryption. Every record is AES-256-GCM with a random 96-bit nonce from os.urandom, under a per-file key
HKDF(DEK, random 16-byte salt of the file): a counter would need state that survives torn-tail repair
(repairing rewinds the write offset, and a counter derived from it would repeat a nonce), while random nonces
under a per-file key stay far below GCM's 2^32-messages-per-key bound (a 64 MiB segment holds at most ~1.5M
records). Only magic numbers, sequence numbers, key IDs, salts, record lengths (with their CRCs) and file
names (a snapshot's index and term) are plaintext.

DEK rotation. rotate_dek() puts a new DEK in the key file and starts a new segment under it; every later
record and snapshot uses it. The retired DEK stays in the key file, wrapped by the same KEK, for as long as a
WAL segment or snapshot file still refers to it, and is dropped by the compaction that deletes the last such
file (at the latest by the second snapshot taken past the rotation point; SwarmKit's pending DEK plays the
same role). Re-encrypting everything instead would rewrite every segment and the snapshots (64 MiB and more) under
a multi-file crash protocol of its own, to reach the state that compaction reaches anyway.

Torn tail versus corruption: see `wal.py`; only the last record of the newest segment may be cut off.

Not thread-safe: one driver calls it (for example through a single `asyncio.to_thread` worker at a time).
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from raftswarm.errors import RaftswarmError, StorageCorrupted

from .keys import Keyring, check_kek
from .messages import ConfState, Entry, EntryType, HardState, PersistedState, Snapshot, SnapshotMeta
from .wal import (
    FRAME_HEADER,
    SEGMENT_PURPOSE,
    TEMP_SUFFIX,
    SegmentHeader,
    SegmentScan,
    SegmentWriter,
    corrupted,
    frame_body_length,
    fsync_directory,
    open_frame,
    scan_segment,
    seal_frame,
    segment_name,
    segment_seq,
    write_all,
)

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
"""About etcd's (64 MB): rollover (a few extra fsyncs) is rare, yet compaction can free space in useful steps."""

SNAPSHOT_CHUNK_SIZE = 1024 * 1024
"""Plaintext per snapshot record: writing never holds more than one chunk of ciphertext beside the data."""

KEYS_FILE = "keys"
WAL_DIR = "wal"
SNAP_DIR = "snap"
SNAPSHOT_SUFFIX = ".snap"
SALT_SIZE = 16
SNAPSHOT_ID_SIZE = 16

SNAPSHOT_MAGIC = b"RSSNAP\x00\x01"
SNAPSHOT_PURPOSE = b"raftswarm/raft: snapshot v1"
_SNAPSHOT_HEADER = struct.Struct(">8sI16s16s")  # magic, DEK ID, salt, snapshot ID

# WAL record kinds (first field of each record's msgpack array).
_STATE = 0  # [STATE, hard state, snapshot marker | None, last log index]
_SAVE = 1  # [SAVE, hard state | None, snapshot marker | None, keep entries after the snapshot, entries]
_SEAL = 2  # [SEAL, next segment's sequence number]

# Snapshot record kinds (last byte of each record's associated data).
_META = 0  # msgpack [index, term, voters, learners, data length]
_CHUNK = 1  # raw data
_END = 2  # msgpack [chunk count, data length]


@dataclass(frozen=True, slots=True)
class _SnapshotMarker:
    """How the WAL names a snapshot file."""

    index: int
    term: int
    id: bytes

    def file_name(self) -> str:
        return f"{self.index:016x}-{self.term:016x}-{self.id.hex()}{SNAPSHOT_SUFFIX}"


@dataclass(slots=True)
class _Segment:
    seq: int
    key_id: int
    start_last_index: int
    """The last log index when the segment began: every entry still live in the segments before it is <= this."""


def _snapshot_index_of(name: str) -> int | None:
    parts = name.removesuffix(SNAPSHOT_SUFFIX).split("-")
    if not name.endswith(SNAPSHOT_SUFFIX) or len(parts) != 3:
        return None
    try:
        return int(parts[0], 16)
    except ValueError:
        return None


def _pack_hard_state(hard_state: HardState | None) -> list[int] | None:
    return None if hard_state is None else [hard_state.term, hard_state.vote, hard_state.commit]


def _pack_marker(marker: _SnapshotMarker | None) -> list | None:
    return None if marker is None else [marker.index, marker.term, marker.id]


def _pack_save(
    hard_state: HardState | None, marker: _SnapshotMarker | None, keep_after: bool | None, entries: list[Entry]
) -> bytes:
    packed_entries = [[e.index, e.term, int(e.type), e.data] for e in entries]
    return msgpack.packb([_SAVE, _pack_hard_state(hard_state), _pack_marker(marker), keep_after, packed_entries])


def _decode_record(plaintext: bytes, path: Path, offset: int) -> tuple:
    """A WAL record as (kind, *fields) with domain types; StorageCorrupted if it does not decode."""
    try:
        record = msgpack.unpackb(plaintext)
        kind = record[0]
        if kind == _STATE:
            _, hard_state, marker, last_index = record
            return _STATE, HardState(*hard_state), _decode_marker(marker), int(last_index)
        if kind == _SAVE:
            _, hard_state, marker, keep_after, entries = record
            return (
                _SAVE,
                None if hard_state is None else HardState(*hard_state),
                _decode_marker(marker),
                bool(keep_after),
                [Entry(index, term, EntryType(type_), bytes(data)) for index, term, type_, data in entries],
            )
        if kind == _SEAL:
            _, next_seq = record
            return _SEAL, int(next_seq)
        raise ValueError(f"unknown record kind {kind!r}")
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise corrupted(path, offset, f"record authenticates but does not decode ({exc})") from None


def _decode_marker(marker: list | None) -> _SnapshotMarker | None:
    if marker is None:
        return None
    index, term, snapshot_id = marker
    return _SnapshotMarker(int(index), int(term), bytes(snapshot_id))


class _Replay:
    """The persisted state, rebuilt by applying WAL records in order.

    Segments wholly covered by a snapshot are deleted, so replay may start at a segment whose STATE record
    says the log already reached some index: entries up to there are then unknown (`first` is past
    `snapshot_index + 1`) until a snapshot marker covers them. If some are still unknown at the end, a segment
    that was needed is missing."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: _SnapshotMarker | None = None
        self.first = 1
        self.entries: list[Entry] = []
        self._started = False

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    @property
    def last_index(self) -> int:
        return self.first + len(self.entries) - 1

    def start_segment(
        self, hard_state: HardState, marker: _SnapshotMarker | None, last_index: int, path: Path, offset: int
    ) -> None:
        if not self._started:
            self._started = True
            self.hard_state, self.snapshot, self.first = hard_state, marker, last_index + 1
            return
        if (hard_state, marker, last_index) != (self.hard_state, self.snapshot, self.last_index):
            raise corrupted(path, offset, "the segment does not continue the state the segment before it left")

    def apply_save(
        self,
        hard_state: HardState | None,
        marker: _SnapshotMarker | None,
        keep_after: bool,
        entries: list[Entry],
        path: Path,
        offset: int,
    ) -> None:
        if marker is not None:
            if marker.index < self.snapshot_index or (keep_after and marker.index > self.last_index):
                raise corrupted(path, offset, f"snapshot marker at index {marker.index} does not fit the log")
            if keep_after:
                drop = marker.index + 1 - self.first
                if drop > 0:
                    del self.entries[:drop]
                    self.first = marker.index + 1
            else:
                self.entries, self.first = [], marker.index + 1
            self.snapshot = marker
        if entries:
            start = entries[0].index
            if start <= self.snapshot_index or start > self.last_index + 1:
                raise corrupted(path, offset, f"entries from index {start} do not fit the log")
            if start < self.first:
                self.entries, self.first = [], start
            else:
                del self.entries[start - self.first :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state


@dataclass(slots=True)
class _WalContents:
    replay: _Replay
    segments: list[_Segment]
    newest: SegmentScan
    newest_sealed: bool


def _segment_cipher(keyring: Keyring, path: Path, header: SegmentHeader) -> AESGCM:
    cipher = keyring.file_cipher(header.key_id, header.salt, SEGMENT_PURPOSE)
    if cipher is None:
        raise corrupted(path, 0, f"the segment is encrypted under data key {header.key_id}, which the key file lacks")
    return cipher


def _read_wal(wal_dir: Path, keyring: Keyring, *, tail_may_be_torn: bool) -> _WalContents:
    """Read and authenticate every segment, replaying their records."""
    seqs = sorted(seq for name in os.listdir(wal_dir) if (seq := segment_seq(name)) is not None)
    if not seqs:
        raise StorageCorrupted(f"{wal_dir}: there are no WAL segments; the Raft log is gone")
    for before, after in itertools.pairwise(seqs):
        if after != before + 1:
            raise StorageCorrupted(f"{wal_dir}: WAL segment {segment_name(before + 1)} is missing")
    replay = _Replay()
    segments: list[_Segment] = []
    sealed = False
    for seq in seqs:
        path = wal_dir / segment_name(seq)
        newest = seq == seqs[-1]
        cipher_for = functools.partial(_segment_cipher, keyring, path)
        scan = scan_segment(path, path.read_bytes(), cipher_for, newest=newest and tail_may_be_torn)
        if scan.header.seq != seq:
            raise corrupted(path, 0, f"the header says this is segment {scan.header.seq}")
        if not scan.records:
            raise corrupted(path, SegmentHeader.SIZE, "the segment has no records")
        sealed = False
        for position, (offset, plaintext) in enumerate(scan.records):
            record = _decode_record(plaintext, path, offset)
            if sealed:
                raise corrupted(path, offset, "a record follows the segment's seal")
            if (position == 0) != (record[0] == _STATE):
                raise corrupted(path, offset, "a segment must begin with its one state record")
            if record[0] == _STATE:
                replay.start_segment(*record[1:], path, offset)
                segments.append(_Segment(seq, scan.header.key_id, record[3]))
            elif record[0] == _SAVE:
                replay.apply_save(*record[1:], path, offset)
            elif record[1] != seq + 1:
                raise corrupted(path, offset, f"the seal names segment {record[1]} as the next one")
            else:
                sealed = True
        if not newest and not sealed:
            raise corrupted(path, scan.end, "the segment ends before its seal record: its tail is missing")
    if replay.first > replay.snapshot_index + 1:
        raise StorageCorrupted(
            f"{wal_dir}: entries {replay.snapshot_index + 1}..{replay.first - 1} are neither in the snapshot "
            "nor in any WAL segment: an older segment is missing"
        )
    return _WalContents(replay, segments, scan, sealed)


def _write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data`: temp file, fsync, rename, fsync directory."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data, 0)
        os.fsync(fd)
        os.rename(temp, path)
        fsync_directory(path.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def try_lock_directory(directory: Path) -> int | None:
    """An exclusive flock on `directory`, held until the returned descriptor is closed; None if another
    holder has it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_directory(directory: Path) -> int:
    fd = try_lock_directory(directory)
    if fd is None:
        raise RaftswarmError(
            f"{directory} is already open (another raftswarm-node on this state directory, or an unclosed "
            "RaftStorage); stop that one first"
        )
    return fd


class RaftStorage:
    """The durable state of one Raft node: hard state, log entries and snapshots, encrypted at rest.

    Sans policy: the driver decides when to save, snapshot, rotate keys or rewrap; this class only makes each
    of those durable. Open one per directory at a time (an flock enforces it); close it when done."""

    def __init__(
        self,
        directory: Path,
        dir_fd: int,
        kek: bytes,
        keyring: Keyring,
        segment_size: int,
        wal: _WalContents,
    ) -> None:
        self._directory = directory
        self._wal_dir = directory / WAL_DIR
        self._snap_dir = directory / SNAP_DIR
        self._dir_fd = dir_fd
        self._kek = kek
        self._keyring = keyring
        self._segment_size = segment_size
        self._failed: BaseException | None = None
        replay = wal.replay
        self._hard_state = replay.hard_state
        self._snapshot = replay.snapshot
        self._first = replay.first
        self._terms = [entry.term for entry in replay.entries]
        self._unloaded: _Replay | None = replay
        """What open() read, kept for the first load() until anything changes."""
        self._segments = wal.segments

        newest, scan = wal.segments[-1], wal.newest
        path = self._wal_dir / segment_name(newest.seq)
        if scan.torn is not None:
            logger.warning(
                "%s: cut off a torn write at byte offset %d (%s); it held a record that was never acknowledged",
                path,
                scan.end,
                scan.torn,
            )
        cipher = _segment_cipher(keyring, path, scan.header)
        self._writer = SegmentWriter.reopen(path, scan.header, cipher, scan.end)
        try:
            if wal.newest_sealed:
                # A crash came between sealing the segment and creating the next one.
                self._writer.close()
                self._start_segment(newest.seq + 1)
            elif newest.key_id != keyring.current:
                # A crash came between rotate_dek() writing the key file and starting a segment under the new DEK.
                self._roll()
        except BaseException:
            self._writer.close()
            raise

    # -- opening -----------------------------------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether `directory` holds Raft storage (create() moves it into place whole, key file included)."""
        return (Path(directory) / KEYS_FILE).is_file()

    @classmethod
    def create(cls, directory: Path, kek: bytes, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> RaftStorage:
        """New, empty storage with a fresh DEK wrapped by `kek`.

        Everything is built in a sibling staging directory that is renamed into place, so a crash leaves either
        no storage or a complete one. `directory` must not exist or be empty."""
        check_kek(kek)
        _check_segment_size(segment_size)
        directory = Path(directory)
        if cls.exists(directory):
            raise RaftswarmError(f"{directory} already holds Raft storage; open it instead of creating it")
        if directory.exists() and any(directory.iterdir()):
            raise RaftswarmError(f"{directory} is not empty; refusing to create Raft storage over its contents")
        staging = directory.with_name(directory.name + ".creating")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700, parents=True)
        (staging / WAL_DIR).mkdir(mode=0o700)
        (staging / SNAP_DIR).mkdir(mode=0o700)
        keyring = Keyring.generate()
        header = SegmentHeader(1, keyring.current, os.urandom(SALT_SIZE))
        state = msgpack.packb([_STATE, _pack_hard_state(HardState()), None, 0])
        SegmentWriter.create(staging / WAL_DIR, header, _segment_cipher(keyring, staging, header), state).close()
        fsync_directory(staging / SNAP_DIR)
        _write_file_atomically(staging / KEYS_FILE, keyring.wrap(kek))
        os.rename(staging, directory)
        fsync_directory(directory.parent)
        return cls.open(directory, kek, segment_size=segment_size)

    @classmethod
    def open(cls, directory: Path, kek: bytes, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> RaftStorage:
        """Existing storage: authenticates every WAL record and cuts off a torn tail.

        Raises WrongKey if `kek` does not unwrap the DEKs, StorageCorrupted if anything but a torn tail fails."""
        check_kek(kek)
        _check_segment_size(segment_size)
        directory = Path(directory)
        if not cls.exists(directory):
            raise RaftswarmError(f"{directory} holds no Raft storage (no {KEYS_FILE} file); create it first")
        dir_fd = _lock_directory(directory)
        try:
            keys_path = directory / KEYS_FILE
            keyring = Keyring.unwrap(keys_path.read_bytes(), kek, str(keys_path))
            for folder in (directory, directory / WAL_DIR, directory / SNAP_DIR):
                for leftover in folder.glob(f"*{TEMP_SUFFIX}"):
                    leftover.unlink()
            wal = _read_wal(directory / WAL_DIR, keyring, tail_may_be_torn=True)
            if wal.replay.snapshot is not None:
                snapshot_path = directory / SNAP_DIR / wal.replay.snapshot.file_name()
                if not snapshot_path.is_file():
                    raise StorageCorrupted(f"{snapshot_path}: the snapshot the WAL names is missing")
            return cls(directory, dir_fd, bytes(kek), keyring, segment_size, wal)
        except BaseException:
            os.close(dir_fd)
            raise

    def close(self) -> None:
        if self._dir_fd < 0:
            return
        self._writer.close()
        os.close(self._dir_fd)
        self._dir_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------------------

    def load(self) -> PersistedState:
        """The hard state, the snapshot in force (or None) and the contiguous entries after it.

        The first call after open() returns what open() already read; later calls read the files again.
        Raises StorageCorrupted if the snapshot fails authentication."""
        self._check_usable()
        replay, self._unloaded = self._unloaded, None
        if replay is None:
            replay = _read_wal(self._wal_dir, self._keyring, tail_may_be_torn=False).replay
        snapshot = None
        if replay.snapshot is not None:
            snapshot = _read_snapshot(self._snap_dir / replay.snapshot.file_name(), self._keyring, replay.snapshot)
        return PersistedState(replay.hard_state, snapshot, replay.entries)

    # -- writing -----------------------------------------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        """Persist one Ready's worth, in its order (snapshot, entries, hard state), as one group commit.

        One record, one write, one fdatasync (plus the snapshot file's own, if there is a snapshot; plus a
        rollover's, when the segment is full). `entries[0].index` at or below the last index truncates the log
        there. A snapshot keeps the entries after it if the log holds its last entry, else replaces the log."""
        self._check_usable()
        keep_after = None
        first, last = self._first, self._last_index()
        if snapshot is not None:
            meta = snapshot.meta
            if meta.index < self._snapshot_index():
                raise ValueError(f"snapshot at {meta.index} is older than the one in force at {self._snapshot_index()}")
            keep_after = self._term_at(meta.index) == meta.term
            first, last = meta.index + 1, (last if keep_after else meta.index)
        if entries:
            _check_contiguous(entries)
            start = entries[0].index
            if start < first:
                raise ValueError(f"entry {start} is already covered by the snapshot at {first - 1}")
            if start > last + 1:
                raise ValueError(f"entry {start} would leave a gap after the last entry {last}")
        if hard_state is None and not entries and snapshot is None:
            return
        marker = None if snapshot is None else self._write_snapshot(snapshot)
        self._append(_pack_save(hard_state, marker, keep_after, entries))
        if marker is not None:
            self._set_snapshot(marker, keep_after=bool(keep_after))
        if entries:
            del self._terms[entries[0].index - self._first :]
            self._terms.extend(entry.term for entry in entries)
        if hard_state is not None:
            self._hard_state = hard_state
        if marker is not None:
            self._compact()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot the application made at an applied index, then compact: delete the WAL segments
        it wholly covers and all snapshots but it and the one before it."""
        self._check_usable()
        meta = snapshot.meta
        if meta.index < self._snapshot_index():
            raise ValueError(f"snapshot at {meta.index} is older than the one in force at {self._snapshot_index()}")
        if self._term_at(meta.index) != meta.term:
            raise ValueError(
                f"snapshot at index {meta.index} term {meta.term} does not match the log "
                f"(term there: {self._term_at(meta.index)})"
            )
        marker = self._write_snapshot(snapshot)
        self._append(_pack_save(None, marker, True, []))
        self._set_snapshot(marker, keep_after=True)
        self._compact()

    # -- keys --------------------------------------------------------------------------------------------------

    def rewrap(self, new_kek: bytes) -> None:
        """Wrap the DEKs under `new_kek` instead. The key file is replaced by one rename, so after a crash exactly
        one of the two KEKs opens the storage, never neither."""
        check_kek(new_kek)
        self._check_usable()
        _write_file_atomically(self._directory / KEYS_FILE, self._keyring.wrap(new_kek))
        self._kek = bytes(new_kek)

    def rotate_dek(self) -> None:
        """Make a new DEK current: every record and snapshot written from now on uses it. Files under the old
        DEK stay readable; the old DEK is dropped once compaction has deleted the last of them."""
        self._check_usable()
        keyring = self._keyring.rotated()
        _write_file_atomically(self._directory / KEYS_FILE, keyring.wrap(self._kek))
        self._keyring = keyring
        try:
            self._roll()
        except OSError as exc:
            self._failed = exc
            raise

    # -- internals ---------------------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._dir_fd < 0:
            raise RaftswarmError(f"Raft storage in {self._directory} is closed")
        if self._failed is not None:
            raise RaftswarmError(
                f"a write to the Raft storage in {self._directory} failed ({self._failed}); what reached the disk "
                "is unknown, so it takes no more writes: restart the node to reopen it"
            ) from self._failed

    def _snapshot_index(self) -> int:
        return self._snapshot.index if self._snapshot else 0

    def _last_index(self) -> int:
        return self._first + len(self._terms) - 1

    def _term_at(self, index: int) -> int | None:
        if self._snapshot is not None and index == self._snapshot.index:
            return self._snapshot.term
        if self._first <= index <= self._last_index():
            return self._terms[index - self._first]
        return None

    def _set_snapshot(self, marker: _SnapshotMarker, *, keep_after: bool) -> None:
        if keep_after:
            del self._terms[: marker.index + 1 - self._first]
        else:
            self._terms = []
        self._first = marker.index + 1
        self._snapshot = marker

    def _append(self, record: bytes) -> None:
        self._unloaded = None
        try:
            if self._writer.size >= self._segment_size:
                self._roll()
            self._writer.append(record)
        except OSError as exc:
            # After a failed write or fsync the file's contents are unknown (and the kernel may have dropped
            # the dirty pages): reopening, which authenticates and repairs the tail, is the only safe way on.
            self._failed = exc
            raise

    def _roll(self) -> None:
        """Seal the newest segment and start the next one under the current DEK."""
        next_seq = self._writer.header.seq + 1
        self._writer.append(msgpack.packb([_SEAL, next_seq]))
        self._writer.close()
        self._start_segment(next_seq)

    def _start_segment(self, seq: int) -> None:
        header = SegmentHeader(seq, self._keyring.current, os.urandom(SALT_SIZE))
        cipher = _segment_cipher(self._keyring, self._wal_dir, header)
        state = [_STATE, _pack_hard_state(self._hard_state), _pack_marker(self._snapshot), self._last_index()]
        self._writer = SegmentWriter.create(self._wal_dir, header, cipher, msgpack.packb(state))
        self._segments.append(_Segment(seq, header.key_id, self._last_index()))

    def _write_snapshot(self, snapshot: Snapshot) -> _SnapshotMarker:
        """Write a snapshot file durably and atomically under the current DEK; nothing refers to it yet."""
        meta = snapshot.meta
        marker = _SnapshotMarker(meta.index, meta.term, os.urandom(SNAPSHOT_ID_SIZE))
        path = self._snap_dir / marker.file_name()
        temp = path.with_name(path.name + TEMP_SUFFIX)
        key_id, salt = self._keyring.current, os.urandom(SALT_SIZE)
        header = _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, key_id, salt, marker.id)
        cipher = self._keyring.file_cipher(key_id, salt, SNAPSHOT_PURPOSE)
        assert cipher is not None
        data = memoryview(snapshot.data)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, header, 0)
            offset = len(header)

            def put(kind: int, plaintext: bytes | memoryview) -> None:
                nonlocal offset
                frame = seal_frame(cipher, plaintext, _snapshot_record_ad(header, offset, kind))
                write_all(fd, frame, offset)
                offset += len(frame)

            voters, learners = sorted(meta.conf_state.voters), sorted(meta.conf_state.learners)
            put(_META, msgpack.packb([meta.index, meta.term, voters, learners, len(data)]))
            chunks = 0
            for start in range(0, len(data), SNAPSHOT_CHUNK_SIZE):
                put(_CHUNK, data[start : start + SNAPSHOT_CHUNK_SIZE])
                chunks += 1
            put(_END, msgpack.packb([chunks, len(data)]))
            os.fsync(fd)
            os.rename(temp, path)
            fsync_directory(self._snap_dir)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return marker

    def _compact(self) -> None:
        """Delete what the snapshot in force makes unnecessary: covered segments, old snapshots, unused DEKs."""
        assert self._snapshot is not None
        covered = self._snapshot.index
        removed = False
        while len(self._segments) > 1 and self._segments[1].start_last_index <= covered:
            (self._wal_dir / segment_name(self._segments[0].seq)).unlink()
            del self._segments[0]
            removed = True
        if removed:
            fsync_directory(self._wal_dir)

        in_force = self._snapshot.file_name()
        older = sorted(
            (index, name)
            for name in os.listdir(self._snap_dir)
            if (index := _snapshot_index_of(name)) is not None and name != in_force
        )
        keep = [in_force] + [name for index, name in older if index <= covered][-1:]
        doomed = [name for _, name in older if name not in keep]
        for name in doomed:
            (self._snap_dir / name).unlink()
        if doomed:
            fsync_directory(self._snap_dir)

        used = {segment.key_id for segment in self._segments}
        used |= {_snapshot_key_id(self._snap_dir / name) for name in keep}
        keyring = self._keyring.retaining(used)
        if keyring.keys.keys() != self._keyring.keys.keys():
            _write_file_atomically(self._directory / KEYS_FILE, keyring.wrap(self._kek))
            self._keyring = keyring


def _check_segment_size(segment_size: int) -> None:
    if segment_size <= 0:
        raise ValueError("segment_size must be positive")


def _check_contiguous(entries: list[Entry]) -> None:
    for before, after in itertools.pairwise(entries):
        if after.index != before.index + 1:
            raise ValueError(f"entries are not contiguous: {after.index} follows {before.index}")


def _snapshot_record_ad(header: bytes, offset: int, kind: int) -> bytes:
    return header + offset.to_bytes(8, "big") + bytes([kind])


def _read_snapshot_header(path: Path, raw: bytes) -> tuple[int, bytes, bytes]:
    if len(raw) < _SNAPSHOT_HEADER.size:
        raise corrupted(path, 0, f"the snapshot header is cut short ({len(raw)} bytes)")
    magic, key_id, salt, snapshot_id = _SNAPSHOT_HEADER.unpack_from(raw)
    if magic != SNAPSHOT_MAGIC:
        raise corrupted(path, 0, "not a raftswarm snapshot (bad magic)")
    return key_id, salt, snapshot_id


def _snapshot_key_id(path: Path) -> int:
    with open(path, "rb") as f:
        return _read_snapshot_header(path, f.read(_SNAPSHOT_HEADER.size))[0]


def _read_snapshot(path: Path, keyring: Keyring, marker: _SnapshotMarker) -> Snapshot:
    """Read and authenticate a snapshot file, one record at a time; any failure is StorageCorrupted."""
    if not path.is_file():
        raise StorageCorrupted(f"{path}: the snapshot the WAL names is missing")
    with open(path, "rb") as f:
        header = f.read(_SNAPSHOT_HEADER.size)
        key_id, salt, snapshot_id = _read_snapshot_header(path, header)
        if snapshot_id != marker.id:
            raise corrupted(path, 0, "this is not the snapshot the WAL names (its ID differs)")
        cipher = keyring.file_cipher(key_id, salt, SNAPSHOT_PURPOSE)
        if cipher is None:
            raise corrupted(path, 0, f"the snapshot is encrypted under data key {key_id}, which the key file lacks")
        offset = len(header)

        def take(kind: int) -> bytes:
            nonlocal offset
            frame_header = f.read(FRAME_HEADER.size)
            if len(frame_header) < FRAME_HEADER.size:
                raise corrupted(path, offset, "the snapshot is cut short (a record header is missing)")
            length = frame_body_length(frame_header)
            if length is None:
                raise corrupted(path, offset, "snapshot record header checksum mismatch")
            body = f.read(length)
            if len(body) < length:
                raise corrupted(path, offset, "the snapshot is cut short (a record body is missing)")
            plaintext = open_frame(cipher, body, _snapshot_record_ad(header, offset, kind))
            if plaintext is None:
                raise corrupted(path, offset, "snapshot record failed authentication")
            offset += FRAME_HEADER.size + length
            return plaintext

        meta_offset = offset
        try:
            index, term, voters, learners, length = msgpack.unpackb(take(_META))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise corrupted(path, meta_offset, f"snapshot metadata does not decode ({exc})") from None
        if (index, term) != (marker.index, marker.term):
            raise corrupted(
                path, meta_offset, f"snapshot is at {index}/{term}, the WAL names {marker.index}/{marker.term}"
            )
        chunks: list[bytes] = []
        received = 0
        while received < length:
            chunks.append(take(_CHUNK))
            received += len(chunks[-1])
        end_offset = offset
        if msgpack.unpackb(take(_END)) != [len(chunks), length] or received != length:
            raise corrupted(path, end_offset, "the snapshot's chunks do not add up to its recorded length")
        if f.read(1):
            raise corrupted(path, offset, "bytes follow the snapshot's final record")
    conf_state = ConfState(frozenset(voters), frozenset(learners))
    return Snapshot(SnapshotMeta(index, term, conf_state), b"".join(chunks))
