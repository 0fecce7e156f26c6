"""WAL segment files: the sealed-record framing, the segment header, reading a segment back, appending to one.

Record frame (also used, strictly, inside snapshot files):

    body length u32 | CRC-32 of those 4 length bytes u32 | nonce (12, os.urandom) | AES-256-GCM ciphertext + tag

The associated data of a segment record is the segment header followed by the record's byte offset, so a
record authenticates only in its own segment and at its own place: records cannot be reordered, dropped from
the middle unnoticed, or spliced between files. The CRC guards only the length, which must be trusted before
the tag can be checked: without it a flipped length bit in the middle would look like a torn tail.

Segment file: header (magic, sequence number, DEK ID, 16-byte random salt; per-file key = HKDF(DEK, salt)),
then records. A new segment is written to a temporary name, fsynced and renamed, so a segment file always has
a whole header and first record.

Torn tail versus corruption. A crash interrupts at most one write, and every write is one record appended to
the newest segment, so a torn write can only be the last record of the newest segment, reaching end of file.
It shows as one of:
  1. fewer than 8 bytes after the last good record (header cut short);
  2. a header whose CRC fails, followed only by zero bytes up to end of file (file grown, data never written);
  3. a valid header whose body runs past end of file (body cut short);
  4. a final record, ending exactly at end of file, whose tag fails and which has a blank sector in it: the
     record cut at 512-byte file offsets has a piece that is all zeros (a sector that never reached the disk;
     etcd's WAL makes the same test, `isTornEntry`).
Those bytes are cut off (the record was never acknowledged: save() had not returned). Anything else that
fails is corruption and raises StorageCorrupted naming the file and byte offset: a record that fails
authentication with more bytes after it, a header CRC failure followed by non-zero bytes, any failure in a
segment other than the newest one, and also a final record whose tag fails with no blank sector -- that is
the signature of a flipped bit in a record that was fsynced and acknowledged, and a node that silently
dropped it could break Raft's guarantees, so it refuses to start instead.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from raftswarm.errors import StorageCorrupted

from .keys import NONCE_SIZE

FRAME_HEADER = struct.Struct(">II")
TAG_SIZE = 16
MIN_FRAME_BODY = NONCE_SIZE + TAG_SIZE
MAX_FRAME_BODY = (1 << 32) - 1
"""The length field is 32 bits; a single save() batch or snapshot record larger than ~4 GiB is refused."""

SECTOR_SIZE = 512
"""The smallest unit a disk writes atomically; a torn write leaves whole sectors unwritten (zero)."""

SEGMENT_MAGIC = b"RSWAL\x00\x00\x01"
SEGMENT_PURPOSE = b"raftswarm/raft: WAL segment v1"
_SEGMENT_HEADER = struct.Struct(">8sQI16s")
SEGMENT_SUFFIX = ".wal"
TEMP_SUFFIX = ".tmp"

_datasync = getattr(os, "fdatasync", os.fsync)


_TEST_HOOKS = os.environ.get("RAFTSWARM_TEST_HOOKS") == "1"
"""The chaos suite's fault hooks (`chaos.cluster.faults`); off unless the node was started with it set."""
FSYNC_DELAY_FILE = "test-fsync-delay"


def _slow_disk_hook(segment: Path) -> None:
    """A slow disk: sleep after the fdatasync for the seconds in `<raft dir>/test-fsync-delay`, if it exists."""
    try:
        delay = float((segment.parent.parent / FSYNC_DELAY_FILE).read_text())
    except (OSError, ValueError):
        return
    time.sleep(max(0.0, min(delay, 10.0)))


def fsync_directory(directory: Path) -> None:
    """Make a create, rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def seal_frame(cipher: AESGCM, plaintext: bytes | memoryview, associated_data: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = cipher.encrypt(nonce, plaintext, associated_data)
    body_length = NONCE_SIZE + len(ciphertext)
    if body_length > MAX_FRAME_BODY:
        raise ValueError(f"a storage record of {body_length} bytes exceeds the {MAX_FRAME_BODY}-byte limit")
    length = body_length.to_bytes(4, "big")
    return length + zlib.crc32(length).to_bytes(4, "big") + nonce + ciphertext


def frame_body_length(header: bytes | memoryview) -> int | None:
    """The body length a frame header announces, or None if the header is not a valid one."""
    length, crc = FRAME_HEADER.unpack(header)
    if zlib.crc32(bytes(header[:4])) != crc or length < MIN_FRAME_BODY:
        return None
    return length


def open_frame(cipher: AESGCM, body: bytes | memoryview, associated_data: bytes) -> bytes | None:
    """The plaintext of a frame body, or None if it fails authentication."""
    try:
        return cipher.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], associated_data)
    except InvalidTag:
        return None


def corrupted(path: Path, offset: int, reason: str) -> StorageCorrupted:
    return StorageCorrupted(
        f"{path}: {reason} at byte offset {offset}. Committed Raft data may be damaged, so this node will not "
        "start from it; restore the state directory from a backup, or remove it and rejoin this node to the swarm"
    )


def segment_name(seq: int) -> str:
    return f"{seq:016x}{SEGMENT_SUFFIX}"


def segment_seq(name: str) -> int | None:
    """The sequence number in a segment file name, or None if the name is not a segment's."""
    stem = name.removesuffix(SEGMENT_SUFFIX)
    if stem == name or len(stem) != 16:
        return None
    try:
        return int(stem, 16)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    seq: int
    key_id: int
    salt: bytes

    SIZE = _SEGMENT_HEADER.size

    def encode(self) -> bytes:
        return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, self.seq, self.key_id, self.salt)

    def record_ad(self, offset: int) -> bytes:
        return self.encode() + offset.to_bytes(8, "big")

    @classmethod
    def decode(cls, raw: bytes, path: Path) -> SegmentHeader:
        if len(raw) < cls.SIZE:
            raise corrupted(path, 0, f"the segment header is cut short ({len(raw)} bytes)")
        magic, seq, key_id, salt = _SEGMENT_HEADER.unpack_from(raw)
        if magic != SEGMENT_MAGIC:
            raise corrupted(path, 0, "not a raftswarm WAL segment (bad magic)")
        return cls(seq, key_id, salt)


