"""The isolated task runtime: a task's command in namespaces of its own, its secrets on a private tmpfs.

`IsolatedTask` has the interface of `executor.TaskProcess` (start, pid, wait, stop, kill) plus the task's
recent output (`logs`) and a handle on its network namespace (`netns_path`). (The agent still runs
`executor.TaskProcess`; switching it to this runtime, with logs and reattachment, is the next step.)

As root (with CAP_SYS_ADMIN), three processes per task:

    agent ─┬─ stdin: the spec, then the secrets' bytes ──> init
           ├─ fd 3: status ("P<init pid>", "E<why it failed>", EOF once the command is exec'd)
           └─ relay    python, host namespaces; the agent's child
                └─ init    python, PID 1 of a new PID namespace, in new mount, UTS and network namespaces
                     └─ the command    exec'd, PID 2

- The relay exists because a PID namespace's first process must be forked by someone outside it, after
  unshare(CLONE_NEWPID). It waits for init and exits with init's status, so the agent's ordinary
  subprocess wait gives the exit code, and returns only once the whole namespace is gone (the kernel
  turns a namespace's init into a zombie only after every other process in it has died).
- Init is a fork of the relay (one interpreter start per task), not the command itself: the kernel drops
  signals to a namespace's init that has no handler for them, so a plain `sleep` as PID 1 would ignore
  the SIGTERM of `stop`, and nobody would reap orphans. Init forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
  SIGUSR1 and SIGUSR2 to the command's process group, reaps everything, and exits when the command does,
  with its exit code, or 128+N if a signal N killed it (as a shell and Docker report it: 137, 143).
- The agent signals init through a pidfd, opened before init can have exited (init first waits for the
  spec the agent writes after opening it), so a recycled PID is never signalled. SIGKILL to init takes
  the whole namespace down.
- Everything is ctypes calls to unshare(2), mount(2) and prctl(2) from this module (Python 3.11 has no
  os.unshare), run as `python -I -c` in the relay; util-linux's `unshare` would still need a program
  inside to mount and write the secrets, and would put a process the agent did not start in between.
- Tasks die with the agent, as plain processes did: the relay has PR_SET_PDEATHSIG against the agent and
  init against the relay.

Inside, as a Docker container would have it on the host's own filesystem (there is no image):

- Mount propagation is private (`mount --make-rprivate /`): nothing mounted inside reaches the host.
- The host's /proc is detached and a fresh one mounted for the new PID namespace, so the task sees only
  its own processes and cannot reach another task's files through /proc/<pid>/root.
- /run is a private tmpfs into which the host's /run entries are bind-mounted back (so /etc/resolv.conf
  -> /run/... and sockets under /run keep working) and on which /run/secrets is a tmpfs of its own
  (nodev, nosuid, noexec, mode 0755, sized to the secrets plus a small margin). The mount point is created
  only inside the private /run: the host's disk never gets a /run/secrets directory.
- Each referenced secret is written as /run/secrets/<File.Name> with its File.UID, File.GID and File.Mode
  (default 0444, 0, 0) by init, from bytes it read from the agent's pipe: secrets never pass through a
  file, argv or the environment. /run/secrets is then remounted read-only. An absolute File.Name is
  accepted only under /run/secrets; anywhere else it is rejected, because on the host's filesystem it
  would need a mount point on the host's disk.
- The network namespace has only loopback, brought up. The networking code adds interfaces through
  `netns_path` (/proc/<init pid>/ns/net, valid while the task runs: `ip link set DEV netns <pid>`,
  `nsenter --net=PATH`, or open it and setns(2) to keep a handle).
- Hostname = the spec's Hostname or the task name, `<service>.<slot>.<task id>` (cut to the kernel's
  64 bytes). The command runs with the spec's Env, Dir (default /), User (with that user's supplementary
  groups), umask 0022, stdin /dev/null, and Docker's default capability bounding set: a root task keeps
  chown, setuid, net_bind_service and the like, but cannot mount, remount its secrets writable, load
  modules or read raw memory. (ContainerSpec.CapabilityAdd/Drop are not honoured yet.) It still sees
  the host's filesystem, /dev, /sys and /dev/shm: there is no image and no IPC namespace.
- Limits go to a cgroup per task: cgroup v2 where the controller is there (under
  <v2 root>/raftswarm-tasks/), else the controller's v1 hierarchy (hybrid hosts; nested under the
  agent's own v1 cgroup). Limits.MemoryBytes -> memory.max (v1 memory.limit_in_bytes); NanoCPUs ->
  cpu.max "<quota> 100000" as Docker computes it; Pids -> pids.max. Init joins before the command starts,
  so everything in the namespace is counted. The cgroup is removed when the task ends. A limit the host
  cannot apply is logged as a warning and the task runs without it.

Stdout and stderr are pipes read into a bounded ring of lines (`logs`, newest last).

Without root (or without CAP_SYS_ADMIN) the task is a plain process, as `executor.TaskProcess` runs it,
and a warning says isolation is off. What is weaker: the task shares the host's PID, network, UTS and mount
namespaces (it sees every process and interface, the hostname is the host's); its secrets are files in a
private directory on memory-backed /dev/shm (`/dev/shm/raftswarm-XXXX`, mode 0700, given to the task in
RAFTSWARM_SECRETS_DIR; any process of the agent's user can read them, they are owned by the agent's user
whatever File.UID/GID say, and they stay behind if the agent is killed with SIGKILL); no cgroup limits.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import logging
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .executor import DEFAULT_STOP_GRACE_NS, TaskRejected, command_of, die_with_parent, task_environment, task_user

log = logging.getLogger(__name__)

SECRETS_DIR = "/run/secrets"
SECRETS_TMPFS_MARGIN = 64 * 1024
"""Room on the secrets tmpfs beyond the secrets' own pages; it is read-only once written, so this only
absorbs rounding."""
RUN_TMPFS_SIZE = 16 * 1024 * 1024
"""The task's private /run holds the host's entries as bind mounts plus what the task writes there
(pid files, sockets): small, and charged to the task's memory cgroup."""
LOG_MAX_LINES = 1000
LOG_MAX_BYTES = 1024 * 1024
"""A task's log ring keeps its last 1,000 lines and at most 1 MiB, so a node with hundreds of tasks holds
a few hundred MiB of logs at worst."""
LOG_MAX_LINE = 16 * 1024
"""Longer lines are split into 16 KiB pieces, where Docker's log drivers split them."""
START_TIMEOUT = 10.0
"""How long the runtime may take to exec the command (normally ~0.1 s: one interpreter and a few mounts)
before the task is rejected."""
LOG_DRAIN_TIMEOUT = 1.0
"""After the task ended, how long its output may still arrive; only an unisolated task can leave a
descendant behind that holds the pipe open."""
CGROUP_PARENT = "raftswarm-tasks"
CPU_PERIOD_US = 100_000
"""CFS period for NanoCPUs limits: Docker's 100 ms."""

# Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
# NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
DEFAULT_CAPABILITIES = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})
_CAP_SYS_ADMIN = 21

_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_CGROUP_CONTROLLERS = ("memory", "cpu", "pids")

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x04000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP = 1, 24
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_LIBC.unshare.argtypes = [ctypes.c_int]
_LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOTSTRAP = (
    f"import sys; sys.path[:0] = [{_PACKAGE_ROOT!r}]; from raftswarm.agent.runtime import _relay; _relay(sys.argv[1:])"
)


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

    def payload(self) -> bytes:
        """What init reads from its stdin: the spec as one JSON line, then the secrets' bytes back to back."""
        spec = {
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


class IsolatedTask:
    """A started task: its command isolated in namespaces of its own (as root) or a plain process."""

    def __init__(self, process: asyncio.subprocess.Process, *, isolated: bool) -> None:
        self.process = process
        self.isolated = isolated
        self._init_pid: int | None = None
        self._pidfd: int | None = None
        self._cgroup: _TaskCgroup | None = None
        self._secrets_dir: str | None = None
        self._logs = _LogRing()
        self._readers = [
            asyncio.create_task(_capture(process.stdout, "stdout", self._logs)),
            asyncio.create_task(_capture(process.stderr, "stderr", self._logs)),
        ]
        self._ended: asyncio.Task[int] | None = None

    @property
    def pid(self) -> int:
        """The host PID of the task's init (as root) or of its process."""
        return self._init_pid if self._init_pid is not None else self.process.pid

    @property
    def netns_path(self) -> str | None:
        """The task's network namespace while it runs (None when not isolated)."""
        return f"/proc/{self._init_pid}/ns/net" if self._init_pid is not None else None

    @property
    def logs(self) -> list[tuple[str, float, bytes]]:
        """The task's last output lines, oldest first: ("stdout" or "stderr", time.time(), line without its newline)."""
        return list(self._logs.entries)

    @classmethod
    async def start(cls, task: dict[str, Any], secrets: Mapping[str, bytes], *, name: str) -> IsolatedTask:
        """Start the task. `secrets` maps secret ID -> data for the secrets the task references; `name` is
        the task's name, its hostname unless the spec gives one. Raises TaskRejected if it cannot run."""
        launch = _Launch.of(task, secrets, name)
        if isolation_available():
            return await cls._start_isolated(launch)
        log.warning(
            "task %s runs without isolation (no namespaces, secrets in /dev/shm, no limits): "
            "the agent is not root with CAP_SYS_ADMIN",
            launch.task_id,
        )
        return await cls._start_plain(launch)

    @classmethod
    async def _start_isolated(cls, launch: _Launch) -> IsolatedTask:
        cgroup = _TaskCgroup.create(launch.task_id, launch.limits)
        status_read, status_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-c",
                _BOOTSTRAP,
                str(os.getpid()),
                str(status_write),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(status_write,),
                env={},
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(status_read)
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            os.close(status_write)
        self = cls(process, isolated=True)
        self._cgroup = cgroup
        try:
            error = await self._launch(launch, status_read)
        except BaseException:
            self.kill()
            await self.wait()
            raise
        if error:
            self.kill()
            await self.wait()
            raise TaskRejected(error)
        return self

    async def _launch(self, launch: _Launch, status_fd: int) -> str:
        """Hand the spec to init and follow its status; returns why it failed, or "" once the command runs."""
        loop = asyncio.get_running_loop()
        status = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(status), os.fdopen(status_fd, "rb", buffering=0)
        )
        try:
            async with asyncio.timeout(START_TIMEOUT):
                started = await status.readline()
                if not started.startswith(b"P"):
                    return self._runtime_failure(started)
                self._init_pid = int(started[1:])
                self._pidfd = os.pidfd_open(self._init_pid)
                if self._cgroup is not None:
                    self._cgroup.join(self._init_pid, launch.task_id)
                assert self.process.stdin is not None
                self.process.stdin.write(launch.payload())
                await self.process.stdin.drain()
                self.process.stdin.close()
                failed = await status.read()
                return self._runtime_failure(failed) if failed else ""
        except TimeoutError:
            return f"the task did not start within {START_TIMEOUT:g} s"
        finally:
            transport.close()

    def _runtime_failure(self, status: bytes) -> str:
        if status.startswith(b"E"):
            return status[1:].decode(errors="replace").strip()
        errors = [line for stream, _, line in self._logs.entries if stream == "stderr"]
        detail = errors[-1].decode(errors="replace") if errors else "no error output"
        return f"the task runtime failed before starting the command: {detail}"

    @classmethod
    async def _start_plain(cls, launch: _Launch) -> IsolatedTask:
        env = dict(launch.env)
        secrets_dir = _write_secrets_dir(launch.secrets) if launch.secrets else None
        if secrets_dir is not None:
            env["RAFTSWARM_SECRETS_DIR"] = secrets_dir
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                env=env,
                cwd=launch.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                user=launch.uid,
                group=launch.gid,
                extra_groups=launch.groups if launch.uid is not None and os.geteuid() == 0 else None,
                preexec_fn=die_with_parent,
            )
        except BaseException as exc:
            if secrets_dir is not None:
                shutil.rmtree(secrets_dir, ignore_errors=True)
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise TaskRejected(f"cannot start {launch.argv[0]}: {exc.strerror}") from None
            raise
        self = cls(process, isolated=False)
        self._secrets_dir = secrets_dir
        return self

    async def wait(self) -> int:
        """The command's exit code (128+N if signal N killed it), once the task and all it started are gone
        and its cgroup and secrets are removed."""
        if self._ended is None:
            self._ended = asyncio.create_task(self._end(), name=f"task-end-{self.pid}")
        return await asyncio.shield(self._ended)

    async def stop(self, grace_ns: int | None) -> int:
        """SIGTERM to the task, SIGKILL after the grace period (Docker's 10 s if None); returns the exit code."""
        grace = (DEFAULT_STOP_GRACE_NS if grace_ns is None else grace_ns) / 1e9
        self._signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), grace)
        except TimeoutError:
            self.kill()
            return await self.wait()

    def kill(self) -> None:
        """SIGKILL to the task: as root its whole PID namespace dies."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.process.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signum)  # init forwards SIGTERM to the command
            elif self.isolated:
                self.process.send_signal(signum)  # still starting: init dies with the relay
            else:
                os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    async def _end(self) -> int:
        code = await self.process.wait()
        try:
            await asyncio.wait(self._readers, timeout=LOG_DRAIN_TIMEOUT)
        finally:
            for reader in self._readers:
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            await self._release()
        return 128 - code if code < 0 else code

    async def _release(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._cgroup is not None:
            # Only if the relay was killed before init was known can init still be dying here.
            for _ in range(100):
                if self._cgroup.remove():
                    break
                await asyncio.sleep(0.01)
            else:
                log.warning("task %s: cgroup %s still busy; left behind", self.pid, self._cgroup)
            self._cgroup = None
        if self._secrets_dir is not None:
            shutil.rmtree(self._secrets_dir, ignore_errors=True)
            self._secrets_dir = None


class _LogRing:
    """The last LOG_MAX_LINES lines of a task's output, LOG_MAX_BYTES at most."""

    def __init__(self) -> None:
        self.entries: deque[tuple[str, float, bytes]] = deque()
        self.size = 0

    def add(self, stream: str, line: bytes) -> None:
        now = time.time()
        for start in range(0, max(len(line), 1), LOG_MAX_LINE):
            piece = line[start : start + LOG_MAX_LINE]
            self.entries.append((stream, now, piece))
            self.size += len(piece)
        while len(self.entries) > LOG_MAX_LINES or self.size > LOG_MAX_BYTES:
            self.size -= len(self.entries.popleft()[2])


