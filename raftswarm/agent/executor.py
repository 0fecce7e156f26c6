"""Running one task: the service's command as a process on this host.

There is no image store: the image name is recorded, not pulled, and the task runs
`ContainerSpec.Command + ContainerSpec.Args` (docker's entrypoint + command) on the host's filesystem,
with the spec's Env, Dir and User. A task without a command cannot run and is rejected with a message
that says what to give. Stopping sends SIGTERM to the task's process group and SIGKILL after the stop
grace period (Docker's default 10 s), as `docker stop` does.

Isolation (namespaces, /run/secrets, cgroups) is the task runtime's next step; this module runs plain
processes, each in its own session, killed if the agent dies so none outlives the node that started it.
"""

from __future__ import annotations

import asyncio
import ctypes
import grp
import os
import pwd
import signal
from typing import Any

from ..errors import RaftswarmError

DEFAULT_STOP_GRACE_NS = 10_000_000_000
_PR_SET_PDEATHSIG = 1


class TaskRejected(RaftswarmError):
    """The task cannot be run as specified; the message says why, for `service ps`."""


def command_of(task: dict[str, Any]) -> list[str]:
    spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    argv = list(spec.get("Command") or []) + list(spec.get("Args") or [])
    if not argv:
        image = spec.get("Image", "IMAGE")
        raise TaskRejected(
            f"no command to run: raftswarm runs the service's command on the host and does not pull images; "
            f"give one, e.g. `raftswarm service create {image} sleep infinity`"
        )
    return argv


def task_environment(task: dict[str, Any]) -> dict[str, str]:
    spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOSTNAME": spec.get("Hostname") or task["ID"][:12]}
    for entry in spec.get("Env") or []:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def task_user(task: dict[str, Any]) -> tuple[int | None, int | None]:
    """The spec's User ("name", "uid", "name:group" or "uid:gid") as numeric IDs; (None, None) for the agent's own."""
    user = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("User") or ""
    if not user:
        return None, None
    name, _, group = user.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            raise TaskRejected(f"unable to find user {name}: no matching entries in passwd file") from None
        uid, gid = int(name), int(name)
    else:
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        if not group.isdigit():
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise TaskRejected(f"unable to find group {group}: no matching entries in group file") from None
        else:
            gid = int(group)
    if os.geteuid() != 0 and uid != os.geteuid():
        raise TaskRejected(f"cannot run as user {user}: the agent is not running as root")
    return uid, gid


def die_with_parent() -> None:
    """In the child: be killed when the agent dies (PR_SET_PDEATHSIG), so no task outlives its node."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class TaskProcess:
    """A started task's process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, task: dict[str, Any]) -> TaskProcess:
        argv = command_of(task)
        uid, gid = task_user(task)
        workdir = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Dir") or "/"
        if not os.path.isdir(workdir):
            raise TaskRejected(f"working directory {workdir} does not exist on this node")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=task_environment(task),
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                user=uid,
                group=gid,
                preexec_fn=die_with_parent,
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise TaskRejected(f"cannot start {argv[0]}: {exc.strerror}") from None
        return cls(process)

    async def wait(self) -> int:
        return await self.process.wait()

    async def stop(self, grace_ns: int | None) -> int:
        """SIGTERM to the task's process group, SIGKILL after the grace period; returns the exit status."""
        grace = (DEFAULT_STOP_GRACE_NS if grace_ns is None else grace_ns) / 1e9
        self._signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            return await self.process.wait()

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass
