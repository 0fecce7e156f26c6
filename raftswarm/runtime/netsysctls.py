"""The sysctls of a task's network interfaces (net.ipv4.conf.eth0.rp_filter and the like), set once they exist.

crun writes a container's sysctls while it makes the container, before the node plugs its interfaces in, so
it would find no /proc/sys/net/ipv4/conf/eth0 (runc fails alike: moby#47619). `runtime.spec` leaves these
out of the container's spec, and `ContainerRuntime.start` sets them here after `prepare` has plugged the
interfaces in and before the task's process starts. A sysctl of an interface the task does not have fails
the task, naming the interface.

They are written from a thread of the node's own that enters the container's network namespace: what
/proc/sys/net shows depends on the namespace of the thread that looks. The thread is one of its own, made
for the purpose and ended after, so no thread the node reuses is ever left in a task's namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from ..errors import RaftswarmError
from ..objects.containerspec import SYSCTL_NAME, sysctl_interface

_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


class SysctlFailed(RaftswarmError):
    """An interface sysctl could not be set; the message says which and why."""


def set_interface_sysctls(netns: str, settings: Mapping[str, str]) -> None:
    """Write `settings` (sysctl -> value) in the network namespace at path `netns` (/proc/<pid>/ns/net)."""
    failure: list[BaseException] = []

    def write_all() -> None:
        try:
            try:
                with open(netns, "rb", buffering=0) as namespace:
                    entered = _LIBC.setns(namespace.fileno(), _CLONE_NEWNET) == 0
                    error = ctypes.get_errno()
            except OSError as exc:  # the task is gone already
                entered, error = False, exc.errno or 0
            if not entered:
                raise SysctlFailed(f"cannot enter the task's network namespace: {os.strerror(error)}")
            for key, value in settings.items():
                _write(key, value)
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=write_all, name="interface-sysctls")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _write(key: str, value: str) -> None:
    if not SYSCTL_NAME.fullmatch(key) or sysctl_interface(key) is None:
        raise SysctlFailed(f'"{key}" is not the sysctl of a network interface')  # checked at create, and again here
    path = Path("/proc/sys", *key.split("."))
    if not path.parent.is_dir():
        raise SysctlFailed(f'sysctl "{key}": the task has no interface {sysctl_interface(key)}')
    try:
        path.write_text(value)
    except OSError as exc:
        reason = "there is no such setting" if exc.errno == errno.ENOENT else exc.strerror
        raise SysctlFailed(f'sysctl "{key}" = "{value}": {reason}') from None
