"""Unpacking one layer blob into a directory, as Docker's overlay2 driver does, without trusting the tar.

Layers come from registries and tarballs, so every member is treated as an attack until proven otherwise.
Docker unpacks inside a chroot of the layer directory; this module gets the same containment without one:

- member names are cleaned as Go's filepath.Clean does: a name that climbs out ("../x", "a/../../x") is
  refused and the whole layer with it (Docker's "breakout" error); an absolute name ("/etc/passwd") is
  relative to the layer's root, as in Docker;
- a member's parent directories are resolved component by component with chroot semantics: a symlink met
  on the way is followed with "/" meaning the layer's root and ".." stopping there, so "link -> /etc" then
  "link/passwd" writes <layer>/etc/passwd, never the host's. Missing parents are created (0755, root), as
  Docker creates them;
- the member itself is never followed: whatever is at its path is removed first (a directory is kept for a
  directory), files are created with O_EXCL|O_NOFOLLOW, and ownership, xattrs, modes and times are set
  without following symlinks;
- a hard link's target is resolved the same way, must already exist in this layer, and one that climbs
  out is refused (Docker's breakout error).

Everything an image legitimately carries is kept: absolute and dangling symlinks (they are resolved only
inside the container), setuid/setgid/sticky modes, ownership, mtimes, xattrs (security.capability
included), device nodes and fifos. The one exception is trusted.overlay.* xattrs, which are overlayfs's
own metadata (redirects, metacopy, opaque): an image must not steer the overlay except through whiteouts.

OCI whiteouts become overlayfs's: `.wh.NAME` becomes a 0:0 character device NAME, and `.wh..wh..opq`
marks its directory opaque (xattr trusted.overlay.opaque=y); other `.wh..wh.` entries (aufs hard-link
metadata) are dropped, as Docker drops them.

The blob is read once, as a stream: hashed as it arrives (its digest), decompressed (gzip or zstd by magic
number, as Docker's DecompressStream; anything else is a plain tar), hashed again (the diff_id), and
unpacked. Both digests are checked at the end; the caller unpacks into a temporary directory and discards
it on any error, so a bad layer never becomes visible.
"""

from __future__ import annotations

import errno
import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from .digest import HashingReader
from .errors import DigestMismatch, ImageError, InvalidImage

try:
    import zstandard
except ImportError:  # optional: without it zstd layers are refused with a message saying so
    zstandard = None

COPY_CHUNK = 1024 * 1024
"""Bytes copied per read while streaming layers: large enough for throughput, small enough for memory."""

MAX_SYMLINK_FOLLOWS = 40
"""Linux's MAXSYMLINKS: resolving a path that follows more symlinks than this is a loop (ELOOP)."""

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAGIC_LENGTH = max(len(GZIP_MAGIC), len(ZSTD_MAGIC))

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
PAX_XATTR_PREFIX = "SCHILY.xattr."
"""How GNU tar, Go's archive/tar and Docker record extended attributes in PAX headers."""

_IGNORED_XATTR_ERRORS = (errno.ENOTSUP, errno.EPERM)
"""Docker skips an xattr the filesystem refuses (not supported, or e.g. user.* on a symlink)."""

_STREAM_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) + (
    (zstandard.ZstdError,) if zstandard is not None else ()
)
"""What a truncated or corrupt blob raises while it is decompressed and read as a tar."""


