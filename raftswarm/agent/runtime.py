"""Running a node's tasks: the agent's side of the task shims (`agent.shim`).

A task is the service's command run on the host's filesystem: there is no image store, the image name is
recorded, not pulled, and the command is `ContainerSpec.Command + Args` (docker's entrypoint + command)
with the spec's Env, Dir and User. A task without a command cannot run and is rejected with a message that
says what to give. `TaskRuntime.start` checks the spec here, so most mistakes are rejected before anything
starts, then starts a shim that runs the task -- as root in namespaces of its own, with its secrets on a
private tmpfs at /run/secrets (see `agent.shim` for what the task sees and what it does not) -- and keeps
running it if the agent dies. `TaskRuntime.attach` finds such a task again after the agent restarted.

Stopping is SIGTERM and SIGKILL after the stop grace period (Docker's default 10 s), as `docker stop`.
A task's output is kept by its shim in a bounded ring of lines (`RunningTask.logs`).

Without root (or without CAP_SYS_ADMIN) the task is a plain process, and a warning says isolation is off.
What is weaker: the task shares the host's PID, network, UTS and mount namespaces (it sees every process and
interface, the hostname is the host's); its secrets are files in a private directory on memory-backed
/dev/shm (`/dev/shm/raftswarm-XXXX`, mode 0700, given to the task in RAFTSWARM_SECRETS_DIR): any process of
the agent's user can read them, they are owned by the agent's user whatever File.UID/GID say, and they stay
while the task runs even if the agent is gone; no cgroup limits.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import signal
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from ..errors import RaftswarmError
from . import shim
from .shim import SECRETS_DIR

log = logging.getLogger(__name__)

DEFAULT_STOP_GRACE_NS = 10_000_000_000
START_TIMEOUT = 10.0
"""How long a task may take to exec its command (normally ~0.1 s: one interpreter and a few mounts) before
it is rejected."""
_CAP_SYS_ADMIN = 21
_FRAME = struct.Struct(">I")
_MAX_REPLY = 8 << 20

_SHIM_PATH = [str(Path(__file__).resolve().parents[2]), str(Path(msgpack.__file__).resolve().parents[1])]
_BOOTSTRAP = f"import sys; sys.path[:0] = {_SHIM_PATH!r}; from raftswarm.agent.shim import main; main(sys.argv[1:])"
"""The shim runs with `-I -S`: no site module (a third of an interpreter's start), so the paths of raftswarm
and of msgpack, its one dependency, are given."""


class TaskRejected(RaftswarmError):
    """The task cannot be run as specified; the message says why, for `service ps`."""


class ShimGone(RaftswarmError):
    """The task's shim is not there any more (killed, or the machine restarted): the task's fate is unknown."""


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


def isolation_available() -> bool:
    """Whether this process may make namespaces and mounts: root with CAP_SYS_ADMIN."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


@dataclass(frozen=True)
class _SecretFile:
    path: str
    """Relative to /run/secrets (or to the unprivileged secrets directory)."""
    uid: int
    gid: int
    mode: int
    data: bytes


@dataclass(frozen=True)
class _Launch:
    """A task's spec, validated and resolved on the agent's side, so most mistakes are rejected before
    anything starts."""

    task_id: str
    argv: list[str]
    env: dict[str, str]
    workdir: str
    uid: int | None
    gid: int | None
    groups: list[int]
    hostname: str
    secrets: list[_SecretFile]
    limits: dict[str, int]

    @classmethod
    def of(cls, task: dict[str, Any], secrets: Mapping[str, bytes], name: str) -> _Launch:
        spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
        argv = command_of(task)
        uid, gid = task_user(task)
        workdir = spec.get("Dir") or "/"
        if not os.path.isdir(workdir):
            raise TaskRejected(f"working directory {workdir} does not exist on this node")
        hostname = spec.get("Hostname") or name[:64]
        if not hostname or len(hostname.encode()) > 64:
            raise TaskRejected(f"hostname {hostname!r} is not 1 to 64 bytes long")
        env = task_environment(task)
        if not any(entry.partition("=")[0] == "HOSTNAME" for entry in spec.get("Env") or []):
            env["HOSTNAME"] = hostname
        limits = ((task.get("Spec") or {}).get("Resources") or {}).get("Limits") or {}
        return cls(
            task_id=task["ID"],
            argv=argv,
            env=env,
            workdir=workdir,
            uid=uid,
            gid=gid,
            groups=_groups(uid, gid),
            hostname=hostname,
            secrets=_secret_files(spec, secrets),
            limits={key: int(limits[key]) for key in ("MemoryBytes", "NanoCPUs", "Pids") if limits.get(key)},
        )

    def payload(self, isolated: bool, hold: bool = False) -> bytes:
        """What the shim reads from its stdin: the spec as one JSON line, then the secrets' bytes back to back.
        A held task is one on overlay networks: it also gets a resolv.conf naming its resolver."""
        spec = {
            "isolated": isolated,
            "hold": hold,
            "resolv_conf": task_resolv_conf() if hold else None,
            "limits": self.limits,
            "argv": self.argv,
            "env": self.env,
            "dir": self.workdir,
            "uid": self.uid,
            "gid": self.gid,
            "groups": self.groups,
            "hostname": self.hostname,
            "secrets": [
                {"path": f.path, "uid": f.uid, "gid": f.gid, "mode": f.mode, "size": len(f.data)} for f in self.secrets
            ],
        }
        return json.dumps(spec).encode() + b"\n" + b"".join(f.data for f in self.secrets)


TASK_RESOLVER = "127.0.0.11"


def task_resolv_conf(host_file: str = "/etc/resolv.conf") -> str:
    """A task's resolv.conf: its own resolver (which forwards other names to the host's servers), and the
    host's search domains and options, as Docker writes it."""
    kept = []
    try:
        with open(host_file) as host:
            kept = [line.strip() for line in host if line.split()[:1] in (["search"], ["options"])]
    except OSError:
        pass
    return "".join(f"{line}\n" for line in [f"nameserver {TASK_RESOLVER}", *kept])


def _groups(uid: int | None, gid: int | None) -> list[int]:
    if uid is None or gid is None:
        return []
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]