@dataclass(slots=True)
class SegmentScan:
    """One segment as read back: its authenticated records and where the good data ends."""

    header: SegmentHeader
    records: list[tuple[int, bytes]]
    """(byte offset, plaintext) of every record that authenticated, in order."""
    end: int
    """The byte offset just past the last good record."""
    torn: str | None
    """Why the bytes from `end` on were judged a torn write (only ever set for the newest segment)."""


def scan_segment(
    path: Path, data: bytes, cipher_for: Callable[[SegmentHeader], AESGCM], *, newest: bool
) -> SegmentScan:
    """Authenticate every record of a segment, applying the torn-tail rule of the module docstring.

    `newest` says whether this is the newest segment, the only one whose tail may be torn."""
    header = SegmentHeader.decode(data, path)
    cipher = cipher_for(header)
    size = len(data)
    view = memoryview(data)
    records: list[tuple[int, bytes]] = []
    offset = SegmentHeader.SIZE
    torn = None
    while offset < size:
        if size - offset < FRAME_HEADER.size:
            torn = f"a record header cut short ({size - offset} bytes)"
            break
        body_length = frame_body_length(view[offset : offset + FRAME_HEADER.size])
        if body_length is None:
            if data.count(0, offset) == size - offset:
                torn = f"{size - offset} zero bytes where a record should start"
                break
            raise corrupted(path, offset, "record header checksum mismatch")
        end = offset + FRAME_HEADER.size + body_length
        if end > size:
            torn = f"a record body cut short ({size - offset - FRAME_HEADER.size} of {body_length} bytes)"
            break
        plaintext = open_frame(cipher, view[offset + FRAME_HEADER.size : end], header.record_ad(offset))
        if plaintext is None:
            if end == size and _has_blank_sector(data, offset, end):
                torn = "a final record with blank (never written) sectors"
                break
            where = "the last record, which has no blank sector, so it is not a torn write" if end == size else ""
            raise corrupted(path, offset, "record failed authentication" + (f" ({where})" if where else ""))
        records.append((offset, plaintext))
        offset = end
    if torn is not None and not newest:
        raise corrupted(path, offset, f"{torn} in a segment that is not the newest")
    return SegmentScan(header, records, offset, torn)


def _has_blank_sector(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end], cut at sector boundaries of the file, has a piece that is all zeros.

    A write that never reached the disk leaves such a piece; a bit flip in a written record almost never does
    (only where a piece is a few bytes long and happens to be zero)."""
    cut = start
    while cut < end:
        next_cut = min(end, (cut // SECTOR_SIZE + 1) * SECTOR_SIZE)
        if data.count(0, cut, next_cut) == next_cut - cut:
            return True
        cut = next_cut
    return False


class SegmentWriter:
    """The newest segment, open for appending: one pwrite and one fdatasync per record."""

    def __init__(self, path: Path, header: SegmentHeader, cipher: AESGCM, fd: int, size: int) -> None:
        self.path = path
        self.header = header
        self.size = size
        self._cipher = cipher
        self._fd = fd

    @classmethod
    def create(cls, directory: Path, header: SegmentHeader, cipher: AESGCM, first_record: bytes) -> SegmentWriter:
        """Write a new segment holding `first_record`, durably and atomically (temp file, fsync, rename)."""
        path = directory / segment_name(header.seq)
        temp = path.with_name(path.name + TEMP_SUFFIX)
        data = header.encode() + seal_frame(cipher, first_record, header.record_ad(SegmentHeader.SIZE))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data, 0)
            os.fsync(fd)
            os.rename(temp, path)
            fsync_directory(directory)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        return cls(path, header, cipher, fd, len(data))

    @classmethod
    def reopen(cls, path: Path, header: SegmentHeader, cipher: AESGCM, good_end: int) -> SegmentWriter:
        """Open an existing segment for appending after `good_end`, cutting off whatever follows it."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != good_end:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, header, cipher, fd, good_end)

    def append(self, plaintext: bytes) -> None:
        """Append one record and make it durable before returning."""
        frame = seal_frame(self._cipher, plaintext, self.header.record_ad(self.size))
        write_all(self._fd, frame, self.size)
        _datasync(self._fd)
        if _TEST_HOOKS:
            _slow_disk_hook(self.path)
        self.size += len(frame)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