def compression_of(head: bytes) -> str:
    """"gzip", "zstd" or "" (plain tar) from a blob's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


def decompressed(raw: BinaryIO, what: str) -> BinaryIO:
    """`raw` decompressed according to its magic number (gzip, zstd, or plain)."""
    head = raw.read(MAGIC_LENGTH)
    source = _Prepended(head, raw)
    compression = compression_of(head)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        if zstandard is None:
            raise ImageError(
                f"{what} is zstd-compressed and this node cannot decompress zstd: install the Python "
                f"module `zstandard` (pip install zstandard) and pull again"
            )
        return zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)  # type: ignore[return-value]
    return source  # type: ignore[return-value]


def unpack_layer(blob: BinaryIO, dest: Path, *, digest: str, diff_id: str, what: str) -> int:
    """Unpack the layer `blob` (compressed or not) into the empty directory `dest`, checking that the blob
    hashes to `digest` and its uncompressed tar to `diff_id`. Returns Docker's layer Size: the bytes of
    regular-file content. Raises `DigestMismatch`, `InvalidImage` (malformed or escaping tar) or
    `ImageError` (the filesystem refused); `dest` is then half-written, for the caller to delete."""
    compressed = HashingReader(blob)
    try:
        uncompressed = HashingReader(decompressed(compressed, what))
        size = _extract(uncompressed, dest, what)
        uncompressed.drain(COPY_CHUNK)
        compressed.drain(COPY_CHUNK)
    except _STREAM_ERRORS as e:
        raise InvalidImage(f"{what} is not a valid (compressed) tar stream: {e}") from None
    except OSError as e:
        raise ImageError(f"cannot unpack {what}: {e}") from None
    if compressed.digest != digest:
        raise DigestMismatch(f"{what}: blob content has digest {compressed.digest}, not {digest}")
    if uncompressed.digest != diff_id:
        raise DigestMismatch(
            f"{what}: uncompressed content has digest {uncompressed.digest}, not the diff_id {diff_id} "
            f"the image config lists"
        )
    return size


def _extract(stream: BinaryIO, root: Path, what: str) -> int:
    size = 0
    dir_times: list[tuple[Path, float]] = []
    with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape") as tar:
        for member in tar:
            try:
                size += _extract_member(tar, member, root, dir_times, what)
            except _STREAM_ERRORS:
                raise
            except OSError as e:
                hint = " (unpacking image layers needs root)" if e.errno == errno.EPERM and os.geteuid() != 0 else ""
                raise ImageError(f"cannot unpack {what}: member {member.name!r}: {e}{hint}") from None
            except ValueError as e:  # a NUL byte in a name or link target
                raise InvalidImage(f"{what}: member {member.name!r} is malformed: {e}") from None
    # Directory times last, since creating their entries changed them; a directory listed twice gets the
    # later header's time, as for any other metadata.
    for path, mtime in dir_times:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return size


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, dir_times: list[tuple[Path, float]], what: str
) -> int:
    parts = _clean(member.name, member.name, what)
    if not parts:
        if not member.isdir():
            raise InvalidImage(f"{what}: member {member.name!r} names the layer's root but is not a directory")
        _apply_metadata(root, member, dir_times)
        return 0
    parent = _resolve(root, parts[:-1], member.name, what, create=True)
    assert parent is not None  # created when missing
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        _whiteout(parent, base, member, what)
        return 0
    path = parent / base
    _clear(path, keep_dir=member.isdir())
    if member.isdir():
        if not path.is_dir():
            os.mkdir(path, 0o700)
    elif member.isreg():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            source = tar.extractfile(member)
            assert source is not None  # a regular member always has a file object
            shutil.copyfileobj(source, out, COPY_CHUNK)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        os.link(_link_target(root, member, what), path, follow_symlinks=False)
        return 0  # the inode and its metadata came with the link's target
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    else:
        raise InvalidImage(f"{what}: member {member.name!r} has unsupported tar type {member.type!r}")
    _apply_metadata(path, member, dir_times)
    return member.size if member.isreg() else 0


def _clean(name: str, member_name: str, what: str) -> list[str]:
    """Go's filepath.Clean of a member name, as components below the layer root ([] is the root itself);
    a name that climbs above the root is refused, as Docker refuses it."""
    clean = posixpath.normpath(name).lstrip("/") or "."
    if clean == ".." or clean.startswith("../"):
        raise InvalidImage(f"{what}: member {member_name!r} refers to {name!r}, outside the layer (refused)")
    return [] if clean == "." else clean.split("/")


def _resolve(root: Path, parts: list[str], member_name: str, what: str, *, create: bool) -> Path | None:
    """The directory `parts` names inside `root`, following symlinks as a chroot at `root` would (absolute
    targets start at `root`, ".." stops there). Missing directories are created when `create`; without
    it, a missing one gives None."""
    resolved: list[str] = []
    pending = list(parts)
    follows = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(candidate)
            os.chmod(candidate, 0o755)  # explicit: independent of the process's umask
            resolved.append(part)
            continue
        if stat.S_ISDIR(mode):
            resolved.append(part)
        elif stat.S_ISLNK(mode):
            follows += 1
            if follows > MAX_SYMLINK_FOLLOWS:
                raise InvalidImage(f"{what}: member {member_name!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = target.split("/") + pending
        else:
            raise InvalidImage(
                f"{what}: member {member_name!r} needs /{'/'.join([*resolved, part])} to be a directory, "
                f"and the layer has a file there"
            )
    return root.joinpath(*resolved)


def _link_target(root: Path, member: tarfile.TarInfo, what: str) -> Path:
    parts = _clean(member.linkname, member.name, what)
    if not parts:
        raise InvalidImage(f"{what}: member {member.name!r} is a hard link to the layer's root directory")
    parent = _resolve(root, parts[:-1], member.name, what, create=False)
    target = parent / parts[-1] if parent is not None else None
    try:
        is_file = target is not None and not stat.S_ISDIR(os.lstat(target).st_mode)
    except FileNotFoundError:
        is_file = False
    if not is_file:
        raise InvalidImage(
            f"{what}: member {member.name!r} is a hard link to {member.linkname!r}, which is not a file "
            f"earlier in the layer"
        )
    return target


def _clear(path: Path, *, keep_dir: bool) -> None:
    """Remove whatever is at `path` (never following it), except a directory when one is wanted there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        if not keep_dir:
            shutil.rmtree(path)
    else:
        os.unlink(path)


def _whiteout(parent: Path, base: str, member: tarfile.TarInfo, what: str) -> None:
    if base == OPAQUE_WHITEOUT:
        os.setxattr(parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
        return
    if base.startswith(WHITEOUT_META_PREFIX):
        return
    name = base[len(WHITEOUT_PREFIX):]
    if name in ("", ".", ".."):
        raise InvalidImage(f"{what}: member {member.name!r} is a whiteout of nothing")
    path = parent / name
    _clear(path, keep_dir=False)
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    os.chown(path, member.uid, member.gid, follow_symlinks=False)


def _apply_metadata(path: Path, member: tarfile.TarInfo, dir_times: list[tuple[Path, float]]) -> None:
    # Ownership first: chown clears setuid/setgid bits and security.capability, which come after.
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    for key, value in member.pax_headers.items():
        if not key.startswith(PAX_XATTR_PREFIX):
            continue
        attribute = key[len(PAX_XATTR_PREFIX):]
        if attribute.startswith(OVERLAY_XATTR_PREFIX):
            continue
        try:
            os.setxattr(path, attribute, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError as e:
            if e.errno not in _IGNORED_XATTR_ERRORS:
                raise
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    if member.isdir():
        dir_times.append((path, member.mtime))
    else:
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


class _Prepended:
    """A stream that yields `head` (bytes already read to sniff the compression) and then `rest`."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readable(self) -> bool:
        return True
