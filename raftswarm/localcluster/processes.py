"""Node processes of the local cluster harnesses (`LocalCluster`, `SwarmCluster`): started with their output
in a log file, waited for until their API answers, and ended by PID.

A `SwarmCluster` may be brought down by another process than the one that started it (`raftswarm cluster
down`), so a `NodeProcess` is a PID together with the process's start time as the kernel records it: a PID
that has since been given to some other process is never signalled. The child writes both to its pidfile
itself, between fork and exec, so a node is on record even if whoever started it dies the moment after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..api.client import ApiClient, ApiError
from ..errors import RaftswarmError

# Docker gives a container 10 s between SIGTERM and SIGKILL; a node flushes and closes well within that.
STOP_GRACE = 10.0
# After SIGKILL the kernel only has to reap; longer than this means the process is stuck in the kernel.
KILL_WAIT = 5.0
POLL_INTERVAL = 0.05


class NodeStartError(RaftswarmError):
    """A node process exited, or did not answer on its API socket in time; the message ends with its log."""


def spawn(argv: Sequence[str], log_path: Path, detach: bool = False, pidfile: Path | None = None) -> subprocess.Popen:
    """Start `argv` with stdout and stderr appended to `log_path`. `detach` puts it in a session of its own,
    so a Ctrl-C in the terminal that started it does not reach it; `pidfile` gets "PID START_TIME"."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
            preexec_fn=_pidfile_writer(str(pidfile)) if pidfile is not None else None,  # noqa: PLW1509 (see there)
        )


def _pidfile_writer(path: str) -> Callable[[], None]:
    """What the child runs between fork and exec (exec keeps PID and start time). Only system calls and no
    locks: the forked child must not wait on a lock some other thread of the parent held."""

    def write() -> None:
        fd = os.open("/proc/self/stat", os.O_RDONLY)
        stat = os.read(fd, 4096)
        os.close(fd)
        start_time = stat[stat.rindex(b")") + 2 :].split()[19]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"%d %s\n" % (os.getpid(), start_time))
        os.close(fd)

    return write


def stop_child(process: subprocess.Popen, timeout: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def wait_for_api(name: str, socket: Path, running: Callable[[], bool], log_path: Path, timeout: float) -> None:
    """Wait until the node's API socket answers a ping; raise `NodeStartError` if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise NodeStartError(f"{name} exited: {log_tail(log_path)}")
        if socket.exists():
            client = ApiClient(str(socket), 2.0)
            try:
                await client.ping()
                return
            except (OSError, ApiError, TimeoutError):
                pass
            finally:
                await client.close()
        await asyncio.sleep(POLL_INTERVAL)
    raise NodeStartError(f"{name} did not answer on {socket}: {log_tail(log_path)}")


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if there is no such
    process or it is a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class NodeProcess:
    """A process known by PID and start time; `child` is set in the process that started it (to reap it)."""

    pid: int
    start_time: int
    child: subprocess.Popen | None = field(default=None, compare=False, repr=False)

    @classmethod
    def started(cls, child: subprocess.Popen) -> NodeProcess:
        start_time = process_start_time(child.pid)
        # A child that already exited: -1 matches no live process, so it counts as not running.
        return cls(child.pid, start_time if start_time is not None else -1, child)

    @classmethod
    def from_pidfile(cls, path: Path) -> NodeProcess | None:
        try:
            pid, start_time = path.read_text().split()
        except (OSError, ValueError):
            return None
        return cls(int(pid), int(start_time))

    def running(self) -> bool:
        if self.child is not None and self.child.poll() is not None:
            return False
        return process_start_time(self.pid) == self.start_time

    def signal(self, signum: int) -> None:
        if self.running():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        """Wait until the process has exited; True if it did within `timeout`."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    def kill(self) -> None:
        """kill -9: no clean shutdown, nothing flushed that was not already fsynced."""
        self.signal(signal.SIGKILL)
        self.wait(KILL_WAIT)


def stop_all(processes: Iterable[NodeProcess], grace: float = STOP_GRACE) -> list[NodeProcess]:
    """SIGTERM every process at once, SIGKILL those still running after `grace`. Returns those still running
    even then: stuck in the kernel, or another user's (signalling them is not permitted)."""
    processes, signalled = list(processes), []
    for process in processes:
        try:
            process.signal(signal.SIGTERM)
        except PermissionError:
            continue
        signalled.append(process)
    deadline = time.monotonic() + grace
    for process in signalled:
        process.wait(max(0.0, deadline - time.monotonic()))
        if process.running():
            process.kill()
    return [p for p in processes if p.running()]
