"""A node's volumes -- Docker's `local` volume driver and volume service -- and a task's mounts made real on the
node: bind sources checked, volumes created on first use, mounted and filled from the image.

Layout under the store's root (`<state-dir>/volumes`, as Docker's /var/lib/docker/volumes; no task sees it):

    <name>/_data          the volume's data, which a task mounts (made 0755, root's). With driver options
                          type/o/device, what they name is mounted here while some task uses the volume, and
                          unmounted when the last one is released (the local driver's Mount and Unmount)
    <name>/volume.json    Labels, Options, CreatedAt, and the tasks using it (task ID -> container ID): what makes
                          it "in use". Rewritten whole, atomically.

Docker's behaviour, followed:

- a named volume is created on a task's first use with its mount's VolumeOptions (Labels, DriverConfig.Options),
  as swarmkit's container adapter and dockerd do; an existing one is used as it is. A volume outlives its tasks.
- an anonymous volume (a volume mount without a Source, an image VOLUME no mount covers) gets a random 64-hex
  name and the com.docker.volume.anonymous label, and is removed with its task: swarmkit removes a task's
  container with RemoveVolume, which removes the anonymous volumes it made (daemon/mounts.go removeMountPoints).
- a new volume that is empty is filled from the image's directory at the target unless VolumeOptions.NoCopy
  (moby's copyExistingContents: owners, modes, times, extended attributes, symlinks and hard links kept, the
  directory's own owner and mode given to the volume); a volume with anything in it is left as it is.
- `docker volume rm` of a volume in use is refused ("remove NAME: volume is in use - [container IDs]"); `--force`
  only makes an unknown name no error. Prune removes unused local volumes without driver options, only the
  anonymous ones unless the `all` filter is true (Docker 23), and says how many bytes it freed.

Where raftswarm is stricter, on purpose (DESIGN, security property 5: a task sees nothing of its node):

- a bind source (or a bind-like volume's device) that is, is inside or contains one of the node's protected
  directories (its state directory, its API socket's directory, this store) is refused, and so is one on a proc
  file system: /proc/<pid>/root reaches every file of the node. Sources are resolved (symlinks followed on the
  node) before the check, and the resolved path is what is mounted: pinned (`pin_bind_source`), so that a
  directory swapped for a symlink between the check and the mount -- by a task that can write next to it -- fails
  the pin or is not followed. A local volume's device is mounted through the node's descriptor of it; a task's
  bind is first bound from that descriptor into its task directory, where no task can change anything, and the
  runtime binds it from there (it mounts in the container's own mount namespace, where the node's descriptor, of
  a mount in the node's, cannot be mounted).
- driver options mount only a tmpfs or a bind of a node directory (`objects.volumes`).

How the node touches what tasks wrote: never through a symlink. Copying up, the image's directory is found as
the task would see it (openat2 RESOLVE_IN_ROOT: a symlink in the image cannot lead out of its root), and every
file is created with O_EXCL|O_NOFOLLOW in directories held open, so a task sharing the volume cannot redirect a
write; sizing and removing walk with lstat and O_NOFOLLOW, never across a mount, at any depth.

Thread safety: methods do disk I/O synchronously (call them with asyncio.to_thread); one lock guards the index,
a lock per volume its mounts, users and files.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import platform
import re
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ControlError
from ..objects.volumes import ANONYMOUS_LABEL, LOCAL_DRIVER, binds_device, local_options_problem, volume_name_problem
from .ociruntime import RUNTIME
from .mounts import (
    BIND,
    TMPFS,
    InvalidMount,
    MountInfo,
    MountPoint,
    in_mount_order,
    mount_of,
    oci_mount,
    parse_mountinfo,
    plan_mounts,
    propagation_problem,
    rootfs_propagation,
    within,
)

log = logging.getLogger(__name__)

DATA_DIR = "_data"
METADATA_FILE = "volume.json"
SCOPE = "local"

COPY_MAX_DEPTH = 256
"""How deep an image directory copied into a new volume may nest. The copy holds two descriptors per level (so
that nothing is reached by path), and real images nest a few dozen levels; a deeper one is refused with a
message rather than running the node out of descriptors."""
COPY_CHUNK = 1 << 20

_RUNTIME = RUNTIME
"""The OCI runtime `runtime.containers` runs; asked whether it knows recursively read-only mounts (`features`,
which crun 1.8 does not have: then none are made recursively read-only)."""
_RRO_KERNEL = (5, 12)
"""mount_setattr(2), which rro needs, came with Linux 5.12."""

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long

_MNT_DETACH = 2
_AT_FDCWD = -100
_SYS_OPENAT2 = 437  # the same number on every architecture
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH, _RESOLVE_IN_ROOT = 0x02, 0x04, 0x08, 0x10

# mount(2) flags, and moby/sys/mount's names for them: (clears the flag, flag).
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_SYNCHRONOUS, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
_MS_MANDLOCK, _MS_DIRSYNC, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC = 0x40, 0x80, 0x400, 0x800, 0x1000, 0x4000
_MS_SILENT, _MS_UNBINDABLE, _MS_PRIVATE, _MS_SLAVE, _MS_SHARED = 0x8000, 1 << 17, 1 << 18, 1 << 19, 1 << 20
_MS_RELATIME, _MS_STRICTATIME = 1 << 21, 1 << 24
_MOUNT_FLAGS = {
    "ro": (False, _MS_RDONLY), "rw": (True, _MS_RDONLY), "suid": (True, _MS_NOSUID), "nosuid": (False, _MS_NOSUID),
    "dev": (True, _MS_NODEV), "nodev": (False, _MS_NODEV), "exec": (True, _MS_NOEXEC), "noexec": (False, _MS_NOEXEC),
    "sync": (False, _MS_SYNCHRONOUS), "async": (True, _MS_SYNCHRONOUS), "dirsync": (False, _MS_DIRSYNC),
    "remount": (False, _MS_REMOUNT), "mand": (False, _MS_MANDLOCK), "nomand": (True, _MS_MANDLOCK),
    "atime": (True, _MS_NOATIME), "noatime": (False, _MS_NOATIME), "diratime": (True, _MS_NODIRATIME),
    "nodiratime": (False, _MS_NODIRATIME), "bind": (False, _MS_BIND), "rbind": (False, _MS_BIND | _MS_REC),
    "unbindable": (False, _MS_UNBINDABLE), "runbindable": (False, _MS_UNBINDABLE | _MS_REC),
    "private": (False, _MS_PRIVATE), "rprivate": (False, _MS_PRIVATE | _MS_REC), "shared": (False, _MS_SHARED),
    "rshared": (False, _MS_SHARED | _MS_REC), "slave": (False, _MS_SLAVE), "rslave": (False, _MS_SLAVE | _MS_REC),
    "relatime": (False, _MS_RELATIME), "norelatime": (True, _MS_RELATIME), "strictatime": (False, _MS_STRICTATIME),
    "nostrictatime": (True, _MS_STRICTATIME),
}
_PROPAGATION_TYPES = _MS_SHARED | _MS_PRIVATE | _MS_SLAVE | _MS_UNBINDABLE


class VolumeError(ControlError):
    """A volume request that cannot be done as asked; `status` is the API's answer (400 unless said)."""


