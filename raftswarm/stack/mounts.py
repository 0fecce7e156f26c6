"""A service's `volumes:` and `tmpfs:` entries, checked into `ServiceMount`s (docker/cli's loader and
internal/volumespec for the short syntax; convert/volume.go for what each type may carry).

- short syntax `[SOURCE:]TARGET[:OPTIONS]`: a SOURCE starting with ".", "/" or "~" is a bind of that host path,
  any other a volume of the top-level `volumes:`, none an anonymous volume; OPTIONS are ro, rw, nocopy and a
  bind propagation. docker/cli ignores any other option; raftswarm refuses it, so that nothing asked is lost.
- long syntax `{type, source, target, read_only, consistency, bind: {propagation, create_host_path},
  volume: {nocopy}, tmpfs: {size, mode}}`: a type's options on another type are docker's errors.
- a bind's relative source is resolved against the (first) compose file's directory, a leading "~" against
  HOME, as docker/cli does.
- `tmpfs: PATH[:OPTIONS]` (one or a list, compose's form of `docker run --tmpfs`): a tmpfs mount. OPTIONS are
  size=, mode= (octal), ro, rw, exec, noexec, and nosuid and nodev, which every tmpfs has anyway. docker/cli
  reads the key and drops it; raftswarm mounts it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .fields import (
    at,
    boolean,
    byte_size,
    choice,
    fail,
    integer,
    list_of,
    mapping,
    only,
    required,
    string,
    string_or_list,
)
from .model import BIND, TMPFS, VOLUME, ServiceMount

PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
"""Docker's bind propagations (mount.Propagations)."""

_REFUSED_TYPES = {
    "npipe": "named pipes are mounts of Windows containers; raftswarm runs Linux containers",
    "cluster": "cluster (CSI) volumes are not supported by raftswarm; use a volume of the top-level volumes:",
    "image": "a swarm service cannot mount an image; copy what it needs into its own image",
}
_TYPE_OPTIONS = {BIND: "bind", VOLUME: "volume", TMPFS: "tmpfs"}
_ALWAYS_ON_TMPFS_FLAGS = ("nosuid", "nodev")  # every tmpfs of a task has them (runtime.mounts TMPFS_DEFAULTS)
_TMPFS_FLAGS = ("exec", "noexec")
_MAX_MODE = 0o7777


def service_volumes(value: Any, path: str, working_dir: Path, environment: Mapping[str, str]) -> list[ServiceMount]:
    entries = list_of(value, path, '"SOURCE:TARGET[:ro]" strings or {type, source, target} mappings')
    mounts = []
    for index, entry in enumerate(entries):
        entry_path = at(path, index)
        if isinstance(entry, str):
            mount = _short_volume(entry, entry_path)
        else:
            mount = _long_volume(mapping(entry, entry_path), entry_path)
        if mount.type == BIND:
            mount = _resolved_bind(mount, entry_path, working_dir, environment)
        mounts.append(mount)
    return mounts


def _short_volume(spec: str, path: str) -> ServiceMount:
    """volumespec.Parse, without Windows drive letters: raftswarm's nodes are Linux."""
    if not spec:
        fail(path, "invalid empty volume spec")
    if len(spec) <= 2:
        return ServiceMount(VOLUME, target=spec)
    fields = spec.split(":")
    if "" in fields:
        fail(path, f"invalid spec: {spec}: empty section between colons")
    if len(fields) > 3:
        fail(path, f"invalid spec: {spec}: too many colons")
    if len(fields) == 1:
        return ServiceMount(VOLUME, target=_absolute_target(fields[0], path))
    source, target = fields[0], fields[1]
    kind = BIND if source[0] in "./~" else VOLUME
    read_only, nocopy, propagation = False, None, None
    for option in fields[2].split(",") if len(fields) == 3 else []:
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option == "nocopy":
            nocopy = True
        elif option in PROPAGATIONS:
            propagation = option
        else:
            fail(path, f"unknown volume option {option!r} in {spec!r}: expected ro, rw, nocopy or a bind propagation")
    if kind == BIND and nocopy:
        fail(path, f"volume options are incompatible with type bind: nocopy in {spec!r}")
    if kind == VOLUME and propagation:
        fail(path, f"bind options are incompatible with type volume: {propagation} in {spec!r}")
    return ServiceMount(
        kind,
        target=_absolute_target(target, path),
        source=source,
        read_only=read_only,
        nocopy=nocopy,
        propagation=propagation,
    )


