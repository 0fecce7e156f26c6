"""The OCI runtime every task's container runs under: crun, and what it needs on a host with hybrid cgroups.

Why crun. `python3 -m bench swarm` (100 replicas on 3 managers + 2 workers, the 2-core machine) took 1.6-2.3 s
with crun against 4.7-5.3 s with runc, alternating runs: runc is a Go program, and each container's `create`,
`start`, `kill` and `delete` start a Go runtime, ~25 ms of CPU per container where crun's C takes a few.

Hybrid cgroups. On a host with cgroup v1 hierarchies under /sys/fs/cgroup and a cgroup2 hierarchy at
/sys/fs/cgroup/unified that has a controller (here hugetlb), crun 1.8 refuses to run ("cgroups in hybrid mode
not supported"). Without that mount it sees a v1 host and makes each container's cgroup in every v1 hierarchy,
with its limits and device rules, as runc does. So there `create` and `exec` run through `runtime_command`'s
wrapper: a shell script that gives crun a mount namespace of its own without the cgroup2 mount. The namespace is a slave
of the host's (mounts made on the host later still reach it, and from it the container's) and ends with the
crun process; the container gets its own mount namespace from it, as always.

crun's words for an error are not runc's; Docker's users know runc's (`error_text`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

RUNTIME = "crun"
PACKAGE = "crun"
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"
WRAPPER_NAME = "crun-without-cgroup2"

_WRAPPER = """#!/bin/sh
# Written by raftswarm (raftswarm/runtime/ociruntime.py): crun refuses hybrid cgroup v1/v2 hosts, so it runs in a
# mount namespace of its own where the cgroup2 hierarchy at {unified} is not mounted.
exec unshare --mount --propagation slave -- /bin/sh -c 'umount {unified} 2>/dev/null; exec "$0" "$@"' {crun} "$@"
"""


def missing() -> str | None:
    """What is missing for containers to run here, or None."""
    if shutil.which(RUNTIME) is None:
        return f"{RUNTIME} is missing: install the Debian package {PACKAGE} (./setup does)"
    if hybrid_cgroups() and (shutil.which("unshare") is None or shutil.which("umount") is None):
        return "unshare and umount are missing (they run crun on this hybrid cgroup host): install util-linux and mount"
    return None


def crun() -> str:
    """crun itself: what runs `start`, `kill` and `delete`, which make no cgroup and put nothing in one, and
    work on any host (the wrapper would cost each ~5 ms of CPU: two shells, unshare and umount)."""
    return shutil.which(RUNTIME) or RUNTIME


def runtime_command(directory: Path) -> str:
    """The program that runs `create` (conmon runs it) and `exec`: crun, or on a hybrid cgroup host the wrapper,
    written into `directory` (the node's runtime directory, root's only) once."""
    if not hybrid_cgroups():
        return crun()
    wrapper = Path(directory) / WRAPPER_NAME
    text = _WRAPPER.format(unified=UNIFIED, crun=crun())
    try:
        current = wrapper.read_text()
    except OSError:
        current = None
    if current != text:
        temporary = wrapper.with_name(f".{WRAPPER_NAME}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temporary, wrapper)
    return str(wrapper)


def hybrid_cgroups() -> bool:
    """Whether cgroup v1 hierarchies and a cgroup2 one with controllers are both mounted (crun refuses that)."""
    types = _mount_types()
    if types.get(CGROUP_ROOT) != "tmpfs" or types.get(UNIFIED) != "cgroup2":
        return False
    try:
        with open(f"{UNIFIED}/cgroup.controllers") as controllers:
            return bool(controllers.read().split())
    except OSError:
        return False


def _mount_types() -> dict[str, str]:
    """Mount point -> filesystem type, of this process's mount namespace (the last mount over a point wins)."""
    types = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, rest = line.partition(" - ")
            types[fields.split()[4]] = rest.split()[0]
    return types


def error_text(stderr: bytes) -> str:
    """crun's message, without the decoration runc's logging would add, in Docker's words where it has its own."""
    text = stderr.decode(errors="replace").strip().splitlines()
    message = text[-1] if text else ""
    if message.startswith("executable file `") and "` not found in $PATH" in message:
        program = message[len("executable file `"):message.index("` not found in $PATH")]
        return f'exec: "{program}": executable file not found in $PATH'
    return message or f"{RUNTIME} failed"


def gone(message: str) -> bool:
    """Whether the runtime's error says the container, or its process, is not there any more: for a kill or a
    delete, done already."""
    return any(
        words in message
        for words in ("No such process", "is not running", "/status`: No such file or directory", "does not exist")
    )