async def _capture(reader: asyncio.StreamReader | None, stream: str, ring: _LogRing) -> None:
    assert reader is not None
    pending = b""
    while chunk := await reader.read(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            ring.add(stream, line)
        if len(pending) >= LOG_MAX_LINE:
            ring.add(stream, pending)
            pending = b""
    if pending:
        ring.add(stream, pending)


def _write_secrets_dir(files: list[_SecretFile]) -> str:
    """Unprivileged: the secrets as files in a new mode-0700 directory on memory-backed /dev/shm."""
    if _filesystem_type("/dev/shm") not in ("tmpfs", "devtmpfs", "ramfs"):
        raise TaskRejected(
            "this node has no memory-backed /dev/shm to hold the task's secrets without root; "
            "run the node as root to give tasks their own /run/secrets"
        )
    directory = tempfile.mkdtemp(prefix="raftswarm-", dir="/dev/shm")
    try:
        for secret in files:
            _write_secret(directory, secret, chown=os.geteuid() == 0)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def _write_secret(directory: str, secret: _SecretFile, *, chown: bool) -> None:
    path = os.path.join(directory, secret.path)
    parent = os.path.dirname(path)
    if parent != directory:
        os.makedirs(parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(secret.data)
        while view:
            view = view[os.write(fd, view) :]
        if chown:
            os.fchown(fd, secret.uid, secret.gid)
        os.fchmod(fd, secret.mode)
    finally:
        os.close(fd)


def _filesystem_type(path: str) -> str | None:
    """The type of the filesystem mounted at the longest mount point above `path`."""
    best, kind = "", None
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point, fstype = fields[4], fields[fields.index("-") + 1]
            contains = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if contains and len(mount_point) >= len(best):
                best, kind = mount_point, fstype
    return kind


# --- cgroups -----------------------------------------------------------------------------------------


def _cgroup_mounts() -> tuple[Path | None, dict[str, Path]]:
    """The cgroup v2 mount, and the v1 mount of each controller, from this process's mount table."""
    v2: Path | None = None
    v1: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            separator = fields.index("-")
            mount_point, fstype, options = fields[4], fields[separator + 1], fields[separator + 3]
            if fstype == "cgroup2" and v2 is None:
                v2 = Path(mount_point)
            elif fstype == "cgroup":
                for option in options.split(","):
                    v1.setdefault(option, Path(mount_point))
    return v2, v1


def _own_v1_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as cgroups:
        for line in cgroups:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy != "0":
                for controller in controllers.split(","):
                    own[controller] = path
    return own


def _limit_files(limits: dict[str, int]) -> dict[str, dict[int, list[tuple[str, str]]]]:
    """controller -> {cgroup version -> [(file, value)]} for the limits the task asks for."""
    files: dict[str, dict[int, list[tuple[str, str]]]] = {}
    if "MemoryBytes" in limits:
        memory = str(limits["MemoryBytes"])
        files["memory"] = {2: [("memory.max", memory)], 1: [("memory.limit_in_bytes", memory)]}
    if "NanoCPUs" in limits:
        quota = str(max(1000, limits["NanoCPUs"] * CPU_PERIOD_US // 1_000_000_000))
        files["cpu"] = {
            2: [("cpu.max", f"{quota} {CPU_PERIOD_US}")],
            1: [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", quota)],
        }
    if "Pids" in limits:
        files["pids"] = {2: [("pids.max", str(limits["Pids"]))], 1: [("pids.max", str(limits["Pids"]))]}
    return files


class _TaskCgroup:
    """A task's cgroup: one directory on cgroup v2, or one per v1 hierarchy for controllers v2 lacks."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories

    def __repr__(self) -> str:
        return ", ".join(map(str, self.directories))

    @classmethod
    def create(cls, task_id: str, limits: dict[str, int]) -> _TaskCgroup | None:
        leaf = f"{task_id[:25]}-{os.urandom(4).hex()}"
        wanted = _limit_files(limits)
        placement: dict[str, tuple[Path, int]] = {}
        directories: list[Path] = []
        try:
            v2, v1 = _cgroup_mounts()
            available = set((v2 / "cgroup.controllers").read_text().split()) if v2 is not None else set()
            on_v2 = [controller for controller in _CGROUP_CONTROLLERS if controller in available]
            if v2 is not None and on_v2:
                directory = _make_v2_cgroup(v2, leaf, on_v2)
                directories.append(directory)
                placement.update((controller, (directory, 2)) for controller in on_v2)
            own = _own_v1_cgroups()
            for controller in _CGROUP_CONTROLLERS:
                if controller not in placement and controller in v1:
                    directory = v1[controller] / own.get(controller, "/").lstrip("/") / CGROUP_PARENT / leaf
                    if directory not in directories:
                        directory.mkdir(parents=True)
                        directories.append(directory)
                    placement[controller] = (directory, 1)
        except OSError as exc:
            cls(directories).remove()
            (log.warning if wanted else log.debug)("task %s: no cgroup, limits not applied: %s", task_id, exc)
            return None
        for controller, versions in wanted.items():
            if controller not in placement:
                log.warning(
                    "task %s: %s limit not applied: no %s cgroup controller on this host",
                    task_id,
                    controller,
                    controller,
                )
                continue
            directory, version = placement[controller]
            for name, value in versions[version]:
                try:
                    (directory / name).write_text(value)
                except OSError as exc:
                    log.warning("task %s: %s limit not applied: %s: %s", task_id, controller, directory / name, exc)
        return cls(directories) if directories else None

    def join(self, pid: int, task_id: str) -> None:
        for directory in self.directories:
            try:
                (directory / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                log.warning("task %s: not in cgroup %s, its limits do not apply: %s", task_id, directory, exc)

    def remove(self) -> bool:
        """Remove the task's directories (and the parent if no task is left in it); False while busy."""
        removed = True
        for directory in self.directories:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
                continue
            try:
                directory.parent.rmdir()
            except OSError:
                pass  # other tasks' cgroups are still in it
        return removed


def _make_v2_cgroup(root: Path, leaf: str, controllers: list[str]) -> Path:
    enable = " ".join(f"+{controller}" for controller in controllers)
    parent = root / CGROUP_PARENT
    for attempt in range(2):
        (root / "cgroup.subtree_control").write_text(enable)
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text(enable)
        try:
            (parent / leaf).mkdir()
            return parent / leaf
        except FileNotFoundError:
            if attempt:  # another agent removed the empty parent in between: make it again, once
                raise
    raise AssertionError("unreachable")


# --- inside: the relay and the task's init --------------------------------------------------------------


def _libc_call(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def c_string(value: str | None) -> bytes | None:
        return None if value is None else value.encode()

    result = _LIBC.mount(c_string(source), target.encode(), c_string(fstype), flags, c_string(data))
    _libc_call(result, f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _libc_call(_LIBC.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _describe(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror or str(exc)


def _report(status_fd: int, message: str) -> None:
    os.write(status_fd, b"E" + message.encode(errors="replace"))


def _relay(args: list[str]) -> NoReturn:
    """The agent's child: forks the task's init into a new PID namespace and exits with its status."""
    agent_pid, status_fd = int(args[0]), int(args[1])
    os.set_inheritable(status_fd, False)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent_pid:
        os._exit(1)  # the agent died before we could follow it
    try:
        _libc_call(_LIBC.unshare(_CLONE_NEWPID), "unshare")
    except OSError as exc:
        _report(status_fd, f"cannot create the task's PID namespace: {exc.strerror}")
        os._exit(1)
    lifeline, relay_alive = os.pipe()  # init sees EOF on it if the relay died before init could follow it
    init_pid = os.fork()
    if init_pid == 0:
        os.close(relay_alive)
        _init(status_fd, lifeline)
    os.close(lifeline)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the log pipes then end with the namespace, not with the relay
    os.write(status_fd, b"P%d\n" % init_pid)
    os.close(status_fd)
    for signum in _FORWARDED_SIGNALS:
        signal.signal(signum, lambda forwarded, _: os.kill(init_pid, forwarded))
    _, wait_status = os.waitpid(init_pid, 0)
    os._exit(_exit_code(wait_status))


def _init(status_fd: int, lifeline: int) -> NoReturn:
    """PID 1 of the task: isolates, starts the command, forwards signals to it, reaps, exits with its code."""
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([lifeline], [], [], 0)[0]:
            os._exit(1)
        chunks = []
        while chunk := os.read(0, 1 << 16):
            chunks.append(chunk)
        if not chunks:
            os._exit(1)  # the agent went away before sending the spec
        header, _, data = b"".join(chunks).partition(b"\n")
        del chunks
        spec = json.loads(header)
        os.umask(0o022)
        _isolate(spec, data)
        del data
        with open("/proc/sys/kernel/cap_last_cap") as last:
            capabilities = range(int(last.read()) + 1)
    except OSError as exc:
        _report(status_fd, f"cannot isolate the task: {_describe(exc)}")
        os._exit(1)
    command = os.fork()
    if command == 0:
        _exec_command(spec, status_fd, capabilities)

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.killpg(command, signum)
        except ProcessLookupError:
            try:
                os.kill(command, signum)  # not yet its own process group leader
            except ProcessLookupError:
                pass

    for signum in _FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    os.close(status_fd)  # the agent sees EOF once the command's exec closed its copy too
    while True:
        pid, wait_status = os.wait()
        if pid == command:
            os._exit(_exit_code(wait_status))


def _isolate(spec: dict[str, Any], data: bytes) -> None:
    """In init: new namespaces, private mounts, a fresh /proc, /run/secrets, hostname, loopback."""
    _libc_call(_LIBC.unshare(_CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWNET), "unshare")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    host_run = os.open("/run", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    # Detached, not covered: a task that could unmount a covering /proc would find the host's under it.
    result = _LIBC.umount2(b"/proc", _MNT_DETACH)
    if result != 0 and ctypes.get_errno() != 22:  # EINVAL: /proc was not a mount point
        _libc_call(result, "umount /proc")
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _private_run(host_run)
    _secrets_tmpfs(spec["secrets"], data)
    try:
        socket.sethostname(spec["hostname"])
    except OSError as exc:
        raise OSError(exc.errno, f"set hostname {spec['hostname']!r}: {exc.strerror}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16s24x", b"lo"))
        flags = struct.unpack_from("h", request, 16)[0]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def _private_run(host_run: int) -> None:
    """A tmpfs on /run with the host's entries bind-mounted back, so /run/secrets needs nothing on the host.

    An entry that cannot be bound is left out, with a line in the task's log, rather than failing the task."""
    _mount("tmpfs", "/run", "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=0755,size={RUN_TMPFS_SIZE}")
    with os.scandir(f"/proc/self/fd/{host_run}") as entries:
        for entry in entries:
            target = f"/run/{entry.name}"
            if entry.name == "secrets":
                continue  # the task gets its own
            try:
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_dir(follow_symlinks=False):
                    os.mkdir(target)
                    _mount(entry.path, target, None, _MS_BIND | _MS_REC)
                else:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                    _mount(entry.path, target, None, _MS_BIND)
            except OSError as exc:
                print(f"raftswarm: the host's {target} is not visible in this task: {_describe(exc)}", file=sys.stderr)
                if os.path.isdir(target) and not os.path.islink(target):
                    os.rmdir(target)
                elif os.path.lexists(target):
                    os.unlink(target)
    os.close(host_run)


def _secrets_tmpfs(files: list[dict[str, Any]], data: bytes) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    size = SECRETS_TMPFS_MARGIN + sum(-(-f["size"] // page) * page for f in files)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    os.mkdir(SECRETS_DIR)
    _mount("tmpfs", SECRETS_DIR, "tmpfs", flags, f"mode=0755,size={size}")
    offset = 0
    for f in files:
        secret = _SecretFile(f["path"], f["uid"], f["gid"], f["mode"], data[offset : offset + f["size"]])
        offset += f["size"]
        _write_secret(SECRETS_DIR, secret, chown=True)
    _mount(None, SECRETS_DIR, None, _MS_REMOUNT | _MS_RDONLY | flags)


def _exec_command(spec: dict[str, Any], status_fd: int, capabilities: range) -> NoReturn:
    argv = spec["argv"]
    what = "cannot prepare the command"
    try:
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE and SIGXFSZ; exec would keep that
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        what = "cannot drop capabilities"
        for capability in capabilities:
            if capability not in DEFAULT_CAPABILITIES:
                _prctl(_PR_CAPBSET_DROP, capability)
        if spec["uid"] is not None:
            what = f"cannot run as user {spec['uid']}:{spec['gid']}"
            os.setgroups(spec["groups"])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        what = f"cannot change to working directory {spec['dir']}"
        os.chdir(spec["dir"])
        what = f"cannot start {argv[0]}"
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        _report(status_fd, f"{what}: {exc.strerror}")
    os._exit(127)
