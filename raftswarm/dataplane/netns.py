"""Named network namespaces and netlink sockets opened inside them.

A namespace is named as with `ip netns` (a bind mount under /run/netns), so `ip netns exec` and these
helpers see the same ones. `rtnl(None)` talks to the calling thread's own namespace, which is what a node
started by `raftswarm cluster up` (itself inside a namespace) needs for its underlay.

Nothing here forks a Python process: pyroute2's netns helpers fork the (threaded, asyncio) node, and a
signal reaching such a fork before it exits is written to the parent's asyncio wakeup socket, which the
node takes as its own SIGTERM. Namespaces are made with `ip netns` (fork + exec), and a netlink socket in
another namespace is opened by the calling thread entering it with setns(2) and coming back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from raftswarm.dataplane import DataplaneError

NETNS_RUN_DIR = "/run/netns"


def netns_path(name: str) -> str:
    """The bind-mount path of the named namespace (what /proc/<pid>/ns/net is for a process)."""
    _check_name(name)
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    """Whether the named namespace is mounted in this mount namespace.

    A name whose bind mount is missing here (made by a process inside `ip netns exec`, whose mounts do not
    propagate back, or left after its namespace died) is an empty file: it counts as absent."""
    path = netns_path(name)
    try:
        return os.stat(path).st_dev != os.stat(NETNS_RUN_DIR).st_dev
    except FileNotFoundError:
        return False


def ensure_netns(name: str) -> bool:
    """Create the named namespace unless it exists; True if this call created it."""
    if netns_exists(name):
        return False
    remove_netns(name)  # a stale, unmounted name would make the creation fail
    _ip_netns("add", name)
    return True


def remove_netns(name: str) -> None:
    """Remove the named namespace (or a stale name) if there is one. Devices left in it go with it once
    nothing holds it any more."""
    if not os.path.lexists(netns_path(name)):
        return
    if not netns_exists(name):
        os.unlink(netns_path(name))  # a stale name: nothing is mounted on it
        return
    _ip_netns("delete", name)


def _ip_netns(action: str, name: str) -> None:
    done = subprocess.run(["ip", "netns", action, name], capture_output=True, text=True)
    if done.returncode != 0:
        raise DataplaneError(f"cannot {action} network namespace {name!r}: {done.stderr.strip()}")


_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _socket_in(namespace: str) -> IPRoute:
    """An IPRoute whose netlink socket lives in `namespace`: this thread enters it, opens the socket, and
    returns to its own namespace."""
    path = namespace if namespace.startswith("/") else netns_path(namespace)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return IPRoute()
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


@contextlib.contextmanager
def rtnl(namespace: str | None, what: str) -> Iterator[IPRoute]:
    """A route-netlink socket in `namespace` (a name under /run/netns, a path such as /proc/<pid>/ns/net,
    or None for the calling thread's own namespace). Kernel and OS errors inside the block become
    DataplaneError with `what` as context; the namespace is never created by this."""
    try:
        ipr = IPRoute() if namespace is None else _socket_in(namespace)
    except OSError as exc:
        raise DataplaneError(f"{what}: cannot enter network namespace {namespace!r}: {exc.strerror or exc}") from exc
    try:
        with ipr:
            yield ipr
    except NetlinkError as exc:
        raise DataplaneError(f"{what}: kernel refused: {os.strerror(exc.code)} (errno {exc.code})") from exc
    except OSError as exc:
        raise DataplaneError(f"{what}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def ignoring(*codes: int) -> Iterator[None]:
    """Swallow netlink errors with these errno codes (ENOENT on a delete that already happened, ...)."""
    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise DataplaneError(f"invalid network namespace name {name!r}")
