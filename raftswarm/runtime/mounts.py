"""A swarm task's mounts as Docker gives them to its container: ContainerSpec.Mounts and the image's VOLUMEs,
checked, then turned into the OCI mounts of the bundle. Pure: the node's side (bind sources, volumes, copy-up)
is `runtime.volumes`.

Docker's rules, and where they are:

- moby's swarm executor (daemon/cluster/executor/container/validate.go) checks every mount of the task: an
  absolute target, a bind source that is absolute, a volume source that is not, a tmpfs without a source; then
  dockerd's mount parser (daemon/volume/mounts/linux_parser.go, validate.go) each one: its options belong to its
  type, its target is not /, a bind's propagation, a tmpfs's options. A second mount at one destination is a
  "Duplicate mount point" (daemon/volumes.go). A mount without a Type is a bind (swarmkit's first MountType).
- the image's VOLUMEs that no mount covers each get a new anonymous volume, filled from the image
  (daemon/create_unix.go createContainerVolumesOS); a volume mount without a Source is anonymous too.
- the OCI mounts (daemon/oci_linux.go withMounts): binds and volumes are "rbind" ("bind" with
  BindOptions.NonRecursive); read-only ones "rro" (recursively read-only: Docker 25 on a kernel >= 5.12 with a
  runtime that knows it) or "ro" (older ones, or BindOptions.ReadOnlyNonRecursive); a bind's propagation
  (rprivate unless given) last, a volume's none. A tmpfs gets "noexec,nosuid,nodev,rprivate" followed by its
  own options (container.TmpfsMounts, ConvertTmpfsOptions), duplicates merged as moby/sys/mount's
  MergeTmpfsOptions does. Mounts are ordered by the depth of their destination, so none hides another.
- a shared bind needs a shared source mount, a slave one a shared or slave source mount
  (ensureShared/ensureSharedOrSlave), and makes the root's propagation shared or rslave.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RaftswarmError

BIND, VOLUME, TMPFS = "bind", "volume", "tmpfs"
DEFAULT_PROPAGATION = "rprivate"
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
TMPFS_FLAGS = ("exec", "noexec")
"""The options a tmpfs mount may name (moby's validTmpfsOptions); size and mode have fields of their own."""
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev", DEFAULT_PROPAGATION)

_SIZE_SUFFIXES = (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10))


class InvalidMount(RaftswarmError):
    """A mount the task cannot have; the message is Docker's, for `service ps`."""


@dataclass
class MountPoint:
    """One mount of a task, checked: where it goes in the container and what the node must provide for it."""

    type: str
    destination: str
    """The target as a clean absolute path."""
    source: str = ""
    """A bind's host path, a volume's name ("" for a new anonymous volume)."""
    readonly: bool = False
    propagation: str = ""
    """A bind's propagation (rprivate unless given); volumes have none."""
    recursive: bool = True
    readonly_recursion: str = ""
    """"" (recursively read-only where the kernel can), "nonrecursive" or "force"."""
    create_source: bool = False
    copy_data: bool = True
    """Fill a new, empty volume from the image's directory at the destination (not VolumeOptions.NoCopy)."""
    labels: Mapping[str, str] | None = None
    driver_options: Mapping[str, str] | None = None
    tmpfs_options: str = ""
    """The data of a tmpfs mount: ro, mode=, size= and its Options, comma-separated."""
    from_image: bool = False
    """An anonymous volume for one of the image's VOLUMEs."""

    @property
    def anonymous(self) -> bool:
        return self.type == VOLUME and not self.source


def plan_mounts(mounts: Sequence[Mapping[str, Any]], image_volumes: Iterable[str] = ()) -> list[MountPoint]:
    """The task's mounts (its ContainerSpec.Mounts, templates expanded) and an anonymous volume for each of the
    image's VOLUMEs no mount covers. Raises InvalidMount with Docker's message for the first one at fault."""
    for mount in mounts:
        _check_for_swarm(mount)
    points: list[MountPoint] = []
    for mount in mounts:
        point = _parse(mount)
        if any(other.destination == point.destination for other in points):
            raise InvalidMount(f"Duplicate mount point: {point.destination}")
        points.append(point)
    covered = {point.destination for point in points}
    for volume in sorted(image_volumes):
        destination = posixpath.normpath(posixpath.join("/", volume))
        if destination != "/" and destination not in covered:
            covered.add(destination)
            points.append(MountPoint(VOLUME, destination, from_image=True))
    return points