def _long_volume(entry: dict[str, Any], path: str) -> ServiceMount:
    only(entry, path, {"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"})
    kind = string(required(entry, "type", path, "one of volume, bind or tmpfs"), at(path, "type"))
    if kind in _REFUSED_TYPES:
        fail(at(path, "type"), _REFUSED_TYPES[kind])
    kind = choice(kind, at(path, "type"), (VOLUME, BIND, TMPFS))
    for other_kind, key in _TYPE_OPTIONS.items():
        if other_kind != kind and entry.get(key) is not None:
            fail(at(path, key), f"{key} options are incompatible with type {kind}")
    source = string(entry["source"], at(path, "source")) if entry.get("source") is not None else ""
    if kind == TMPFS and source:
        fail(at(path, "source"), "invalid tmpfs source, source must be empty")
    if kind == BIND and not source:
        fail(at(path, "source"), 'invalid mount config for type "bind": field Source must not be empty')
    target = string(required(entry, "target", path, "give the path inside the container"), at(path, "target"))
    mount = ServiceMount(
        kind,
        target=_absolute_target(target, at(path, "target")),
        source=source,
        read_only=boolean(entry["read_only"], at(path, "read_only")) if entry.get("read_only") is not None else False,
        consistency=string(entry["consistency"], at(path, "consistency")) if entry.get("consistency") else None,
    )
    options_path = at(path, _TYPE_OPTIONS[kind])
    options = mapping(entry.get(_TYPE_OPTIONS[kind]) or {}, options_path)
    if kind == BIND:
        only(options, options_path, {"propagation", "create_host_path"})
        propagation = options.get("propagation")
        create = options.get("create_host_path")
        return replace(
            mount,
            propagation=choice(propagation, at(options_path, "propagation"), PROPAGATIONS) if propagation else None,
            create_host_path=boolean(create, at(options_path, "create_host_path")) if create is not None else None,
        )
    if kind == VOLUME:
        only(options, options_path, {"nocopy", "subpath"})
        if options.get("subpath"):
            fail(at(options_path, "subpath"), "volume subpaths are not supported by raftswarm; mount the whole volume")
        nocopy = options.get("nocopy")
        return replace(mount, nocopy=boolean(nocopy, at(options_path, "nocopy")) if nocopy is not None else None)
    only(options, options_path, {"size", "mode"})
    size, mode = options.get("size"), options.get("mode")
    return replace(
        mount,
        tmpfs_size=byte_size(size, at(options_path, "size")) if size is not None else None,
        tmpfs_mode=integer(mode, at(options_path, "mode"), 0, _MAX_MODE) if mode is not None else None,
    )


def _absolute_target(target: str, path: str) -> str:
    if not target.startswith("/"):
        fail(path, f"invalid mount target, must be an absolute path: {target}")
    if posixpath.normpath(target) == "/":
        fail(path, "invalid specification: destination can't be '/'")
    return target


def _resolved_bind(mount: ServiceMount, path: str, working_dir: Path, environment: Mapping[str, str]) -> ServiceMount:
    source = mount.source
    if source.startswith("~"):
        if "HOME" not in environment:
            fail(path, f"cannot expand '~' in {source!r}: the environment has no HOME")
        source = environment["HOME"] + source[1:]
    return replace(mount, source=posixpath.normpath(posixpath.join(str(working_dir), source)))


def service_tmpfs(value: Any, path: str) -> list[ServiceMount]:
    """`tmpfs: /run` or `tmpfs: [/run, "/cache:size=64m,mode=1777"]`."""
    mounts = []
    for index, entry in enumerate(string_or_list(value, path)):
        entry_path = at(path, index) if isinstance(value, list) else path
        target, _, options = entry.partition(":")
        mount = ServiceMount(TMPFS, target=_absolute_target(target, entry_path))
        flags: list[str] = []
        for option in options.split(",") if options else []:
            key, equals, setting = option.partition("=")
            if key == "size" and equals:
                mount = replace(mount, tmpfs_size=byte_size(setting, entry_path))
            elif key == "mode" and equals:
                try:
                    mode = int(setting, 8)
                except ValueError:
                    fail(entry_path, f"invalid tmpfs mode {setting!r}: give it in octal, like 1777")
                mount = replace(mount, tmpfs_mode=integer(mode, entry_path, 0, _MAX_MODE))
            elif option in ("ro", "rw"):
                mount = replace(mount, read_only=option == "ro")
            elif option in _TMPFS_FLAGS:
                flags.append(option)
            elif option not in _ALWAYS_ON_TMPFS_FLAGS:
                fail(
                    entry_path,
                    f"unsupported tmpfs option {option!r}: a swarm tmpfs takes size=, mode=, ro, rw, exec and noexec"
                    " (nosuid and nodev are always on)",
                )
        mounts.append(replace(mount, tmpfs_flags=tuple(flags)))
    return mounts
