"""The OCI runtime every task's container runs under: crun, and what it needs on a host with hybrid cgroups.

Why crun. `python3 -m bench swarm` (100 replicas on 3 managers + 2 workers, the 2-core machine) took 1.6-2.4 s
with crun against 4.1-6.2 s with runc: runc is a Go program, and each container's `create`, `start`, `kill`
and `delete` start a Go runtime, ~25 ms of CPU per container where crun's C takes a few.

Hybrid cgroups. On a host with cgroup v1 hierarchies under /sys/fs/cgroup and a cgroup2 hierarchy at
/sys/fs/cgroup/unified that has a controller (this machine's holds hugetlb), crun 1.8 refuses to run ("cgroups in
hybrid mode not supported"). `./setup` moves such controllers to v1 hierarchies of their own, as systemd's hybrid
layout has them, and crun then runs as on any v1 host. Where that was not done, `create` and `exec` run crun under
`unshare`, in a mount namespace of its own without the cgroup2 mount (`create_argv`): crun then sees a v1 host and
makes each container's cgroup in every v1 hierarchy, with its limits and device rules, as runc does. That
namespace is a slave of the host's (mounts made on the host later still reach it, and from it the container's)
and ends with the crun process; the container gets its own mount namespace from it, as always. It costs each
task start an unshare, a shell and a umount that reads the whole mount table (~5 ms of CPU with 100 tasks
running). `kill` and `delete` make no cgroup and put nothing in one: they always run crun itself (`crun`), and
`start` runs no crun at all.

Starting a created container (`start`) is what `crun start` does, without a crun process (~4 ms of CPU and an
exec per task start). `crun create` leaves the container's init blocked reading a FIFO in crun's state
directory (`<root>/<id>/exec.fifo`, as runc's `exec.fifo`); `crun start` reads the container's status and its
config (for poststart hooks and sd_notify, which tasks never have), then opens the FIFO for writing, unlinks it
and writes one byte, and the init goes on to exec the task's process; crun tells a created container from a
started one by whether the FIFO exists. A crun that kept its state otherwise would fail every task start ("is not
created: no .../exec.fifo"; the tests start containers), not start one wrongly.

crun's words for an error are not runc's; Docker's users know runc's (`error_text`).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from pathlib import Path

RUNTIME = "crun"
PACKAGE = "crun"
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"


def missing() -> str | None:
    """What is missing for containers to run here, or None."""
    if shutil.which(RUNTIME) is None:
        return f"{RUNTIME} is missing: install the Debian package {PACKAGE} (./setup does)"
    if hybrid_cgroups() and (shutil.which("unshare") is None or shutil.which("umount") is None):
        return "unshare and umount are missing (they run crun on this hybrid cgroup host): install util-linux and mount"
    return None


def crun() -> str:
    """crun itself: what runs `kill` and `delete`."""
    return shutil.which(RUNTIME) or RUNTIME


def create_argv() -> list[str]:
    """What runs `create` (conmon runs it: the first word is its runtime, the rest its runtime arguments) and
    `exec`, the commands that put processes in cgroups: crun, or on a hybrid cgroup host crun in a mount
    namespace without the cgroup2 mount. The container's own arguments follow."""
    return without_cgroup2_argv() if hybrid_cgroups() else [crun()]


def without_cgroup2_argv() -> list[str]:
    """crun in a mount namespace of its own where the cgroup2 hierarchy at `UNIFIED` is not mounted."""
    unmount = f'umount {UNIFIED} 2>/dev/null; exec "$0" "$@"'  # $0: crun; a failed umount: crun says why
    return [
        shutil.which("unshare") or "unshare", "--mount", "--propagation", "slave", "--",
        shutil.which("sh") or "/bin/sh", "-c", unmount, crun(),
    ]


@functools.cache
def hybrid_cgroups() -> bool:
    """Whether cgroup v1 hierarchies and a cgroup2 one with controllers are both mounted (crun refuses that).
    Read once: every task start asks (`missing`), and a host does not change its cgroup layout under a node."""
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


class StartFailed(Exception):
    """The created container could not be started; the message says why."""


def start(state_root: Path, container_id: str) -> None:
    """`crun start` of a created container: release its init, which waits on the exec FIFO."""
    fifo = Path(state_root) / container_id / "exec.fifo"
    try:
        # Non-blocking: with no reader (the init is gone) the open fails at once instead of waiting for one.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StartFailed(f"container {container_id} is not created: no {fifo}") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise StartFailed(f"container {container_id} is not running") from None
        raise StartFailed(f"cannot open {fifo}: {exc.strerror}") from None
    try:
        os.unlink(fifo)
        os.write(fd, b"\0")
    except OSError as exc:
        raise StartFailed(f"cannot start container {container_id}: {exc.strerror}") from None
    finally:
        os.close(fd)


def error_text(stderr: bytes) -> str:
    """crun's message, without the decoration runc's logging would add, in Docker's words where it has its own."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    message = lines[-1] if lines else ""
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