def _check_for_swarm(mount: Mapping[str, Any]) -> None:
    """The swarm executor's checks (validate.go), made on all mounts before any is parsed."""
    kind, target, source = mount.get("Type") or BIND, mount.get("Target") or "", mount.get("Source") or ""
    if not posixpath.isabs(target):
        raise InvalidMount(f"invalid mount target, must be an absolute path: {target}")
    if kind == BIND and not posixpath.isabs(source):
        raise InvalidMount(f"invalid bind mount source, must be an absolute path: {source}")
    if kind == VOLUME and posixpath.isabs(source):
        raise InvalidMount(f"invalid volume mount source, must not be an absolute path: {source}")
    if kind == TMPFS and source:
        raise InvalidMount("invalid tmpfs source, source must be empty")
    if kind not in (BIND, VOLUME, TMPFS):
        raise InvalidMount(f"invalid mount type: {kind}")


def _parse(mount: Mapping[str, Any]) -> MountPoint:
    """dockerd's parser of one mount (linuxParser.ParseMountSpec)."""
    kind, target, source = mount.get("Type") or BIND, mount["Target"], mount.get("Source") or ""

    def invalid(problem: str) -> InvalidMount:
        return InvalidMount(f'invalid mount config for type "{kind}": {problem}')

    for options_kind, options_field in ((BIND, "BindOptions"), (VOLUME, "VolumeOptions"), (TMPFS, "TmpfsOptions")):
        if kind != options_kind and mount.get(options_field) is not None:
            raise invalid(f"field {options_field} must not be specified")
    if mount.get("ImageOptions") is not None:
        raise invalid("field ImageOptions must not be specified")
    destination = posixpath.normpath(target)
    if destination == "/":
        raise invalid("invalid specification: destination can't be '/'")
    readonly = bool(mount.get("ReadOnly"))
    point = MountPoint(kind, destination, readonly=readonly)
    if kind == BIND:
        options = mount.get("BindOptions") or {}
        propagation = options.get("Propagation") or DEFAULT_PROPAGATION
        if propagation not in PROPAGATIONS:
            raise invalid(f"invalid propagation mode: {propagation}")
        non_recursive_ro, force_recursive_ro = options.get("ReadOnlyNonRecursive"), options.get("ReadOnlyForceRecursive")
        if not readonly and non_recursive_ro:
            raise InvalidMount("mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive")
        if not readonly and force_recursive_ro:
            raise InvalidMount("mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive")
        if non_recursive_ro and force_recursive_ro:
            raise InvalidMount("mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive")
        point.source = posixpath.normpath(source)
        point.propagation = propagation
        point.recursive = not options.get("NonRecursive")
        point.readonly_recursion = "nonrecursive" if non_recursive_ro else "force" if force_recursive_ro else ""
        point.create_source = bool(options.get("CreateMountpoint"))
    elif kind == VOLUME:
        options = mount.get("VolumeOptions") or {}
        if options.get("Subpath"):
            raise invalid("volume subpaths are not supported by raftswarm; mount the whole volume")
        driver = options.get("DriverConfig") or {}
        point.source = source
        point.copy_data = not options.get("NoCopy")
        point.labels = options.get("Labels")
        point.driver_options = driver.get("Options")
        if driver.get("Name") not in (None, "", "local"):
            raise InvalidMount(
                f'create {source}: error looking up volume plugin {driver["Name"]}: plugin "{driver["Name"]}" not found'
            )
    else:
        try:
            point.tmpfs_options = tmpfs_options(mount.get("TmpfsOptions") or {}, readonly)
        except ValueError as exc:
            raise invalid(str(exc)) from None
    return point


def tmpfs_options(options: Mapping[str, Any], readonly: bool) -> str:
    """TmpfsOptions as mount data (moby's ConvertTmpfsOptions): ro, mode in octal, size in the largest unit that
    divides it, then the options. Raises ValueError for an option Docker does not allow."""
    data = ["ro"] if readonly else []
    if options.get("Mode"):
        data.append(f"mode={options['Mode']:o}")
    if options.get("SizeBytes"):
        size = options["SizeBytes"]
        for suffix, divisor in _SIZE_SUFFIXES:
            if size % divisor == 0:
                data.append(f"size={size // divisor}{suffix}")
                break
        else:
            data.append(f"size={size}")
    for option in options.get("Options") or []:
        if not 1 <= len(option) <= 2:
            raise ValueError("invalid option array length")
        if option[0] not in TMPFS_FLAGS:
            raise ValueError(f"invalid option: {option[0]}")
        data.append("=".join(option))
    return ",".join(data)


_FLAG_GROUPS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev", "nodev": "nodev",
    "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync", "dirsync": "dirsync",
    "remount": "remount", "mand": "mand", "nomand": "mand", "atime": "noatime", "noatime": "noatime",
    "diratime": "nodiratime", "nodiratime": "nodiratime", "relatime": "relatime", "norelatime": "relatime",
    "strictatime": "strictatime", "nostrictatime": "strictatime",
    **{flag: "propagation" for flag in (
        "bind", "rbind", "unbindable", "runbindable", "private", "rprivate", "shared", "rshared", "slave", "rslave",
    )},
}
"""moby/sys/mount's flag names, each with the flag it sets or clears (a later one of a group wins); a mount
has one propagation."""
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")