def _secret_files(spec: dict[str, Any], secrets: Mapping[str, bytes]) -> list[_SecretFile]:
    files: dict[str, _SecretFile] = {}
    for ref in spec.get("Secrets") or []:
        target = ref.get("File")
        if not target:
            continue  # a runtime target (a credential spec), not a file
        secret = ref.get("SecretName") or ref.get("SecretID")
        if ref.get("SecretID") not in secrets:
            raise TaskRejected(f"secret {secret} ({ref.get('SecretID')}) was not delivered to this node with the task")
        path = _secret_path(target.get("Name") or ref.get("SecretName") or "")
        if path in files:
            raise TaskRejected(f"two secrets of the task target the same file {path}")
        try:
            uid, gid = int(target.get("UID") or 0), int(target.get("GID") or 0)
        except ValueError:
            raise TaskRejected(f"secret {secret}: File.UID and File.GID must be numeric") from None
        mode = target.get("Mode")
        files[path] = _SecretFile(path, uid, gid, 0o444 if mode is None else int(mode), secrets[ref["SecretID"]])
    return list(files.values())


def _secret_path(name: str) -> str:
    if name.startswith("/"):
        relative = os.path.relpath(os.path.normpath(name), SECRETS_DIR)
        if relative == ".." or relative.startswith("../"):
            raise TaskRejected(
                f"secret target {name} is outside {SECRETS_DIR}: tasks run on the host's filesystem, "
                f"so secrets can only appear under {SECRETS_DIR}; give a relative name"
            )
    else:
        relative = os.path.normpath(name)
    if relative in ("", ".") or relative == ".." or relative.startswith("../"):
        raise TaskRejected(f"invalid secret target file name {name!r}")
    return relative



