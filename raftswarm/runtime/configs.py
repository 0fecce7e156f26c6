"""A task's configs as files at their targets in the container, as Docker's swarm executor delivers them.

Docker writes a task's configs, like its secrets, onto a tmpfs of the container's (memory only) and binds each
file read-only at its target: any path in the container, "/<name>" for a relative one (moby's
getConfigTargetPath). Here a task's configs get a tmpfs of their own, made, written, made read-only and
unmounted as the secrets' is (`runtime.secrets`), because the secrets tmpfs is bound whole at /run/secrets. Its
files are named by their position; each is bound read-only at its target. runc makes the target, and the
directories above it that the image lacks, in the task's own upper layer, so any target works, as in Docker.

A config whose Templating is "golang" is a Go template, expanded for the task before it is written
(`objects.templates`: {{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}, ...), as SwarmKit's
ExpandConfigSpec does on the worker.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RaftswarmError
from ..objects.defaults import DEFAULT_SECRET_MODE
from ..objects.specs import TEMPLATE_DRIVER, config_target
from .secrets import SecretFile, mount_secrets, unmount_secrets
from ..objects.templates import Struct, TemplateError, expand

MAX_CONFIG_FILES = 1000
"""As `secrets.MAX_SECRET_FILES`: more configs than this in one task is not a real service."""
KERNEL_FILE_SYSTEMS = ("/proc", "/sys")
"""Where no file can be bound: runc refuses mounts over /proc, and sysfs is read-only."""


class InvalidConfigTarget(RaftswarmError):
    """A config reference of the task cannot become a file in its container; the task is rejected."""


@dataclass(frozen=True)
class ConfigFile:
    target: str
    """An absolute, normalised path in the container."""
    uid: int
    gid: int
    mode: int
    data: bytes


def config_files(
    container_spec: Mapping[str, Any],
    configs: Mapping[str, Mapping[str, Any]],
    context: Struct,
    read_only_dirs: Sequence[str] = (),
) -> list[ConfigFile]:
    """The files of the task's config references (ContainerSpec.Configs). `configs` maps config ID to the config
    as the dispatcher delivered it ({"Spec", "Data"}); `context` is the task's, for templated configs;
    `read_only_dirs` are directories the task's other mounts hold read-only (no target can be made there).
    Raises InvalidConfigTarget for a reference that was not delivered or has no usable target, and the
    templates' own error for a template that cannot be expanded."""
    files: dict[str, ConfigFile] = {}
    for ref in container_spec.get("Configs") or []:
        target = ref.get("File")
        if not target:
            continue  # a runtime target (a credential spec): not a file
        config = ref.get("ConfigName") or ref.get("ConfigID")
        delivered = configs.get(ref.get("ConfigID", ""))
        if delivered is None:
            raise InvalidConfigTarget(
                f"config {config} ({ref.get('ConfigID')}) was not delivered to this node with the task"
            )
        path = _target_path(target.get("Name") or ref.get("ConfigName") or "", config, read_only_dirs)
        if path in files:
            raise InvalidConfigTarget(f"two configs of the task target the same file {path}")
        try:
            uid, gid = int(target.get("UID") or 0), int(target.get("GID") or 0)
        except ValueError:
            raise InvalidConfigTarget(f"config {config}: File.UID and File.GID must be numeric") from None
        mode = target.get("Mode")
        mode = DEFAULT_SECRET_MODE if mode is None else int(mode) & 0o777  # Go's FileMode.Perm(), as dockerd
        files[path] = ConfigFile(path, uid, gid, mode, _payload(delivered, context))
    for path in files:
        parent = posixpath.dirname(path)
        while parent != "/":
            if parent in files:
                raise InvalidConfigTarget(
                    f"config targets {parent} and {path} conflict: the first would have to be a directory"
                )
            parent = posixpath.dirname(parent)
    if len(files) > MAX_CONFIG_FILES:
        raise InvalidConfigTarget(f"a task can have at most {MAX_CONFIG_FILES} config files")
    return list(files.values())


def _target_path(name: str, config: str, read_only_dirs: Sequence[str]) -> str:
    if not name or "\0" in name:
        raise InvalidConfigTarget(f"config {config}: invalid target file name {name!r}")
    path = config_target(name)
    if path == "/":
        raise InvalidConfigTarget(f"config {config}: target {name!r} is the container's root directory, not a file")
    for directory in (*KERNEL_FILE_SYSTEMS, *read_only_dirs):
        if path == directory or path.startswith(directory + "/"):
            raise InvalidConfigTarget(
                f"config {config}: target {path} is in {directory}, where no file can be added; choose another path"
            )
    return path


def _payload(delivered: Mapping[str, Any], context: Struct) -> bytes:
    data = delivered["Data"]
    templating = (delivered.get("Spec") or {}).get("Templating") or {}
    if not templating:
        return data
    name = delivered["Spec"].get("Name")
    if templating.get("Name") != TEMPLATE_DRIVER:
        raise InvalidConfigTarget(f"config {name}: unrecognized template type {templating.get('Name')!r}")
    # Go's templates work on bytes; surrogateescape carries bytes that are not UTF-8 through unchanged.
    try:
        return expand(data.decode("utf-8", "surrogateescape"), context).encode("utf-8", "surrogateescape")
    except TemplateError as exc:
        raise TemplateError(f"failed to expand templated config {name}: {exc}") from None


def mount_configs(directory: Path, files: Sequence[ConfigFile]) -> None:
    """Mount the task's configs tmpfs at `directory` with `files` written there (see `config_mounts`)."""
    mount_secrets(directory, [SecretFile(str(index), f.uid, f.gid, f.mode, f.data) for index, f in enumerate(files)])


def unmount_configs(directory: Path) -> None:
    """Unmount the task's configs tmpfs and remove its mount point; nothing if it is not mounted."""
    unmount_secrets(directory)


def config_mounts(directory: Path, files: Sequence[ConfigFile]) -> list[dict[str, Any]]:
    """The OCI mounts binding each of `files`, as `mount_configs` wrote them under `directory`, read-only at its
    target."""
    options = ["bind", "rprivate", "ro"]
    return [
        {"destination": f.target, "type": "bind", "source": str(directory / str(i)), "options": list(options)}
        for i, f in enumerate(files)
    ]