def merge_tmpfs_options(options: Sequence[str]) -> list[str]:
    """moby/sys/mount.MergeTmpfsOptions: the options with only the last of each flag group and of each data key
    kept, in their order. Raises InvalidMount for data a tmpfs does not take."""
    seen: set[str] = set()
    merged: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = _FLAG_GROUPS.get(option)
        if key is None:
            name, equals, _ = option.partition("=")
            if not equals or name not in _TMPFS_DATA:
                raise InvalidMount(f'invalid tmpfs option "{name}"')
            key = f"data:{name}"
        if key not in seen:
            seen.add(key)
            merged.insert(0, option)
    return merged


def oci_mount(point: MountPoint, source: str, *, recursive_readonly: bool) -> dict[str, Any]:
    """The OCI mount of `point`, whose host source (a bind's path, a volume's data directory) is `source`.
    `recursive_readonly` says whether this node can make read-only mounts recursively read-only."""
    if point.type == TMPFS:
        options = merge_tmpfs_options([*TMPFS_DEFAULTS, *filter(None, point.tmpfs_options.split(","))])
        return {"destination": point.destination, "type": "tmpfs", "source": "tmpfs", "options": options}
    options = ["rbind" if point.recursive else "bind"]
    if point.readonly:
        if point.readonly_recursion == "force" and not recursive_readonly:
            raise InvalidMount(
                "recursively read-only mounts are not supported on this node (they need a kernel >= 5.12 and a "
                "runtime that knows rro): drop ReadOnlyForceRecursive"
            )
        options.append("rro" if recursive_readonly and point.readonly_recursion != "nonrecursive" else "ro")
    if point.propagation:
        options.append(point.propagation)
    return {"destination": point.destination, "type": "bind", "source": source, "options": options}


def in_mount_order(mounts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mounts ordered by the depth of their destination (moby's sortMounts), so that /etc is mounted before
    /etc/app and does not hide it; mounts of equal depth keep their order."""
    return sorted(mounts, key=lambda mount: posixpath.normpath(mount["destination"]).count("/"))


def rootfs_propagation(points: Iterable[MountPoint]) -> str | None:
    """The root's propagation a shared or slave bind needs (withMounts), or None to keep the runtime's."""
    propagations = {point.propagation for point in points}
    if propagations & {"shared", "rshared"}:
        return "shared"
    if propagations & {"slave", "rslave"}:
        return "rslave"
    return None


# -- what the node's mount table says -----------------------------------------------------------------------


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo."""

    mount_point: str
    fstype: str
    optional: tuple[str, ...]
    """The propagation fields: "shared:N", "master:N", "propagate_from:N", "unbindable"."""


_ESCAPED = re.compile(r"\\([0-7]{3})")


def parse_mountinfo(text: str) -> list[MountInfo]:
    """The mounts of a mountinfo file, in its order (later mounts are on top)."""
    mounts = []
    for line in text.splitlines():
        before, separator, after = line.partition(" - ")
        fields = before.split()
        if not separator or len(fields) < 6:
            continue
        point = _ESCAPED.sub(lambda match: chr(int(match[1], 8)), fields[4])
        mounts.append(MountInfo(point, after.split()[0], tuple(fields[6:])))
    return mounts


def within(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or inside it (both absolute and clean)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def mount_of(path: str, mounts: Sequence[MountInfo]) -> MountInfo | None:
    """The mount `path` is on: the longest mount point it is within, the last one of equal length (moby's
    getSourceMount)."""
    found = None
    for mount in mounts:
        if within(path, mount.mount_point) and (found is None or len(mount.mount_point) >= len(found.mount_point)):
            found = mount
    return found


def propagation_problem(source: str, propagation: str, mounts: Sequence[MountInfo]) -> str | None:
    """Why a bind of `source` cannot have `propagation` (moby's ensureShared, ensureSharedOrSlave), or None."""
    if propagation not in ("shared", "rshared", "slave", "rslave"):
        return None
    mount = mount_of(source, mounts)
    if mount is None:
        return f"Can't find mount point of {source}"
    needed = ("shared:",) if propagation in ("shared", "rshared") else ("shared:", "master:")
    if not any(option.startswith(needed) for option in mount.optional):
        kind = "shared" if len(needed) == 1 else "shared or slave"
        return f"path {source} is mounted on {mount.mount_point} but it is not a {kind} mount"
    return None
