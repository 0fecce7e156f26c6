"""Docker's local volumes as every layer names them: the API edge checks a service's volume mounts with these
rules, a node's volume store (`runtime.volumes`) applies them, and a compose file's volumes follow them. Pure.

A volume name becomes a directory on the node (`<volumes>/<name>/_data`), so it is Docker's restricted name
(moby daemon/names.RestrictedNamePattern): no "/", no leading "." or "-", hence no "..". The `local` driver's
options are moby's (daemon/volume/local/local_unix.go): `type`, `o` and `device` mount something at the
volume's directory while a task uses it; `size` asks for a quota.

Where raftswarm is stricter than Docker, on purpose: a local volume's options mount a tmpfs (`type=tmpfs`) or
bind a directory of the node (`o=bind` or `o=rbind`, `device=/path`), nothing else -- not a block device of the
node (`type=ext4,device=/dev/sda1` would show a task the node's own disk), not a network file system (this node
has no helpers for them) -- and `size` is refused as on a Docker host without project quotas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LOCAL_DRIVER = "local"
"""The one volume driver of a raftswarm node, Docker's default."""

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
"""The label Docker gives a volume it named itself (moby volume/service.AnonymousLabel): `docker volume prune`
removes only those unless asked for all."""

VOLUME_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
VOLUME_NAME = re.compile(VOLUME_NAME_CHARS + "+")

LOCAL_OPTIONS = ("type", "o", "device", "size")
_REQUIRED_WITH = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
"""moby's mandatoryOpts: an option and the ones it needs beside it."""

_BIND_FLAGS = ("bind", "rbind")


def volume_name_problem(name: str) -> str | None:
    """Why `name` cannot name a local volume (moby's validateName, word for word), or None."""
    if len(name) == 1:
        return "volume name is too short, names should be at least two alphanumeric characters"
    if not VOLUME_NAME.fullmatch(name):
        return (
            f'"{name}" includes invalid characters for a local volume name, only "{VOLUME_NAME_CHARS}" are allowed.'
            " If you intended to pass a host directory, use absolute path"
        )
    return None


def binds_device(options: Mapping[str, str]) -> bool:
    """Whether the options bind a node directory (`o=bind` or `o=rbind`) rather than mount a file system."""
    return any(flag in _BIND_FLAGS for flag in (options.get("o") or "").split(","))


def local_options_problem(options: Mapping[str, str]) -> str | None:
    """Why the local driver cannot take these options (moby's validateOpts, then raftswarm's limits), or None."""
    for key in options:
        if key not in LOCAL_OPTIONS:
            return f'invalid option: "{key}"'
    if "size" in options:
        return "quota size requested but no quota support"
    for key, needed in _REQUIRED_WITH.items():
        if key in options:
            for other in needed:
                if other not in options:
                    return f'missing required option: "{other}"'
    if "type" in options and not binds_device(options) and options["type"] != "tmpfs":
        return (
            f'invalid option: type "{options["type"]}": the local driver of a raftswarm node mounts a tmpfs '
            "(type=tmpfs) or binds a directory of the node (o=bind,device=/path), not a device or a network file system"
        )
    return None
