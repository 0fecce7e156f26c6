"""Overlay mounts of task root filesystems, made the way Docker's overlay2 driver makes them.

A task's rootfs is overlayfs with the image's unpacked layers as lowerdirs (topmost first) and the task's
own upperdir/workdir. The kernel takes the mount options as one page (4096 bytes), so long layer paths
limit how many layers fit; like overlay2, every layer gets a short symlink `l/<26 chars>` in the store root
and the mount runs with the store root as its working directory, so each lowerdir costs 29 bytes
("l/<name>:") whatever the store's path. A mount whose options fit the page with absolute paths (any image
of a few dozen layers) is one mount(2) call; a deeper one is done by util-linux `mount(8)` in a child process
run in the store root, because the working directory is per process and the store is used from several
threads. The child costs ~7 ms, and the store's lock is held meanwhile, so tasks started at once queued on it.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import shutil
import subprocess
from pathlib import Path

from .errors import ImageError, InvalidImage, RootfsUnavailable

LINK_DIR = "l"
"""Directory of the short layer symlinks, under the store root (overlay2's name)."""

LINK_NAME_LENGTH = 26
"""overlay2's link name length: 26 base32 characters (130 bits of the diff_id: no collisions)."""

MAX_LAYERS = 128
"""Docker overlay2's maximum image depth; 128 short lowerdirs (3.7 KiB) still fit the page the kernel
takes the options in."""

MOUNT_OPTIONS_MAX = 4095
"""The kernel copies mount options into one page (4096 bytes, NUL included)."""

MOUNT_TIMEOUT = 60.0
"""Seconds a mount(8) may take: it returns in milliseconds unless the kernel is wedged."""

_OPTION_SEPARATORS = set(",:\\")
"""Characters overlayfs reads as separators in its options: a store root with one is mounted relative to it."""

_MNT_DETACH = 2
"""umount2 flag: detach now, release when the last user is gone (`umount -l`)."""

_libc = ctypes.CDLL(None, use_errno=True)


def link_name(diff_hex: str) -> str:
    """The short symlink name of a layer, derived from its diff_id (so it never needs to be stored)."""
    return base64.b32encode(bytes.fromhex(diff_hex)).decode()[:LINK_NAME_LENGTH]


def ensure_link(root: Path, diff_hex: str, layer_dir: Path) -> str:
    """Create (if missing) `l/<name>` -> the layer's directory, relative so the store can move; returns
    the lowerdir entry relative to `root`."""
    name = link_name(diff_hex)
    link = root / LINK_DIR / name
    if not os.path.islink(link):
        os.symlink(os.path.relpath(layer_dir, link.parent), link)
    return f"{LINK_DIR}/{name}"


def remove_link(root: Path, diff_hex: str) -> None:
    (root / LINK_DIR / link_name(diff_hex)).unlink(missing_ok=True)


def check_available() -> None:
    """Raise `RootfsUnavailable` unless this process can make overlay mounts."""
    if os.geteuid() != 0:
        raise RootfsUnavailable(
            "mounting a task's root filesystem needs root (overlayfs mounts need CAP_SYS_ADMIN): "
            "run raftswarm-node as root"
        )
    if shutil.which("mount") is None:
        raise RootfsUnavailable("the `mount` command (util-linux) is not installed: apt-get install mount")


def mount(root: Path, lowers: list[str], upper: str, work: str, target: Path) -> None:
    """Mount overlayfs at `target`; `lowers` (topmost first), `upper` and `work` are relative to `root`."""
    if len(lowers) > MAX_LAYERS:
        raise InvalidImage(
            f"the image has {len(lowers)} layers; an overlay mounts at most {MAX_LAYERS} (Docker's limit)"
        )
    lowerdirs = ":".join(str(root / lower) for lower in lowers)
    absolute = f"lowerdir={lowerdirs},upperdir={root / upper},workdir={root / work}"
    if len(absolute) <= MOUNT_OPTIONS_MAX and not _OPTION_SEPARATORS & set(str(root)):
        if _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, absolute.encode()) == 0:
            return
        error = ctypes.get_errno()
        if error == errno.ENODEV:
            raise RootfsUnavailable("this kernel has no overlayfs: load it with `modprobe overlay`")
        raise ImageError(f"cannot mount the root filesystem at {target}: {os.strerror(error)}")
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    if len(options) > MOUNT_OPTIONS_MAX:
        raise InvalidImage(
            f"the overlay mount options are {len(options)} bytes, more than the kernel's {MOUNT_OPTIONS_MAX}"
        )
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        cwd=root, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.strip() or f"mount exited with status {result.returncode}"
        if "unknown filesystem type" in reason:
            raise RootfsUnavailable(f"this kernel has no overlayfs ({reason}): load it with `modprobe overlay`")
        raise ImageError(f"cannot mount the root filesystem at {target}: {reason}")


def unmount(target: Path) -> None:
    """Unmount `target`; if it is busy (a process still has files open in it), detach it lazily, as
    `umount -l` does, so the rootfs disappears now and the kernel frees it when the last user goes."""
    path = os.fsencode(target)
    if _libc.umount2(path, 0) == 0:
        return
    error = ctypes.get_errno()
    if error == errno.EBUSY and _libc.umount2(path, _MNT_DETACH) == 0:
        return
    error = ctypes.get_errno() if error == errno.EBUSY else error
    if error == errno.EINVAL:  # not a mount point (any more): nothing to undo
        return
    raise ImageError(f"cannot unmount {target}: {os.strerror(error)}")
