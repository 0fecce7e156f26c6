"""The encrypted Raft storage: what a driver saves is what a restarted node loads, whatever happened between.

Each test names the rule it guards: durability across reopen, truncation by overwrite, compaction, key handling,
torn-tail repair versus corruption, confidentiality at rest, large snapshots, and a model check.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftswarm.errors import RaftswarmError, StorageCorrupted, WrongKey
from raftswarm.raft import wal
from raftswarm.raft.keys import Keyring
from raftswarm.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftswarm.raft.storage import RaftStorage

KEK = bytes(range(32))
OTHER_KEK = bytes(range(100, 132))
CONF = ConfState(frozenset({1, 2, 3}), frozenset({4}))


def make_entries(first: int, last: int, term: int, size: int = 20) -> list[Entry]:
    return [Entry(i, term, data=f"entry {i} term {term} ".encode().ljust(size, b".")) for i in range(first, last + 1)]


def snapshot_at(index: int, term: int, data: bytes = b"state machine") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), data)


def segments(directory: Path) -> list[Path]:
    return sorted((directory / "wal").glob("*.wal"))


def snapshots(directory: Path) -> list[Path]:
    return sorted((directory / "snap").glob("*.snap"))


def reopen_and_load(directory: Path, kek: bytes = KEK, **kwargs):
    with RaftStorage.open(directory, kek, **kwargs) as storage:
        return storage.load()


def flip_byte(path: Path, offset: int) -> bytes:
    """Flip one byte of a file; returns the original contents so the caller can restore them."""
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[offset] ^= 0x40
    path.write_bytes(bytes(damaged))
    return original


@pytest.fixture
def raft_dir(tmp_path: Path) -> Path:
    return tmp_path / "raft"


# -- durability across reopen ----------------------------------------------------------------------------------


def test_new_storage_exists_and_loads_empty(raft_dir: Path) -> None:
    assert not RaftStorage.exists(raft_dir)
    RaftStorage.create(raft_dir, KEK).close()
    assert RaftStorage.exists(raft_dir)
    state = reopen_and_load(raft_dir)
    assert (state.hard_state, state.snapshot, state.entries) == (HardState(), None, [])


def test_create_refuses_existing_or_non_empty_directory(raft_dir: Path) -> None:
    RaftStorage.create(raft_dir, KEK).close()
    with pytest.raises(RaftswarmError, match="already holds Raft storage"):
        RaftStorage.create(raft_dir, KEK)
    other = raft_dir.parent / "other"
    other.mkdir()
    (other / "precious").write_text("x")
    with pytest.raises(RaftswarmError, match="not empty"):
        RaftStorage.create(other, KEK)
    assert (other / "precious").read_text() == "x"
    empty = raft_dir.parent / "empty"
    empty.mkdir()
    RaftStorage.create(empty, KEK).close()
    assert RaftStorage.exists(empty)


def test_entries_hard_state_and_snapshot_survive_reopen(raft_dir: Path) -> None:
    conf = Entry(4, 2, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_VOTER, 7, b"10.0.0.7:2377").encode())
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 0), make_entries(1, 3, 1), None)
        storage.save(HardState(2, 3, 3), [conf, *make_entries(5, 9, 2)], None)
        storage.save_snapshot(snapshot_at(3, 1, b"applied through 3"))
        storage.save(HardState(2, 3, 9), [], None)
    state = reopen_and_load(raft_dir)
    assert state.hard_state == HardState(2, 3, 9)
    assert state.snapshot == snapshot_at(3, 1, b"applied through 3")
    assert state.entries == [conf, *make_entries(5, 9, 2)]
    assert ConfChange.decode(state.entries[0].data).context == b"10.0.0.7:2377"


def test_load_again_rereads_the_same_state(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 1), make_entries(1, 4, 1), None)
        first = storage.load()
        assert storage.load() == first
        storage.save_snapshot(snapshot_at(2, 1))
        assert storage.load().entries == make_entries(3, 4, 1)


def test_only_one_storage_opens_a_directory_at_a_time(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK), pytest.raises(RaftswarmError, match="already open"):
        RaftStorage.open(raft_dir, KEK)
    RaftStorage.open(raft_dir, KEK).close()


# -- the log: truncation, rollover, compaction ------------------------------------------------------------------


def test_overwrite_truncates_the_log_and_replays_after_reopen(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=300) as storage:
        storage.save(HardState(1, 1, 2), make_entries(1, 10, 1), None)
        storage.save(HardState(2, 2, 2), make_entries(6, 7, 2), None)  # a new leader overwrote 6..10
        storage.save(None, make_entries(8, 9, 2), None)
        storage.save(HardState(3, 3, 2), make_entries(3, 3, 3), None)  # and another, down to 3
    state = reopen_and_load(raft_dir, segment_size=300)
    assert state.hard_state == HardState(3, 3, 2)
    assert state.entries == make_entries(1, 2, 1) + make_entries(3, 3, 3)
    assert len(segments(raft_dir)) > 1, "the overwrites should have crossed segment boundaries"


def test_invalid_batches_are_refused_and_write_nothing(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(None, make_entries(1, 5, 1), None)
        storage.save_snapshot(snapshot_at(2, 1))
        size = segments(raft_dir)[-1].stat().st_size
        with pytest.raises(ValueError, match="gap"):
            storage.save(None, make_entries(7, 8, 1), None)
        with pytest.raises(ValueError, match="covered by the snapshot"):
            storage.save(None, make_entries(2, 3, 1), None)
        with pytest.raises(ValueError, match="not contiguous"):
            storage.save(None, [Entry(6, 1), Entry(8, 1)], None)
        with pytest.raises(ValueError, match="does not match the log"):
            storage.save_snapshot(snapshot_at(4, 9))
        assert segments(raft_dir)[-1].stat().st_size == size
    assert reopen_and_load(raft_dir).entries == make_entries(3, 5, 1)


def test_segments_roll_over_at_the_configured_size(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=4096) as storage:
        for i in range(1, 201):
            storage.save(HardState(1, 1, i - 1), [Entry(i, 1, data=bytes(100))], None)
    files = segments(raft_dir)
    assert len(files) >= 5
    assert all(f.stat().st_size < 4096 + 400 for f in files)
    state = reopen_and_load(raft_dir, segment_size=4096)
    assert [e.index for e in state.entries] == list(range(1, 201))
    assert state.hard_state == HardState(1, 1, 199)


def test_save_snapshot_removes_covered_segments_and_keeps_two_snapshots(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=2048) as storage:
        storage.save(HardState(1, 1, 0), [], None)
        for i in range(1, 101):
            storage.save(None, [Entry(i, 1, data=bytes(100))], None)
        before = segments(raft_dir)
        storage.save_snapshot(snapshot_at(30, 1, b"first"))
        storage.save_snapshot(snapshot_at(60, 1, b"second"))
        storage.save_snapshot(snapshot_at(90, 1, b"third"))
        after = segments(raft_dir)
        assert len(after) < len(before) and after[-1] == before[-1]
        assert [p.name.split("-")[0] for p in snapshots(raft_dir)] == [f"{60:016x}", f"{90:016x}"]
        storage.save(HardState(1, 1, 95), [Entry(101, 1)], None)
    state = reopen_and_load(raft_dir, segment_size=2048)
    assert state.snapshot == snapshot_at(90, 1, b"third")
    assert [e.index for e in state.entries] == list(range(91, 102))
    assert state.hard_state == HardState(1, 1, 95), "the hard state must survive its segment being removed"


def test_leader_snapshot_keeps_the_log_after_it_only_if_the_log_holds_its_last_entry(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(2, 1, 1), make_entries(1, 3, 1) + make_entries(4, 6, 2), None)
        storage.save(None, [], snapshot_at(5, 2, b"matching"))
        assert storage.load().entries == make_entries(6, 6, 2)
        storage.save(HardState(3, 2, 8), make_entries(9, 9, 3), snapshot_at(8, 3, b"beyond the log"))
    state = reopen_and_load(raft_dir)
    assert state.snapshot == snapshot_at(8, 3, b"beyond the log")
    assert state.entries == make_entries(9, 9, 3)
    assert state.hard_state == HardState(3, 2, 8)
    with RaftStorage.open(raft_dir, KEK) as storage:
        storage.save(None, [], snapshot_at(9, 4, b"conflicting"))  # our entry 9 has term 3: discard it
    state = reopen_and_load(raft_dir)
    assert (state.snapshot.meta.index, state.entries) == (9, [])


# -- keys ----------------------------------------------------------------------------------------------------


def test_wrong_kek_is_refused_with_wrong_key(raft_dir: Path) -> None:
    RaftStorage.create(raft_dir, KEK).close()
    with pytest.raises(WrongKey, match="does not unlock"):
        RaftStorage.open(raft_dir, OTHER_KEK)
    RaftStorage.open(raft_dir, KEK).close()  # the failed attempt released the directory


def test_damaged_key_file_is_corruption_not_a_wrong_key(raft_dir: Path) -> None:
    RaftStorage.create(raft_dir, KEK).close()
    flip_byte(raft_dir / "keys", 30)
    with pytest.raises(StorageCorrupted, match="keys"):
        RaftStorage.open(raft_dir, KEK)


def test_rewrap_moves_the_data_key_to_the_new_kek(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 1), make_entries(1, 2, 1), None)
        storage.rewrap(OTHER_KEK)
        storage.save(None, make_entries(3, 3, 1), None)
    with pytest.raises(WrongKey):
        RaftStorage.open(raft_dir, KEK)
    assert reopen_and_load(raft_dir, OTHER_KEK).entries == make_entries(1, 3, 1)
    assert not list(raft_dir.glob("*.tmp"))


def test_rotate_dek_writes_new_data_under_a_new_key_and_old_data_stays_readable(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=1024) as storage:
        storage.save(HardState(1, 1, 0), make_entries(1, 20, 1), None)
        storage.save_snapshot(snapshot_at(5, 1, b"under the first key"))
        storage.rotate_dek()
        storage.save(None, make_entries(21, 40, 1), None)
    assert Keyring.unwrap((raft_dir / "keys").read_bytes(), KEK, "keys").keys.keys() == {1, 2}
    state = reopen_and_load(raft_dir, segment_size=1024)
    assert state.snapshot == snapshot_at(5, 1, b"under the first key")
    assert state.entries == make_entries(6, 40, 1)

    with RaftStorage.open(raft_dir, KEK, segment_size=1024) as storage:
        storage.save_snapshot(snapshot_at(30, 1))
        storage.save_snapshot(snapshot_at(40, 1))
    keyring = Keyring.unwrap((raft_dir / "keys").read_bytes(), KEK, "keys")
    assert (keyring.current, set(keyring.keys)) == (2, {2}), "the old DEK goes once no file needs it"
    assert reopen_and_load(raft_dir).snapshot == snapshot_at(40, 1)


def test_rotate_dek_then_rewrap_then_reopen(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 1), make_entries(1, 2, 1), None)
        storage.rotate_dek()
        storage.save(None, make_entries(3, 4, 1), None)
        storage.rewrap(OTHER_KEK)
    assert reopen_and_load(raft_dir, OTHER_KEK).entries == make_entries(1, 4, 1)


def test_crash_inside_rotate_dek_still_moves_new_writes_to_the_new_key(
    raft_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 0), make_entries(1, 3, 1), None)
        with monkeypatch.context() as patch:
            patch.setattr(wal.SegmentWriter, "append", lambda *a: (_ for _ in ()).throw(OSError("crash")))
            with pytest.raises(OSError):
                storage.rotate_dek()  # the key file now names DEK 2 current; the old segment is not even sealed
    with RaftStorage.open(raft_dir, KEK) as storage:
        storage.save(None, make_entries(4, 4, 1), None)
    newest = segments(raft_dir)[-1]
    assert wal.SegmentHeader.decode(newest.read_bytes(), newest).key_id == 2
    assert reopen_and_load(raft_dir).entries == make_entries(1, 4, 1)


# -- torn tail versus corruption ------------------------------------------------------------------------------


def _three_saves(raft_dir: Path) -> tuple[Path, list[int]]:
    """A segment holding three save records; returns it and the record boundaries [start, b1, b2, end]."""
    bounds = []
    with RaftStorage.create(raft_dir, KEK) as storage:
        segment = segments(raft_dir)[-1]
        for i in range(3):
            bounds.append(segment.stat().st_size)
            storage.save(HardState(1, 1, i), make_entries(i * 5 + 1, i * 5 + 5, 1, size=30), None)
        bounds.append(segment.stat().st_size)
    return segment, bounds


def test_torn_last_record_is_cut_off_at_every_byte_offset(raft_dir: Path) -> None:
    segment, (_, _, last_start, end) = _three_saves(raft_dir)
    full = segment.read_bytes()
    for cut in range(last_start, end):
        segment.write_bytes(full[:cut])
        state = reopen_and_load(raft_dir)
        assert state.entries == make_entries(1, 10, 1, size=30), f"cut at {cut}"
        assert state.hard_state == HardState(1, 1, 1)
        assert segment.stat().st_size == last_start, "the torn bytes are truncated away"
    with RaftStorage.open(raft_dir, KEK) as storage:
        storage.save(None, make_entries(11, 11, 2), None)
    assert reopen_and_load(raft_dir).entries[-1] == make_entries(11, 11, 2)[0]


def test_unwritten_sectors_at_the_tail_are_a_torn_write(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(None, make_entries(1, 2, 1), None)
        segment = segments(raft_dir)[-1]
        last_start = segment.stat().st_size
        storage.save(None, [Entry(3, 1, data=os.urandom(3000))], None)
    full = segment.read_bytes()
    # The file grew but no sector of the record reached the disk; then: only its first sectors did.
    first_blank = (last_start // wal.SECTOR_SIZE + 2) * wal.SECTOR_SIZE
    for blank_from in (last_start, first_blank):
        segment.write_bytes(full[:blank_from] + bytes(len(full) - blank_from))
        assert [e.index for e in reopen_and_load(raft_dir).entries] == [1, 2]
        assert segment.stat().st_size == last_start


def test_flipped_byte_in_a_middle_record_is_corruption_naming_file_and_offset(raft_dir: Path) -> None:
    segment, (_, middle_start, middle_end, _) = _three_saves(raft_dir)
    for offset in range(middle_start, middle_end):
        original = flip_byte(segment, offset)
        with pytest.raises(StorageCorrupted) as caught:
            RaftStorage.open(raft_dir, KEK)
        assert str(segment) in str(caught.value)
        assert f"byte offset {middle_start}" in str(caught.value)
        segment.write_bytes(original)
    assert len(reopen_and_load(raft_dir).entries) == 15


def test_flipped_byte_in_the_last_record_is_corruption_not_a_torn_write(raft_dir: Path) -> None:
    # The last record was fsynced and acknowledged; a bit flip there has no blank sector, so it is not dropped.
    segment, (_, _, last_start, end) = _three_saves(raft_dir)
    for offset in (last_start + 2, last_start + 20, end - 1):
        original = flip_byte(segment, offset)
        with pytest.raises(StorageCorrupted, match=f"byte offset {last_start}"):
            RaftStorage.open(raft_dir, KEK)
        segment.write_bytes(original)


def test_records_cannot_be_reordered_within_a_segment(raft_dir: Path) -> None:
    # Two hard-state records of the same size: swapped, each would still decode and replay without complaint.
    with RaftStorage.create(raft_dir, KEK) as storage:
        bounds = [segments(raft_dir)[-1].stat().st_size]
        for term in (1, 2, 3):
            storage.save(HardState(term, 1, 0), [], None)
            bounds.append(segments(raft_dir)[-1].stat().st_size)
    segment = segments(raft_dir)[-1]
    data = segment.read_bytes()
    first, second = data[bounds[0] : bounds[1]], data[bounds[1] : bounds[2]]
    assert len(first) == len(second)
    segment.write_bytes(data[: bounds[0]] + second + first + data[bounds[2] :])
    with pytest.raises(StorageCorrupted, match=f"byte offset {bounds[0]}"):
        RaftStorage.open(raft_dir, KEK)


def test_damage_in_an_older_segment_is_always_corruption(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=512) as storage:
        for i in range(1, 31):
            storage.save(HardState(1, 1, i), [Entry(i, 1, data=bytes(50))], None)
    older = segments(raft_dir)[1]
    original = older.read_bytes()

    # Any cut would be a torn tail in the newest segment; here it is damage, even one at a record boundary
    # (the seal record is what tells a whole older segment from one that lost its tail).
    for cut in range(len(original) - 80, len(original)):
        older.write_bytes(original[:cut])
        with pytest.raises(StorageCorrupted, match=str(older)):
            RaftStorage.open(raft_dir, KEK, segment_size=512)
    older.unlink()
    with pytest.raises(StorageCorrupted, match="missing"):
        RaftStorage.open(raft_dir, KEK, segment_size=512)
    older.write_bytes(original)
    assert len(reopen_and_load(raft_dir, segment_size=512).entries) == 30


def test_a_lost_older_segment_is_noticed_even_at_the_front(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=512) as storage:
        for i in range(1, 31):
            storage.save(None, [Entry(i, 1, data=bytes(50))], None)
    segments(raft_dir)[0].unlink()
    with pytest.raises(StorageCorrupted, match="an older segment is missing"):
        RaftStorage.open(raft_dir, KEK, segment_size=512)


def test_flipped_byte_in_a_snapshot_is_corruption(raft_dir: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(None, make_entries(1, 3, 1), None)
        storage.save_snapshot(snapshot_at(3, 1, data))
    (snapshot,) = snapshots(raft_dir)
    size = snapshot.stat().st_size
    for offset in (3, 60, 200, size // 2, size - 5):
        original = flip_byte(snapshot, offset)
        with pytest.raises(StorageCorrupted, match=str(snapshot)):
            reopen_and_load(raft_dir)
        snapshot.write_bytes(original)
    snapshot.write_bytes(original[: size - 40])
    with pytest.raises(StorageCorrupted, match="cut short"):
        reopen_and_load(raft_dir)
    snapshot.write_bytes(original)
    assert reopen_and_load(raft_dir).snapshot.data == data


# -- durability discipline ------------------------------------------------------------------------------------


def test_save_is_one_write_and_one_fdatasync(raft_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_pwrite, real_datasync, real_fsync = os.pwrite, wal._datasync, os.fsync
    with RaftStorage.create(raft_dir, KEK) as storage:
        monkeypatch.setattr(os, "pwrite", lambda *a: calls.append("pwrite") or real_pwrite(*a))
        monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
        monkeypatch.setattr(wal, "_datasync", lambda fd: calls.append("fdatasync") or real_datasync(fd))
        storage.save(HardState(1, 1, 0), make_entries(1, 50, 1), None)
        assert calls == ["pwrite", "fdatasync"]


def test_a_failed_fsync_stops_writes_until_reopened(raft_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_datasync(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(HardState(1, 1, 0), make_entries(1, 3, 1), None)
        with monkeypatch.context() as patch:
            patch.setattr(wal, "_datasync", failing_datasync)
            with pytest.raises(OSError):
                storage.save(None, make_entries(4, 4, 1), None)
        with pytest.raises(RaftswarmError, match="restart the node"):
            storage.save(None, make_entries(4, 4, 1), None)
    assert reopen_and_load(raft_dir).entries[:3] == make_entries(1, 3, 1)


def test_crash_between_sealing_and_starting_a_segment(raft_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=256) as storage:
        storage.save(HardState(1, 1, 0), make_entries(1, 10, 1), None)
        with monkeypatch.context() as patch:
            patch.setattr(wal.SegmentWriter, "create", classmethod(lambda *a: (_ for _ in ()).throw(OSError("crash"))))
            with pytest.raises(OSError):
                storage.save(None, make_entries(11, 11, 1), None)
    assert len(segments(raft_dir)) == 1
    with RaftStorage.open(raft_dir, KEK, segment_size=256) as storage:
        assert len(segments(raft_dir)) == 2
        assert storage.load().entries == make_entries(1, 10, 1)
        storage.save(None, make_entries(11, 11, 1), None)
    assert reopen_and_load(raft_dir).entries == make_entries(1, 11, 1)


# -- confidentiality at rest ----------------------------------------------------------------------------------

MARKER = b"SECRET-PLAINTEXT-MARKER"


def test_no_plaintext_or_data_key_appears_in_any_file(raft_dir: Path) -> None:
    with RaftStorage.create(raft_dir, KEK, segment_size=2048) as storage:
        storage.save(HardState(1, 1, 0), [Entry(1, 1, data=b"prefix " + MARKER + b" suffix")], None)
        conf = ConfChange(ConfChangeType.ADD_VOTER, 2, MARKER).encode()
        storage.save(HardState(1, 1, 1), [Entry(2, 1, EntryType.CONF_CHANGE, conf)], None)
        storage.save_snapshot(snapshot_at(1, 1, MARKER * 1000))
        storage.rotate_dek()
        storage.save(None, [Entry(3, 1, data=MARKER * 50)], snapshot_at(2, 1, b"x" + MARKER))
        storage.rewrap(OTHER_KEK)
    deks = Keyring.unwrap((raft_dir / "keys").read_bytes(), OTHER_KEK, "keys").keys.values()
    files = [p for p in raft_dir.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        content = path.read_bytes()
        assert MARKER not in content, path
        assert not any(dek in content for dek in deks), path
        assert KEK not in content and OTHER_KEK not in content, path
    assert reopen_and_load(raft_dir, OTHER_KEK).entries[0].data == MARKER * 50


# -- large snapshots ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_snapshot_larger_than_64_mib_round_trips(raft_dir: Path) -> None:
    data = bytes(range(256)) * (256 * 1024) + b"tail"  # 64 MiB + 4 bytes
    started = time.monotonic()
    with RaftStorage.create(raft_dir, KEK) as storage:
        storage.save(None, make_entries(1, 2, 1), None)
        storage.save_snapshot(snapshot_at(2, 1, data))
    del data
    state = reopen_and_load(raft_dir)
    assert len(state.snapshot.data) == 64 * 1024 * 1024 + 4
    assert state.snapshot.data[-4:] == b"tail" and state.snapshot.data[1000:1003] == bytes([232, 233, 234])
    assert time.monotonic() - started < 10


# -- model check ----------------------------------------------------------------------------------------------


class Model:
    """What load() must return, computed the plain way."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    @property
    def first(self) -> int:
        return self.snapshot.meta.index + 1 if self.snapshot else 1

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        if self.snapshot and index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        if self.first <= index <= self.last:
            return self.entries[index - self.first].term
        return None

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            keep = self.term_at(snapshot.meta.index) == snapshot.meta.term
            self.entries = [e for e in self.entries if e.index > snapshot.meta.index] if keep else []
            self.snapshot = snapshot
        if entries:
            self.entries = [e for e in self.entries if e.index < entries[0].index] + entries
        if hard_state is not None:
            self.hard_state = hard_state


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    """Valid driver calls: saves (overwrites, leader snapshots), app snapshots, key rotation and reopens."""
    model, ops = Model(), []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["save", "save", "save", "snapshot", "leader", "rotate", "reopen"]))
        if kind == "snapshot" and model.last > (model.snapshot.meta.index if model.snapshot else 0):
            index = draw(st.integers(model.first, model.last))
            snapshot = Snapshot(SnapshotMeta(index, model.term_at(index), CONF), draw(st.binary(max_size=40)))
            ops.append(("snapshot", snapshot))
            model.save(None, [], snapshot)
        elif kind == "leader":
            index = draw(st.integers(model.first, model.last + 3))
            term = draw(st.sampled_from([model.term_at(index) or 1, 9]))
            snapshot = Snapshot(SnapshotMeta(index, term, CONF), draw(st.binary(max_size=40)))
            entries = make_entries(index + 1, index + draw(st.integers(0, 3)), 9)
            ops.append(("save", None, entries, snapshot))
            model.save(None, entries, snapshot)
        elif kind in ("rotate", "reopen"):
            ops.append((kind,))
        else:
            start = draw(st.integers(model.first, model.last + 1))
            term = draw(st.integers(1, 9))
            entries = make_entries(start, start + draw(st.integers(0, 6)) - 1, term, size=draw(st.integers(0, 120)))
            hard_state = draw(st.none() | st.builds(HardState, st.integers(0, 9), st.integers(0, 3), st.integers(0, 9)))
            ops.append(("save", hard_state, entries, None))
            model.save(hard_state, entries, None)
    return ops


def _assert_matches(state, model: Model) -> None:
    assert state.hard_state == model.hard_state
    assert state.snapshot == model.snapshot
    assert state.entries == model.entries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations(), st.sampled_from([300, 1024, 1 << 20]))
def test_any_sequence_of_saves_loads_back_like_the_model(ops: list[tuple], segment_size: int) -> None:
    model = Model()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "raft"
        storage = RaftStorage.create(directory, KEK, segment_size=segment_size)
        try:
            for op in ops:
                if op[0] == "save":
                    storage.save(*op[1:])
                    model.save(*op[1:])
                elif op[0] == "snapshot":
                    storage.save_snapshot(op[1])
                    model.save(None, [], op[1])
                elif op[0] == "rotate":
                    storage.rotate_dek()
                else:
                    storage.close()
                    storage = RaftStorage.open(directory, KEK, segment_size=segment_size)
                    _assert_matches(storage.load(), model)
            _assert_matches(storage.load(), model)
        finally:
            storage.close()
        _assert_matches(reopen_and_load(directory, segment_size=segment_size), model)
