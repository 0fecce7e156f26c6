"""A task's secrets as files on a tmpfs of their own, for the container to bind read-only at /run/secrets.

As Docker's swarm executor: the node mounts a small tmpfs per task (memory only: the bytes never reach a
disk, not even swap-backed page cache of a file system), writes each secret with its File.Name, UID, GID and
Mode, remounts it read-only, and the runtime binds it into the container. The mount point lives in the task's
directory on the node, which no container can see; it is unmounted when the task is released.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RaftswarmError

SECRETS_DIR = "/run/secrets"
TMPFS_MARGIN = 64 * 1024
"""Room beyond the secrets' own pages; the tmpfs is read-only once written, so this only absorbs rounding."""
MAX_SECRET_FILES = 1000
"""More secrets than this in one task is not a real service; the bound keeps one task's tmpfs small."""

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MNT_DETACH = 2
_FLAGS = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class InvalidSecretTarget(RaftswarmError):
    """A secret reference of the task cannot become a file under /run/secrets; the task is rejected."""


@dataclass(frozen=True)
class SecretFile:
    path: str
    """Relative to /run/secrets."""
    uid: int
    gid: int
    mode: int
    data: bytes


def secret_files(container_spec: Mapping[str, Any], secrets: Mapping[str, bytes]) -> list[SecretFile]:
    """The files of the task's secret references (ContainerSpec.Secrets), `secrets` mapping secret ID to data.
    Raises InvalidSecretTarget for a reference that was not delivered or whose target is not a file name."""
    files: dict[str, SecretFile] = {}
    for ref in container_spec.get("Secrets") or []:
        target = ref.get("File")
        if not target:
            continue  # a runtime target (a credential spec), not a file
        secret = ref.get("SecretName") or ref.get("SecretID")
        if ref.get("SecretID") not in secrets:
            raise InvalidSecretTarget(f"secret {secret} ({ref.get('SecretID')}) was not delivered to this node with the task")
        path = target_path(target.get("Name") or ref.get("SecretName") or "")
        if path in files:
            raise InvalidSecretTarget(f"two secrets of the task target the same file {SECRETS_DIR}/{path}")
        try:
            uid, gid = int(target.get("UID") or 0), int(target.get("GID") or 0)
        except ValueError:
            raise InvalidSecretTarget(f"secret {secret}: File.UID and File.GID must be numeric") from None
        mode = target.get("Mode")
        files[path] = SecretFile(path, uid, gid, 0o444 if mode is None else int(mode) & 0o7777, secrets[ref["SecretID"]])
    for path in files:
        parent = os.path.dirname(path)
        while parent:
            if parent in files:
                raise InvalidSecretTarget(
                    f"secret targets {SECRETS_DIR}/{parent} and {SECRETS_DIR}/{path} conflict: "
                    f"the first would have to be a directory"
                )
            parent = os.path.dirname(parent)
    if len(files) > MAX_SECRET_FILES:
        raise InvalidSecretTarget(f"a task can have at most {MAX_SECRET_FILES} secret files")
    return list(files.values())


def target_path(name: str) -> str:
    """The path of a secret's target file relative to /run/secrets: a relative name, or an absolute one
    under /run/secrets (Docker places absolute targets elsewhere too; here they must be under it)."""
    if name.startswith("/"):
        relative = os.path.relpath(os.path.normpath(name), SECRETS_DIR)
        if relative == ".." or relative.startswith("../"):
            raise InvalidSecretTarget(f"secret target {name} is outside {SECRETS_DIR}: give a relative name")
    else:
        relative = os.path.normpath(name)
    if relative in ("", ".") or relative == ".." or relative.startswith("../"):
        raise InvalidSecretTarget(f"invalid secret target file name {name!r}")
    return relative


def mount_secrets(directory: Path, files: Sequence[SecretFile]) -> None:
    """Mount a tmpfs at `directory` (made if missing), write `files` there and make it read-only."""
    page = os.sysconf("SC_PAGE_SIZE")
    size = TMPFS_MARGIN + sum(-(-len(f.data) // page) * page for f in files)
    directory.mkdir(mode=0o700, exist_ok=True)
    _mount(b"tmpfs", directory, b"tmpfs", _FLAGS, f"mode=0755,size={size}".encode())
    try:
        for file in files:
            _write(directory, file)
        _mount(None, directory, None, _MS_REMOUNT | _MS_RDONLY | _FLAGS, None)
    except BaseException:
        unmount_secrets(directory)
        raise


def unmount_secrets(directory: Path) -> None:
    """Unmount the task's secrets tmpfs (lazily if a process still holds it) and remove its mount point.
    Does nothing if it is not mounted."""
    path = os.fsencode(directory)
    while os.path.ismount(directory):
        if _libc.umount2(path, _MNT_DETACH) != 0:
            error = ctypes.get_errno()
            if error == errno.EINVAL:
                break
            raise OSError(error, f"cannot unmount {directory}: {os.strerror(error)}")
    try:
        directory.rmdir()
    except FileNotFoundError:
        pass


def _write(directory: Path, file: SecretFile) -> None:
    path = directory / file.path
    if path.parent != directory:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(file.data)
        while view:
            view = view[os.write(fd, view):]
        os.fchown(fd, file.uid, file.gid)
        os.fchmod(fd, file.mode)
    finally:
        os.close(fd)


def _mount(source: bytes | None, target: Path, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _libc.mount(source, os.fsencode(target), fstype, flags, data) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot mount the secrets tmpfs at {target}: {os.strerror(error)}")