class TaskRuntime:
    """A node's tasks: started through shims whose sockets live in `directory` (the worker's state
    directory; it never holds secrets), found there again after the agent restarted."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._base, self._directory_fd = shim.short_directory(str(self.directory))
        self._reapers: set[asyncio.Task[int]] = set()
        """Waits for the shims this agent started, so they do not linger as zombies once they exit."""

    async def close(self, wait: float = 2.0) -> None:
        """Stop following the shims: wait up to `wait` seconds for the released ones to exit. Shims of tasks
        still running go on without the agent."""
        if self._reapers:
            await asyncio.wait(self._reapers, timeout=wait)
        for reaper in self._reapers:
            reaper.cancel()
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    def _socket(self, task_id: str) -> str:
        return shim.socket_path(self._base, task_id)

    async def start(
        self,
        task: dict[str, Any],
        secrets: Mapping[str, bytes],
        *,
        name: str,
        prepare: Callable[[RunningTask], Awaitable[None]] | None = None,
    ) -> RunningTask:
        """Start the task. `secrets` maps secret ID -> data for the secrets the task references; `name` is
        the task's name, its hostname unless the spec gives one. Raises TaskRejected if it cannot run.

        `prepare`, for an isolated task, runs once the task's namespaces exist and before its command
        starts (the agent plugs its network interfaces in there); if it raises, the task is rejected."""
        launch = _Launch.of(task, secrets, name)
        isolated = isolation_available()
        hold = isolated and prepare is not None
        if not isolated:
            log.warning(
                "task %s runs without isolation (no namespaces, secrets in /dev/shm, no limits): "
                "the agent is not root with CAP_SYS_ADMIN",
                launch.task_id,
            )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            str(self.directory),
            launch.task_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
            cwd="/",
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                process.stdin.write(launch.payload(isolated, hold))
                await process.stdin.drain()
                process.stdin.close()
                pid = 0
                while line := await process.stdout.readline():
                    if line.startswith(b"W"):
                        log.warning("%s", line[1:].decode(errors="replace").strip())
                    elif line.startswith(b"P"):
                        pid = int(line[1:])
                        break
                    else:
                        break
                failed = line if not pid else b""
                if hold and pid:
                    ready = await process.stdout.readline()
                    failed = b"" if ready == b"N\n" else ready + await process.stdout.read()
                if pid and not failed:
                    running = RunningTask(self._socket(launch.task_id), launch.task_id, pid, isolated)
                    if hold:
                        assert prepare is not None
                        try:
                            await prepare(running)
                        except Exception as exc:
                            await running.release()
                            raise TaskRejected(f"cannot prepare the task: {exc}") from None
                        await _request(running.socket_file, {"op": "start"})
                    failed = await process.stdout.read()
        except TimeoutError:
            failed = f"Ethe task did not start within {START_TIMEOUT:g} s".encode()
        except BaseException:
            process.kill()
            raise
        finally:
            # The shim runs on as the agent's child until its task is released: reap it then.
            reaper = asyncio.create_task(process.wait(), name=f"shim-{launch.task_id[:12]}")
            self._reapers.add(reaper)
            reaper.add_done_callback(self._reapers.discard)
        running = RunningTask(self._socket(launch.task_id), launch.task_id, pid, isolated)
        if failed:
            message = failed[1:].decode(errors="replace").strip() if failed.startswith(b"E") else ""
            if pid:
                await running.release()
            else:
                process.kill()
            raise TaskRejected(message or "the task shim failed before starting the command")
        return running

    def task_ids(self) -> list[str]:
        """The tasks whose shims have a socket here (running, or ended and not yet released)."""
        return sorted(p.name.removesuffix(".sock") for p in self.directory.glob("*.sock"))

    async def attach(self, task_id: str) -> RunningTask | None:
        """The task `task_id` started by an earlier agent on this node; None (and its stale socket removed)
        if its shim is gone."""
        path = self._socket(task_id)
        try:
            state = await _request(path, {"op": "state"})
        except ShimGone:
            # Its task died with it (PR_SET_PDEATHSIG); what the shim would have removed is left to us.
            cgroups = shim.leftover_cgroups(task_id)
            for _ in range(100):
                if cgroups.remove():
                    break
                await asyncio.sleep(0.02)  # the task's processes are still being killed
            else:
                log.warning("task %s: cgroup %s still busy; left behind", task_id, cgroups)
            (self.directory / f"{task_id}.sock").unlink(missing_ok=True)
            return None
        return RunningTask(path, task_id, state["pid"], state["isolated"])


class RunningTask:
    """A started task, through its shim."""

    def __init__(self, socket_file: str, task_id: str, pid: int, isolated: bool) -> None:
        self.socket_file = socket_file
        self.task_id = task_id
        self.pid = pid
        """The host PID of the task's init (isolated) or of its command."""
        self.isolated = isolated

    @property
    def netns_path(self) -> str | None:
        """The task's network namespace while it runs (None when not isolated)."""
        return f"/proc/{self.pid}/ns/net" if self.isolated else None

    async def wait(self) -> int:
        """The command's exit code (128+N if signal N killed it), once it and all it started are gone and
        its output is read. Raises ShimGone if the shim disappeared."""
        return (await _request(self.socket_file, {"op": "wait"}, timeout=None))["exit"]

    async def signal(self, signum: int) -> None:
        await _request(self.socket_file, {"op": "signal", "signal": int(signum)})

    async def stop(self, grace_ns: int | None) -> int:
        """SIGTERM to the task, SIGKILL after the grace period (Docker's 10 s if None); returns the exit code."""
        grace = (DEFAULT_STOP_GRACE_NS if grace_ns is None else grace_ns) / 1e9
        await self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await self.wait()
        except TimeoutError:
            await self.signal(signal.SIGKILL)
            return await self.wait()

    async def logs(
        self, *, tail: int | None = None, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[tuple[str, float, bytes]]:
        """The task's output lines, oldest first: ("stdout" or "stderr", unix time, the line without its
        newline); the last `tail`, those from `since` on; with `follow`, then new ones until the task ends."""
        reader, writer = await _connect(self.socket_file)
        try:
            writer.write(shim.encode_frame({"op": "logs", "tail": tail, "since": since, "follow": follow}))
            while True:
                frame = await _read_frame(reader)
                if frame is None or frame.get("end"):
                    return
                for stream, when, line in frame.get("lines") or []:
                    yield stream, when, line
        finally:
            writer.close()

    async def release(self) -> None:
        """Let the shim go: it kills what still runs, removes the task's cgroup, secrets and socket, and exits."""
        try:
            await _request(self.socket_file, {"op": "release"})
        except ShimGone:
            pass


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path, limit=_MAX_REPLY)
    except OSError as exc:
        raise ShimGone(f"the task's shim at {path} does not answer: {exc.strerror or exc}") from None


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        (length,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        if length > _MAX_REPLY:
            raise ShimGone(f"the task's shim sent a {length}-byte frame")
        return msgpack.unpackb(await reader.readexactly(length), raw=False)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def _request(path: str, request: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any]:
    reader, writer = await _connect(path)
    try:
        writer.write(shim.encode_frame(request))
        async with asyncio.timeout(timeout):
            reply = await _read_frame(reader)
    finally:
        writer.close()
    if reply is None:
        raise ShimGone(f"the task's shim at {path} went away")
    return reply