class NoSuchVolume(VolumeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class VolumeInUse(VolumeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


def _now() -> str:
    return _rfc3339(datetime.now().astimezone())


def _rfc3339(when: datetime) -> str:
    """Go's time.RFC3339 in the node's zone, as Docker shows a volume's CreatedAt: seconds, Z for UTC."""
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class _Volume:
    def __init__(self, name: str, directory: Path, metadata: Mapping[str, Any]) -> None:
        self.name = name
        self.directory = directory
        self.data = directory / DATA_DIR
        self.labels: dict[str, str] | None = metadata.get("Labels")
        self.options: dict[str, str] | None = metadata.get("Options")
        self.created_at: str = metadata.get("CreatedAt") or ""
        self.users: dict[str, dict[str, Any]] = dict(metadata.get("Users") or {})
        """Task ID -> {"ContainerID", "RemoveWithTask"}: who uses the volume, and whether their release removes it."""
        self.mounted = False
        self.removed = False
        self.lock = threading.Lock()

    @property
    def needs_mount(self) -> bool:
        return bool(self.options and (self.options.get("type") or self.options.get("device")))

    def metadata(self) -> dict[str, Any]:
        return {
            "Name": self.name, "Driver": LOCAL_DRIVER, "Labels": self.labels, "Options": self.options,
            "CreatedAt": self.created_at, "Users": self.users,
        }

    def view(self) -> dict[str, Any]:
        """Docker's Volume object (`docker volume inspect`); the local driver has no Status."""
        return {
            "CreatedAt": self.created_at, "Driver": LOCAL_DRIVER, "Labels": self.labels, "Mountpoint": str(self.data),
            "Name": self.name, "Options": self.options, "Scope": SCOPE,
        }


class VolumeStore:
    """The volumes of one node, kept under `root`. `protected` maps the node's directories no task may see
    (state directory, API socket directory) to what they are, for the messages; the store's root is always one."""

    def __init__(self, root: Path, *, protected: Mapping[str | Path, str] | None = None) -> None:
        Path(root).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = Path(root).resolve()
        self.protected = {str(Path(path).resolve()): what for path, what in (protected or {}).items()}
        self.protected.setdefault(str(self.root), "the node's volume store")
        self._lock = threading.Lock()
        self._pruning = threading.Lock()
        self._volumes: dict[str, _Volume] = {}
        mounted = {mount.mount_point for mount in _mount_table()}
        for entry in sorted(os.scandir(self.root), key=lambda entry: entry.name):
            if entry.is_dir(follow_symlinks=False) and volume_name_problem(entry.name) is None:
                volume = self._load(entry.name)
                if volume is not None:
                    volume.mounted = str(volume.data) in mounted
                    self._volumes[volume.name] = volume
        for volume in self._volumes.values():
            if volume.mounted and not volume.users:  # what a node that died while tasks used it left
                self._unmount_quietly(volume)

    def _load(self, name: str) -> _Volume | None:
        directory = self.root / name
        try:
            metadata = json.loads((directory / METADATA_FILE).read_text())
        except (OSError, ValueError):
            if not (directory / DATA_DIR).is_dir():
                return None
            # Made by a node that stopped before writing its record: a volume with nothing said of it.
            created = datetime.fromtimestamp(os.lstat(directory).st_ctime).astimezone()
            volume = _Volume(name, directory, {"CreatedAt": _rfc3339(created)})
            self._save(volume)
            return volume
        return _Volume(name, directory, metadata if isinstance(metadata, dict) else {})

    # -- Docker's volume API ------------------------------------------------------------------------------

    def create(
        self, name: str = "", driver: str = "", options: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """`docker volume create`: the new volume, or the existing one of that name as it is. Without a name, a
        new anonymous volume."""
        return self._create(name, driver, options, labels).view()

    def inspect(self, name: str) -> dict[str, Any]:
        return self._get(name).view()

    def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """`docker volume ls`: the volumes matching Docker's filters dangling, name (a regular expression),
        driver and label, by name."""
        filters = filters or {}
        _check_filters(filters, ("dangling", "name", "driver", "label"))
        dangling = _bool_filter(filters, "dangling")
        with self._lock:
            volumes = sorted(self._volumes.values(), key=lambda volume: volume.name)
        return [
            volume.view()
            for volume in volumes
            if ("driver" not in filters or LOCAL_DRIVER in filters["driver"])
            and ("name" not in filters or any(_name_matches(volume.name, wanted) for wanted in filters["name"]))
            and _labels_match(volume.labels, filters.get("label", ()))
            and (dangling is None or dangling == (not volume.users))
        ]

    def remove(self, name: str, force: bool = False) -> None:
        """`docker volume rm`: refused while a task uses the volume. `force` makes an unknown name no error."""
        with self._lock:
            volume = self._volumes.get(name)
        if volume is None:
            if force:
                return
            raise NoSuchVolume(f"get {name}: no such volume")
        with volume.lock:
            if volume.removed:
                if force:
                    return
                raise NoSuchVolume(f"get {name}: no such volume")
            if volume.users:
                containers = ", ".join(sorted(user["ContainerID"] for user in volume.users.values()))
                raise VolumeInUse(f"remove {name}: volume is in use - [{containers}]")
            self._destroy(volume)

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """`docker volume prune`: remove the unused local volumes without driver options that match the filters
        label and label!; only anonymous ones unless the filter all is true."""
        filters = filters or {}
        _check_filters(filters, ("label", "label!", "all"))
        everything = filters.get("all") or []
        if len(everything) > 1:
            raise VolumeError(f"invalid filter 'all={everything}': only one value is expected")
        prune_all = _parse_bool(everything[0], "all") if everything else False
        if not self._pruning.acquire(blocking=False):
            raise VolumeError("a prune operation is already running", 409)
        try:
            with self._lock:
                candidates = sorted(self._volumes.values(), key=lambda volume: volume.name)
            deleted, reclaimed = [], 0
            for volume in candidates:
                labels = volume.labels or {}
                if volume.options or (not prune_all and ANONYMOUS_LABEL not in labels):
                    continue
                if not _labels_match(labels, filters.get("label", ())):
                    continue
                if filters.get("label!") and _labels_match(labels, filters["label!"]):
                    continue
                with volume.lock:
                    if volume.removed or volume.users:
                        continue
                    try:
                        size = tree_size(volume.data)
                        self._destroy(volume)
                    except (OSError, VolumeError) as exc:
                        log.warning("volume %s: not pruned: %s", volume.name, exc)
                        continue
                deleted.append(volume.name)
                reclaimed += size
            return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}
        finally:
            self._pruning.release()

    # -- tasks ------------------------------------------------------------------------------------------------

    def mount(
        self,
        name: str,
        *,
        user: str,
        container_id: str,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        remove_with_user: bool = False,
        fill: Callable[[Path], None] | None = None,
    ) -> Path:
        """The data directory of volume `name` (created with `labels` and `options` if new; a new anonymous one
        if ""), now used by task `user` until `release(user)`: its device mounted if it has one, then `fill`
        called with it (copy-up), one task at a time."""
        while True:
            volume = self._create(name, "", options, labels)
            with volume.lock:
                if volume.removed:  # removed between finding it and locking it: make it again
                    continue
                volume.users[user] = {"ContainerID": container_id, "RemoveWithTask": remove_with_user}
                self._save(volume)
                if volume.needs_mount and not volume.mounted:
                    self._mount_device(volume)
                if fill is not None:
                    fill(volume.data)
                return volume.data

    def release(self, user: str) -> None:
        """Task `user` no longer uses its volumes: unmount the devices nobody uses any more, remove the anonymous
        volumes it made (unless another task uses one)."""
        with self._lock:
            used = [volume for volume in self._volumes.values() if user in volume.users]
        for volume in used:
            with volume.lock:
                entry = volume.users.pop(user, None)
                if entry is None or volume.removed:
                    continue
                if not volume.users and volume.mounted:
                    self._unmount_quietly(volume)
                self._save(volume)
            if entry.get("RemoveWithTask"):
                try:
                    self.remove(volume.name)
                except VolumeInUse:
                    pass  # as Docker: another container uses it, which is not an error of this one
                except (OSError, VolumeError) as exc:
                    log.warning("anonymous volume %s of task %s: %s", volume.name, user, exc)

    def keep_users(self, users: Sequence[str]) -> None:
        """Forget every user of a volume but `users` (the tasks that still have a container on this node)."""
        with self._lock:
            volumes = list(self._volumes.values())
        for volume in volumes:
            gone = [user for user in volume.users if user not in users]
            for user in gone:
                self.release(user)

    def pin_bind_source(self, source: str, *, create: bool = False, kind: str = BIND) -> Pinned:
        """`bind_source`, held: the checked path opened (O_PATH) through no symlink, and still that path once
        open. A mount of `Pinned.path` mounts what was checked, whatever has been renamed or swapped since.
        Close it once the mount is made (with the container). Raises InvalidMount."""
        real = self.bind_source(source, create=create, kind=kind)
        try:
            fd = _openat2(_AT_FDCWD, real, os.O_PATH, _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            raise InvalidMount(
                f'invalid mount config for type "{kind}": bind source path {source} changed while it was checked: '
                f"{exc.strerror}"
            ) from None
        pinned = Pinned(real, fd)
        if os.readlink(pinned.path) != real:  # a directory on the way was renamed meanwhile
            pinned.close()
            raise InvalidMount(f'invalid mount config for type "{kind}": bind source path {source} changed while it was checked')
        return pinned

    def bind_source(self, source: str, *, create: bool = False, kind: str = BIND) -> str:
        """The node path a bind of `source` mounts: resolved, checked against the protected directories and proc
        file systems, and there (made with `create`, as BindOptions.CreateMountpoint). Raises InvalidMount."""

        def invalid(problem: str) -> InvalidMount:
            return InvalidMount(f'invalid mount config for type "{kind}": {problem}')

        try:
            real = os.path.realpath(source)
        except OSError as exc:
            raise invalid(f"cannot resolve bind source path {source}: {exc.strerror}") from None
        shown = source if real == source else f"{source} (which is {real})"
        for path, what in self.protected.items():
            relation = "is" if real == path else "is inside" if within(real, path) else "contains" if within(path, real) else ""
            if relation:
                raise invalid(f"bind source path {shown} {relation} {what}, {path}: a task sees nothing of its node")
        table = _mount_table()
        on = mount_of(real, table)
        if (on is not None and on.fstype == "proc") or any(m.fstype == "proc" and within(m.mount_point, real) for m in table):
            raise invalid(
                f"bind source path {shown} is or contains a proc file system, through which a task would reach every "
                "process and file of the node"
            )
        if not os.path.exists(real):
            if not create:
                raise invalid(f"bind source path does not exist: {source}")
            os.makedirs(real, mode=0o755, exist_ok=True)
        return real

    # -- inside ---------------------------------------------------------------------------------------------

    def _get(self, name: str) -> _Volume:
        with self._lock:
            volume = self._volumes.get(name)
        if volume is None or volume.removed:
            raise NoSuchVolume(f"get {name}: no such volume")
        return volume

    def _create(
        self, name: str, driver: str, options: Mapping[str, str] | None, labels: Mapping[str, str] | None
    ) -> _Volume:
        if driver not in ("", LOCAL_DRIVER):
            raise VolumeError(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found', 404)
        if not name:
            name = secrets.token_hex(32)
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        problem = volume_name_problem(name)
        if problem is not None:
            raise VolumeError(f"create {name}: {problem}")
        with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing
            if options and (problem := local_options_problem(options)):
                raise VolumeError(f"create {name}: {problem}")
            if options and binds_device(options):
                try:
                    self.bind_source(options.get("device", ""), kind="volume")
                except InvalidMount as exc:
                    if "does not exist" not in str(exc):  # Docker mounts the device only when a task uses it
                        raise VolumeError(f"create {name}: {exc}") from None
            volume = _Volume(
                name,
                self.root / name,
                {"Labels": dict(labels) if labels is not None else None,
                 "Options": dict(options) if options is not None else None, "CreatedAt": _now()},
            )
            volume.directory.mkdir(mode=0o701, exist_ok=True)
            volume.data.mkdir(mode=0o755, exist_ok=True)
            os.chmod(volume.data, 0o755)
            try:
                self._save(volume)
            except OSError:
                shutil.rmtree(volume.directory, ignore_errors=True)  # just made, empty: nothing of a task's
                raise
            self._volumes[name] = volume
            return volume

    def _save(self, volume: _Volume) -> None:
        path = volume.directory / METADATA_FILE
        temp = path.with_name(METADATA_FILE + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(volume.metadata(), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)

    def _mount_device(self, volume: _Volume) -> None:
        """The local driver's Mount: what the options name, at the volume's data directory (moby/sys/mount.Mount:
        the flags, then the propagation, then a read-only bind remounted read-only)."""
        options = volume.options or {}
        flags, data = _mount_flags(options.get("o", ""))
        device = options.get("device", "")
        if flags & _MS_BIND:
            with self.pin_bind_source(device, kind="volume") as pinned:
                self._mount_at_data(volume, flags, data, pinned.real, pinned.path)
            return
        self._mount_at_data(volume, flags, data, device, device)

    def _mount_at_data(self, volume: _Volume, flags: int, data: str, device: str, source: str) -> None:
        """Mount `source` (named `device` in errors) at the volume's data directory, as `_mount_device` says."""
        fstype = (volume.options or {}).get("type", "")
        target = os.fsencode(volume.data)
        plain = flags & ~_PROPAGATION_TYPES
        steps = []
        if not flags & _MS_REMOUNT or data:
            steps.append((source.encode(), fstype.encode(), plain, data.encode()))
        if flags & _PROPAGATION_TYPES:
            steps.append((b"", b"", flags & (_PROPAGATION_TYPES | _MS_REC | _MS_SILENT), b""))
        if plain & (_MS_BIND | _MS_RDONLY) == _MS_BIND | _MS_RDONLY:
            steps.append((b"", b"", plain | _MS_REMOUNT, b""))
        for step, (source, kind, step_flags, step_data) in enumerate(steps):
            if _libc.mount(source or None, target, kind or None, step_flags, step_data or None) != 0:
                error = ctypes.get_errno()
                if step > 0:  # mounted, but not as asked
                    _unmount(volume.data)
                what = f"{device}:{volume.data}" if device else str(volume.data)
                detail = f", flags: 0x{step_flags:x}" + (f", data: {data}" if step_data else "")
                raise VolumeError(
                    f"error while mounting volume '{volume.name}': failed to mount local volume: mount {what}{detail}: "
                    f"{os.strerror(error).lower()}",
                    500,
                )
        volume.mounted = True

    def _unmount_quietly(self, volume: _Volume) -> None:
        try:
            _unmount(volume.data)
            volume.mounted = False
        except OSError as exc:  # as Docker: nothing more can be done; removing the volume will say so
            log.warning("volume %s: %s", volume.name, exc)

    def _destroy(self, volume: _Volume) -> None:
        """Delete an unused volume (its lock held): unmount its device, then its files, never across a mount."""
        if volume.mounted:
            _unmount(volume.data)
            volume.mounted = False
        for mount in _mount_table():
            if within(mount.mount_point, str(volume.directory)):
                raise VolumeError(f"remove {volume.name}: {mount.mount_point} is mounted; unmount it first", 500)
        remove_tree(volume.directory)
        volume.removed = True
        with self._lock:
            self._volumes.pop(volume.name, None)


# -- a task's mounts ----------------------------------------------------------------------------------------


@dataclass
class Pinned:
    """A checked bind source held open (`VolumeStore.pin_bind_source`): `real` is its path as checked, `path`
    the node's descriptor of it, which a mount in the node's mount namespace follows to the very directory or
    file that was checked."""

    real: str
    fd: int
    staged: Path | None = None

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def stage(self, at: Path) -> str:
        """Bind what is pinned (recursively, as the task's own bind will be) at `at`, made for it in a directory
        of the node's; returns that path, which `close` unmounts."""
        if stat.S_ISDIR(os.stat(self.path).st_mode):
            at.mkdir(mode=0o700)
        else:
            at.touch(mode=0o600, exist_ok=False)
        if _libc.mount(os.fsencode(self.path), os.fsencode(at), None, _MS_BIND | _MS_REC, None) != 0:
            raise InvalidMount(f"cannot bind mount source path {self.real}: {os.strerror(ctypes.get_errno()).lower()}")
        self.staged = at
        return str(at)

    def close(self) -> None:
        if self.staged is not None:
            _unmount(self.staged)
            self.staged = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Pinned:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class TaskMounts:
    """What a task's container mounts besides Docker's defaults: OCI mounts in mount order, and the root
    propagation they need (None: the runtime's). Its binds' sources are `pinned`: keep it open until the container
    is created (its mounts made), then `close` it."""

    mounts: list[dict[str, Any]]
    rootfs_propagation: str | None
    pinned: list[Pinned] = field(default_factory=list)

    def close(self) -> None:
        for pinned in self.pinned:
            pinned.close()
        self.pinned = []


def task_mounts(
    store: VolumeStore,
    *,
    task_id: str,
    container_id: str,
    mounts: Sequence[Mapping[str, Any]],
    image_volumes: Sequence[str],
    rootfs: Path,
    staging: Path,
) -> TaskMounts:
    """Make the mounts of a task (ContainerSpec.Mounts, templates expanded, and the image's VOLUMEs) ready on this
    node: binds checked, volumes created, mounted and filled from the task's root file system `rootfs`. The volumes
    count as used by `task_id` -- also when this raises -- until `store.release(task_id)`. Raises InvalidMount or
    VolumeError with the message the task is rejected with. Binds are staged in `staging`, a directory of the
    node's that no task sees: close what this returns once the container is created."""
    points = plan_mounts(mounts, image_volumes)
    recursive_readonly = any(point.readonly for point in points) and recursive_readonly_supported()
    made = []
    pinned: list[Pinned] = []
    try:
        for point in points:
            made.append(_task_mount(store, point, task_id, container_id, rootfs, recursive_readonly, pinned, staging))
    except BaseException:
        for held in pinned:
            held.close()
        raise
    return TaskMounts(in_mount_order(made), rootfs_propagation(points), pinned)


def _task_mount(
    store: VolumeStore, point: MountPoint, task_id: str, container_id: str, rootfs: Path, recursive_readonly: bool,
    pinned: list[Pinned], staging: Path,
) -> dict[str, Any]:
    """The OCI mount of one of `task_mounts`' points, its bind source pinned and staged (added to `pinned`)."""
    if point.type == TMPFS:
        source = "tmpfs"
    elif point.type == BIND:
        held = store.pin_bind_source(point.source, create=point.create_source)
        pinned.append(held)
        problem = propagation_problem(held.real, point.propagation, _mount_table())
        if problem is not None:
            raise InvalidMount(problem)
        staging.mkdir(mode=0o700, exist_ok=True)
        source = held.stage(staging / str(len(pinned)))
    else:
        fill = None
        if point.copy_data:
            fill = functools.partial(fill_from_image, rootfs, point.destination, from_image=point.from_image)
        source = str(
            store.mount(
                point.source, user=task_id, container_id=container_id, labels=point.labels,
                options=point.driver_options, remove_with_user=point.anonymous, fill=fill,
            )
        )
    return oci_mount(point, source, recursive_readonly=recursive_readonly)


def fill_from_image(rootfs: Path, destination: str, volume: Path, *, from_image: bool = False) -> None:
    """moby's populateVolume: if `volume` is empty and the task's root file system has a directory at
    `destination` (as the task sees it: symlinks resolved inside `rootfs`), copy that directory into it. An
    image VOLUME over a file is an error, as in Docker."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            found = _open_in_root(root, destination, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            if not stat.S_ISDIR(os.fstat(found).st_mode):
                if from_image:
                    raise InvalidMount(f"cannot mount volume over existing file, file exists {destination}")
                return
            source = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=found)
        finally:
            os.close(found)
    finally:
        os.close(root)
    try:
        target = os.open(volume, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not os.listdir(target):
                copy_tree(source, target)
        except OSError as exc:
            raise InvalidMount(f"cannot copy {destination} of the image into volume {volume.parent.name}: {exc}") from None
        finally:
            os.close(target)
    finally:
        os.close(source)


# -- files: copying in, sizing, removing --------------------------------------------------------------------


def copy_tree(source: int, target: int) -> None:
    """Copy the directory open as `source` into the empty directory open as `target` (continuity's CopyDir, as
    Docker's copy-up uses it): subdirectories, regular files (hard links kept), symlinks (copied, not followed),
    device nodes and FIFOs, each with its owner, mode, times and extended attributes; the source's own owner, mode
    and times go to `target`. Sockets are skipped. Everything is made with O_EXCL or its equivalent inside
    directories held open, so a concurrent change of `target` fails the copy instead of redirecting it."""
    links: dict[tuple[int, int], tuple[str, tuple[int, int]]] = {}
    stack = [(source, target, sorted(os.listdir(source), reverse=True), "", os.fstat(source))]
    try:
        while stack:
            here, there, pending, relative, info = stack[-1]
            if not pending:
                _copy_metadata(here, there, info)
                stack.pop()
                if stack:
                    os.close(here)
                    os.close(there)
                continue
            name = pending.pop()
            entry = os.stat(name, dir_fd=here, follow_symlinks=False)
            path = f"{relative}/{name}" if relative else name
            if stat.S_ISDIR(entry.st_mode):
                if len(stack) > COPY_MAX_DEPTH:
                    raise OSError(errno.ELOOP, f"directories nest more than {COPY_MAX_DEPTH} deep", path)
                os.mkdir(name, 0o700, dir_fd=there)
                inner_source = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=here)
                try:
                    inner_target = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=there)
                except BaseException:
                    os.close(inner_source)
                    raise
                stack.append((inner_source, inner_target, sorted(os.listdir(inner_source), reverse=True), path, entry))
            elif stat.S_ISREG(entry.st_mode):
                _copy_file(here, there, name, entry, path, links, target)
            elif stat.S_ISLNK(entry.st_mode):
                os.symlink(os.readlink(name, dir_fd=here), name, dir_fd=there)
                os.chown(name, entry.st_uid, entry.st_gid, dir_fd=there, follow_symlinks=False)
                os.utime(name, ns=(entry.st_atime_ns, entry.st_mtime_ns), dir_fd=there, follow_symlinks=False)
            elif stat.S_ISCHR(entry.st_mode) or stat.S_ISBLK(entry.st_mode) or stat.S_ISFIFO(entry.st_mode):
                os.mknod(name, entry.st_mode, entry.st_rdev, dir_fd=there)
                made = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=there)
                try:
                    if stat.S_IFMT(os.fstat(made).st_mode) != stat.S_IFMT(entry.st_mode):
                        raise OSError(errno.EEXIST, "replaced while it was copied", path)
                    # Through the descriptor: chmod has no way not to follow a symlink put in its place meanwhile.
                    handle = f"/proc/self/fd/{made}"
                    os.chown(handle, entry.st_uid, entry.st_gid)
                    os.chmod(handle, stat.S_IMODE(entry.st_mode))
                    os.utime(handle, ns=(entry.st_atime_ns, entry.st_mtime_ns))
                finally:
                    os.close(made)
    finally:
        for here, there, *_ in stack[1:]:
            os.close(here)
            os.close(there)


def _copy_file(
    here: int, there: int, name: str, entry: os.stat_result, path: str,
    links: dict[tuple[int, int], tuple[str, tuple[int, int]]], target_root: int,
) -> None:
    key = (entry.st_dev, entry.st_ino)
    if entry.st_nlink > 1 and key in links and _link_again(target_root, *links[key], there, name):
        return
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=here)
    try:
        made = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=there)
        try:
            _copy_data(source, made)
            _copy_metadata(source, made, entry)
            copied = os.fstat(made)
        finally:
            os.close(made)
    finally:
        os.close(source)
    if entry.st_nlink > 1:
        links[key] = (path, (copied.st_dev, copied.st_ino))


def _link_again(target_root: int, path: str, copied: tuple[int, int], there: int, name: str) -> bool:
    """Hard-link the copy made at `path` (if it is still that file) as `name`; False if it cannot be."""
    try:
        made = _open_beneath(target_root, path)
    except OSError:
        return False
    try:
        found = os.fstat(made)
        if (found.st_dev, found.st_ino) != copied:
            return False
        os.link(f"/proc/self/fd/{made}", name, dst_dir_fd=there)
        return True
    except OSError:
        return False
    finally:
        os.close(made)


def _copy_data(source: int, target: int) -> None:
    while True:
        try:
            if os.copy_file_range(source, target, COPY_CHUNK) == 0:
                return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            break
    while chunk := os.read(source, COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]


def _copy_metadata(source: int, target: int, info: os.stat_result) -> None:
    """Extended attributes, owner, then mode (a chown clears set-ID bits), then times, from `source` to `target`."""
    for attribute in os.listxattr(source):
        try:
            os.setxattr(target, attribute, os.getxattr(source, attribute))
        except OSError as exc:
            if exc.errno != errno.ENOTSUP:  # as Docker: a file system without them loses them
                raise
    os.chown(target, info.st_uid, info.st_gid)
    os.chmod(target, stat.S_IMODE(info.st_mode))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def _walk(root: Path) -> Iterator[tuple[int, str, os.stat_result]]:
    """Every entry under the directory `root`, each after what it contains, as (descriptor of its directory, its
    name, its lstat), so the caller may delete it. Never follows a symlink and never enters another file system;
    holds two descriptors at most (going back up through ".."), so a tree any task made is walked whatever its
    depth. The tree must not change meanwhile (a volume no task uses)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    top = os.fstat(fd)
    stack: list[tuple[str, os.stat_result, list[str]]] = [("", top, os.listdir(fd))]
    try:
        while stack:
            name_in_parent, info, pending = stack[-1]
            if pending:
                name = pending.pop()
                try:
                    entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(entry.st_mode):
                    yield fd, name, entry
                    continue
                if entry.st_dev != top.st_dev:
                    raise OSError(errno.EXDEV, "another file system is mounted here", name)
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                if _identity(os.fstat(inner)) != _identity(entry):
                    os.close(inner)
                    raise OSError(errno.ESTALE, "replaced while it was walked", name)
                os.close(fd)
                fd = inner
                stack.append((name, entry, os.listdir(fd)))
                continue
            stack.pop()
            if not stack:
                return
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            if _identity(os.fstat(parent)) != _identity(stack[-1][1]):
                os.close(parent)
                raise OSError(errno.ESTALE, "moved while it was walked", name_in_parent)
            os.close(fd)
            fd = parent
            yield fd, name_in_parent, info
    finally:
        os.close(fd)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def tree_size(root: Path) -> int:
    """The bytes of the files under `root`, each hard-linked file once (moby's directory.Size); 0 if it is gone."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        for _, _, entry in _walk(root):
            if stat.S_ISDIR(entry.st_mode) or (entry.st_nlink > 1 and _identity(entry) in seen):
                continue
            seen.add(_identity(entry))
            total += entry.st_size
    except FileNotFoundError:
        return 0
    return total


def remove_tree(root: Path) -> None:
    """Delete the directory `root` and everything under it, without following a symlink or leaving its file
    system (`_walk`)."""
    try:
        for directory, name, entry in _walk(root):
            if stat.S_ISDIR(entry.st_mode):
                os.rmdir(name, dir_fd=directory)
            else:
                os.unlink(name, dir_fd=directory)
    except FileNotFoundError:
        return
    os.rmdir(root)


# -- the kernel -----------------------------------------------------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(directory: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(directory), ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error), path)
    return fd


def _open_in_root(root: int, path: str, flags: int) -> int:
    """`path` opened as a process whose root is `root` sees it: symlinks resolved inside `root`."""
    return _openat2(root, path.lstrip("/") or ".", flags, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)


def _open_beneath(root: int, path: str) -> int:
    """An O_PATH descriptor of `path` under `root`, reached through no symlink at all."""
    return _openat2(root, path, os.O_PATH | os.O_NOFOLLOW, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)


def _mount_table() -> list[MountInfo]:
    with open("/proc/self/mountinfo") as mountinfo:
        return parse_mountinfo(mountinfo.read())


def _mount_flags(options: str) -> tuple[int, str]:
    """moby/sys/mount's parseOptions: the flags `options` names, and the rest as the file system's data."""
    flags, data = 0, []
    for option in options.split(",") if options else ():
        known = _MOUNT_FLAGS.get(option)
        if known is None:
            data.append(option)
        elif known[0]:
            flags &= ~known[1]
        else:
            flags |= known[1]
    return flags, ",".join(data)


def _unmount(target: Path) -> None:
    """Detach the mount at `target` (moby/sys/mount.Unmount); nothing if there is none."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        error = ctypes.get_errno()
        if error != errno.EINVAL:
            raise OSError(error, f"cannot unmount {target}: {os.strerror(error)}")


def unmount_all(root: Path) -> list[str]:
    """Detach every mount under a volume store's `root` (what a node killed while its tasks used volumes with
    devices left mounted), for harnesses removing a node's directory: deleting files through a bind-like
    volume's mount would delete the node directory it binds. Returns what could not be unmounted."""
    failures = []
    prefix = str(Path(root).resolve())
    for mount in reversed(_mount_table()):
        if within(mount.mount_point, prefix):
            try:
                _unmount(Path(mount.mount_point))
            except OSError as exc:
                failures.append(str(exc))
    return failures


@functools.cache
def recursive_readonly_supported() -> bool:
    """Whether read-only mounts can be made recursively read-only here: a kernel with mount_setattr(2) and a
    runtime that knows "rro" (what dockerd checks before using it)."""
    match = re.match(r"(\d+)\.(\d+)", platform.release())
    if match is None or (int(match[1]), int(match[2])) < _RRO_KERNEL or shutil.which(_RUNTIME) is None:
        return False
    try:
        features = subprocess.run([_RUNTIME, "features"], capture_output=True, timeout=10, check=False)
        return "rro" in json.loads(features.stdout or b"{}").get("mountOptions", [])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False


# -- filters -----------------------------------------------------------------------------------------------


def _check_filters(filters: Mapping[str, Sequence[str]], accepted: Sequence[str]) -> None:
    for key in filters:
        if key not in accepted:
            raise VolumeError(f"invalid filter '{key}'")


def _parse_bool(text: str, key: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise VolumeError(f'invalid filter \'{key}\': strconv.ParseBool: parsing "{text}": invalid syntax')


def _bool_filter(filters: Mapping[str, Sequence[str]], key: str) -> bool | None:
    """Docker's GetBoolOrDefault: None if absent; true and false both given is an error."""
    if key not in filters:
        return None
    values = set(filters[key])
    false, true = bool(values & {"0", "false"}), bool(values & {"1", "true"})
    if false == true:
        raise VolumeError(f"invalid filter '{key}={','.join(sorted(values))}'")
    return true


def _name_matches(name: str, wanted: str) -> bool:
    """Docker's filter Match: the exact name, or a regular expression found in it."""
    if name == wanted:
        return True
    try:
        return re.search(wanted, name) is not None
    except re.error:
        return False


def _labels_match(labels: Mapping[str, str] | None, wanted: Sequence[str]) -> bool:
    """Docker's MatchKVList: every "key" or "key=value" of `wanted` is among `labels`."""
    if not wanted:
        return True
    labels = labels or {}
    for value in wanted:
        key, has_value, expected = value.partition("=")
        if key not in labels or (has_value and labels[key] != expected):
            return False
    return True
