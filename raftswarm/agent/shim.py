"""The task shim: one small process per task that starts the task, supervises it and outlives the agent.

Like containerd's shim, it lets a worker's agent be killed and started again without stopping its tasks:
the shim holds the task's output and exit status and answers on a unix socket in the worker's state
directory, `<state-dir>/worker/tasks/<task id>.sock` (mode 0600, in a 0700 directory), so the restarted
agent finds the tasks it was running and reconciles instead of starting duplicates. The agent side is
`agent.runtime`; this module runs outside asyncio, with a `selectors` loop, and imports little, because
every task start pays for its interpreter.

As root (with CAP_SYS_ADMIN):

    agent ── shim     python, host namespaces, a session of its own; outlives the agent
               └── init     fork of the shim: PID 1 of a new PID namespace, in new mount, UTS and network
                    │       namespaces; forwards signals to the command, reaps orphans
                    └── the command    exec'd, PID 2

- The agent writes the spec (one JSON line, no secrets) and then the secrets' bytes to the shim's stdin
  and reads its status from the shim's stdout: `W<warning>` lines, `P<host pid of init>` once init
  exists, then EOF once the command was exec'd, or `E<why it failed>`. Secrets never pass through a
  file, argv or the environment; init has them by fork and writes them onto its tmpfs.
- The shim unshares the PID namespace and forks init, the namespace's first process, so it is init's
  parent: it reaps it and may signal it by PID without racing PID reuse. Init waits for the shim to have
  put it into the task's cgroup before it starts anything, and dies with the shim (PR_SET_PDEATHSIG), so
  a task never runs unsupervised; SIGKILL to init takes the whole namespace down.
- Init is not the command: the kernel drops signals without a handler to a namespace's init, so a plain
  `sleep` as PID 1 would ignore the SIGTERM of `stop`, and nobody would reap orphans. Init forwards
  SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command's process group and exits with the
  command's code, or 128+N if signal N killed it (as a shell and Docker report it: 137, 143).

Inside, as a Docker container would have it on the host's own filesystem (there is no image):

- Mount propagation is private: nothing mounted inside reaches the host. The host's /proc is detached
  and a fresh one mounted for the new PID namespace, so the task sees only its own processes and cannot
  reach another task's files through /proc/<pid>/root.
- /run is a private tmpfs into which the host's /run entries are bind-mounted back (so
  /etc/resolv.conf -> /run/... and sockets under /run keep working), and /run/secrets a tmpfs of its own
  on it (nodev, nosuid, noexec, mode 0755, sized to the secrets plus a small margin), remounted read-only
  once the secrets are written with their File.UID, File.GID and File.Mode. The mount point exists only
  inside the private /run: the host's disk never gets a /run/secrets directory.
- The network namespace has only loopback, up; the networking code plugs interfaces in through
  /proc/<init pid>/ns/net. The hostname is the spec's Hostname or the task's name.
- The command runs with the spec's Env, Dir (default /), User (with its supplementary groups), umask
  0022, stdin /dev/null, and Docker's default capability bounding set: a root task keeps chown, setuid,
  net_bind_service and the like, but cannot mount, remount its secrets writable, load modules or read
  raw memory. It still sees the host's filesystem, /dev, /sys and /dev/shm: no image, no IPC namespace.
- Limits go to a cgroup per task: cgroup v2 where the controller is there (under
  <v2 root>/raftswarm-tasks/), else the controller's v1 hierarchy (hybrid hosts; nested under the
  shim's own v1 cgroup). MemoryBytes -> memory.max, NanoCPUs -> cpu.max "<quota> 100000" as Docker
  computes it, Pids -> pids.max. A limit the host cannot apply is a warning; the task runs without it.

Unprivileged the task is a plain process in its own session (see `agent.runtime` for what is weaker), its
secrets files in a private mode-0700 directory on memory-backed /dev/shm, named in RAFTSWARM_SECRETS_DIR
and removed by the shim when the task ends.

The socket speaks frames of a 4-byte big-endian length and a msgpack map; each connection makes one
request:

    {"op": "state"}                      -> {"task", "pid", "isolated", "exit": None or the exit code}
    {"op": "wait"}                       -> {"exit": code}, once the task ended and its output is read
    {"op": "start"}                      -> {"ok": True}   (a task started with `hold` runs its command now)
    {"op": "signal", "signal": N}        -> {"ok": True}   (SIGTERM is forwarded to the command)
    {"op": "logs", "tail": N or None, "since": unix time or None, "follow": bool}
                                         -> {"lines": [[stream, time, line], ...]} frames, then {"end": True}
    {"op": "release"}                    -> {"ok": True}, then the shim kills what still runs, removes its
                                            cgroup, secrets and socket, and exits
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, NoReturn

import msgpack

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
LOG_DRAIN_TIMEOUT = 1.0
"""After the task ended, how long its output may still arrive; only an unisolated task can leave a
descendant behind that holds the pipe open."""
MAX_REQUEST = 64 * 1024
"""Requests are a few small fields; a peer cannot make the shim buffer more."""
MAX_CLIENT_BACKLOG = 8 << 20
"""A log reader that falls this far behind is disconnected rather than grow the shim without bound."""
LINES_PER_FRAME = 256
CGROUP_PARENT = "raftswarm-tasks"
CPU_PERIOD_US = 100_000
"""CFS period for NanoCPUs limits: Docker's 100 ms."""

# Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
# NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
DEFAULT_CAPABILITIES = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31})

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_CGROUP_CONTROLLERS = ("memory", "cpu", "pids")

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x04000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP = 1, 24
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_FRAME = struct.Struct(">I")
_UNIX_PATH_MAX = 107

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_LIBC.unshare.argtypes = [ctypes.c_int]
_LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def socket_path(directory: str, task_id: str) -> str:
    """The shim's socket for `task_id`; through /proc/self/fd when the real path is too long for a unix
    socket (the caller then keeps `directory` open as that fd: see `short_directory`)."""
    return os.path.join(directory, f"{task_id}.sock")


def short_directory(directory: str) -> tuple[str, int | None]:
    """`directory`, or a /proc/self/fd path to it (and the fd to close later) if socket paths under it
    would exceed the kernel's 107 bytes."""
    if len(directory) + 40 <= _UNIX_PATH_MAX:
        return directory, None
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}", fd


def encode_frame(body: dict[str, Any]) -> bytes:
    payload = msgpack.packb(body, use_bin_type=True)
    return _FRAME.pack(len(payload)) + payload


def release_all(directory: str, timeout: float = 5.0) -> list[str]:
    """Release every shim with a socket in `directory` (what a stopped or killed node left running): each
    kills its task and exits. For harnesses tearing nodes down; returns what could not be released."""
    failures = []
    base, directory_fd = short_directory(directory) if os.path.isdir(directory) else (directory, None)
    try:
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if not name.endswith(".sock"):
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(os.path.join(base, name))
                    sock.sendall(encode_frame({"op": "release"}))
                    sock.recv(64)
                except ConnectionRefusedError:
                    os.unlink(os.path.join(base, name))  # its shim is gone already
                except OSError as exc:
                    failures.append(f"{os.path.join(directory, name)}: {exc.strerror or exc}")
    finally:
        if directory_fd is not None:
            os.close(directory_fd)
    return failures


# --- the shim's main loop --------------------------------------------------------------------------------


class _LogRing:
    """The last LOG_MAX_LINES lines of the task's output, LOG_MAX_BYTES at most."""

    def __init__(self) -> None:
        self.entries: deque[tuple[str, float, bytes]] = deque()
        self.size = 0

    def add(self, stream: str, line: bytes) -> list[tuple[str, float, bytes]]:
        now = time.time()
        added = []
        for start in range(0, max(len(line), 1), LOG_MAX_LINE):
            entry = (stream, now, line[start : start + LOG_MAX_LINE])
            self.entries.append(entry)
            self.size += len(entry[2])
            added.append(entry)
        while len(self.entries) > LOG_MAX_LINES or self.size > LOG_MAX_BYTES:
            self.size -= len(self.entries.popleft()[2])
        return added


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = bytearray()
        self.request: dict[str, Any] | None = None
        self.streamed = False
        """A log reader was sent the history; it waits for new lines and the end."""
        self.closing = False
        """Close once the outbox is sent."""


class _Shim:
    def __init__(self, task_id: str, listener: socket.socket, socket_file: str, spec: dict[str, Any]) -> None:
        self.task_id = task_id
        self.listener = listener
        self.socket_file = socket_file
        self.spec = spec
        self.isolated = bool(spec.get("isolated"))
        self.selector = selectors.DefaultSelector()
        self.ring = _LogRing()
        self.pending: dict[str, bytes] = {}
        self.pipes: dict[int, str] = {}
        self.pid = 0
        self.pidfd = -1
        self.exit_code: int | None = None
        self.drain_deadline: float | None = None
        self.finished = False
        """The task ended and its output is read: waiters and followers get their answers."""
        self.released = False
        self.clients: set[_Client] = set()
        self.cgroup: TaskCgroup | None = None
        self.hold_write = -1
        """With `hold`: init waits on this pipe after isolating, until the agent says `start`."""
        self.secrets_dir: str | None = None

    def start(self, data: bytes, status_fd: int) -> None:
        """Start the task: init in new namespaces (isolated) or the command as a plain process."""
        spec = self.spec
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        self.pipes = {out_read: "stdout", err_read: "stderr"}
        go_read, go_write = os.pipe()
        hold_read = -1
        if self.isolated and spec.get("hold"):
            hold_read, self.hold_write = os.pipe()
        if self.isolated:
            self.cgroup = TaskCgroup.create(self.task_id, spec.get("limits") or {}, lambda m: _warn(status_fd, m))
            _libc_call(_LIBC.unshare(_CLONE_NEWPID), "unshare the PID namespace")
        else:
            self.secrets_dir = _write_secrets_dir(spec["secrets"], data) if spec["secrets"] else None
            if self.secrets_dir is not None:
                spec["env"]["RAFTSWARM_SECRETS_DIR"] = self.secrets_dir
        pid = os.fork()
        if pid == 0:
            try:
                os.close(go_write)
                if self.hold_write >= 0:
                    os.close(self.hold_write)
                for fd in (out_read, err_read):
                    os.close(fd)
                self.listener.close()
                os.dup2(out_write, 1)
                os.dup2(err_write, 2)
                for fd in (out_write, err_write):
                    os.close(fd)
                _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                # Wait for the shim to have placed us in the cgroup; EOF instead means it died (and so
                # never sees a task it could not supervise: PDEATHSIG is set first).
                if os.read(go_read, 1) != b"1":
                    os._exit(1)
                os.close(go_read)
                if self.isolated:
                    _init(spec, data, status_fd, hold_read)
                _exec_command(spec, status_fd, isolated=False)
            except BaseException as exc:  # noqa: BLE001 -- a forked child must never return into the shim
                try:
                    _report(status_fd, f"cannot start the task: {exc}")
                finally:
                    os._exit(1)
        for fd in (go_read, out_write, err_write):
            os.close(fd)
        if hold_read >= 0:
            os.close(hold_read)
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        if self.cgroup is not None:
            self.cgroup.join(pid, lambda m: _warn(status_fd, m))
        os.write(status_fd, b"P%d\n" % pid)
        os.write(go_write, b"1")
        os.close(go_write)
        os.close(status_fd)  # the agent sees EOF once the command's exec closed the last copy

    def serve(self) -> NoReturn:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.pidfd, selectors.EVENT_READ, "exit")
        for fd in self.pipes:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, "pipe")
        while not (self.released and self.finished and not any(c.outbox for c in self.clients)):
            timeout = None
            if self.drain_deadline is not None:
                timeout = max(0.0, self.drain_deadline - time.monotonic())
            for key, events in self.selector.select(timeout):
                if key.data == "accept":
                    self._accept()
                elif key.data == "exit":
                    self._reap()
                elif key.data == "pipe":
                    self._read_pipe(key.fd)
                else:
                    self._serve_client(key.data, events)
            if self.drain_deadline is not None and (not self.pipes or time.monotonic() >= self.drain_deadline):
                self._finish()
        self._cleanup()
        os._exit(0)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        client = _Client(sock)
        self.clients.add(client)
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _reap(self) -> None:
        _, wait_status = os.waitpid(self.pid, 0)
        self.selector.unregister(self.pidfd)
        os.close(self.pidfd)
        self.exit_code = _exit_code(wait_status)
        if self.cgroup is not None:
            # The namespace's init is reaped only after everything in it died, so the cgroup is empty.
            self.cgroup.remove()
            self.cgroup = None
        if self.secrets_dir is not None:
            _remove_tree(self.secrets_dir)
            self.secrets_dir = None
        self.drain_deadline = time.monotonic() + LOG_DRAIN_TIMEOUT

    def _read_pipe(self, fd: int) -> None:
        stream = self.pipes[fd]
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(fd)
            os.close(fd)
            del self.pipes[fd]
            rest = self.pending.pop(stream, b"")
            if rest:
                self._add_lines(stream, [rest])
            return
        *lines, rest = (self.pending.get(stream, b"") + chunk).split(b"\n")
        if len(rest) >= LOG_MAX_LINE:
            lines.append(rest)
            rest = b""
        self.pending[stream] = rest
        if lines:
            self._add_lines(stream, lines)

    def _add_lines(self, stream: str, lines: list[bytes]) -> None:
        added = [entry for line in lines for entry in self.ring.add(stream, line)]
        for client in list(self.clients):
            request = client.request
            if request is not None and request.get("op") == "logs" and request.get("follow"):
                since = request.get("since")
                fresh = [list(e) for e in added if since is None or e[1] >= since]
                if fresh:
                    self._send(client, {"lines": fresh})

    def _finish(self) -> None:
        for fd in list(self.pipes):
            self.selector.unregister(fd)
            os.close(fd)
            stream = self.pipes.pop(fd)
            rest = self.pending.pop(stream, b"")
            if rest:
                self._add_lines(stream, [rest])
        self.drain_deadline = None
        self.finished = True
        for client in list(self.clients):
            if client.request is not None:
                self._answer(client)

    def _serve_client(self, client: _Client, events: int) -> None:
        if events & selectors.EVENT_READ and client.request is None:
            try:
                chunk = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self._drop(client)
                return
            if chunk:
                client.inbox += chunk
                self._parse(client)
        elif events & selectors.EVENT_READ:
            # A client that already made its request only ever closes; anything else it sends is ignored.
            try:
                if client.sock.recv(65536) == b"":
                    self._drop(client)
                    return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(client)
                return
        if events & selectors.EVENT_WRITE:
            self._flush(client)

    def _parse(self, client: _Client) -> None:
        if len(client.inbox) < _FRAME.size:
            return
        (length,) = _FRAME.unpack_from(client.inbox)
        if length > MAX_REQUEST:
            self._drop(client)
            return
        if len(client.inbox) < _FRAME.size + length:
            return
        try:
            request = msgpack.unpackb(client.inbox[_FRAME.size : _FRAME.size + length], raw=False)
        except Exception:
            self._drop(client)
            return
        client.inbox = b""
        if not isinstance(request, dict):
            self._drop(client)
            return
        client.request = request
        self._answer(client)

    def _answer(self, client: _Client) -> None:
        request = client.request
        assert request is not None
        op = request.get("op")
        if op == "state":
            self._reply(client, {"task": self.task_id, "pid": self.pid, "isolated": self.isolated, "exit": self.exit_code})
        elif op == "wait":
            if self.finished:
                self._reply(client, {"exit": self.exit_code})
        elif op == "start":
            if self.hold_write >= 0:
                os.write(self.hold_write, b"1")
                os.close(self.hold_write)
                self.hold_write = -1
            self._reply(client, {"ok": True})
        elif op == "signal":
            signum = request.get("signal")
            if isinstance(signum, int) and self.exit_code is None:
                self._signal(signum)
            self._reply(client, {"ok": True})
        elif op == "logs":
            self._logs(client, request)
        elif op == "release":
            self.released = True
            self._unlink()  # at once: from now on nobody finds this task here
            if self.exit_code is None:
                self._signal(signal.SIGKILL)
            self._reply(client, {"ok": True})
        else:
            self._reply(client, {"error": f"unknown request {op!r}"})

    def _logs(self, client: _Client, request: dict[str, Any]) -> None:
        if client.streamed:
            # Called again when the task finished: the history was sent; only the end is left.
            self._reply(client, {"end": True})
            return
        client.streamed = True
        since, tail = request.get("since"), request.get("tail")
        entries = [list(e) for e in self.ring.entries if since is None or e[1] >= since]
        if isinstance(tail, int) and tail >= 0:
            entries = entries[len(entries) - tail :] if tail else []
        for start in range(0, len(entries), LINES_PER_FRAME):
            self._send(client, {"lines": entries[start : start + LINES_PER_FRAME]})
        if not request.get("follow") or self.finished:
            self._reply(client, {"end": True})

    def _signal(self, signum: int) -> None:
        try:
            if self.isolated:
                os.kill(self.pid, signum)  # init forwards it; SIGKILL ends the namespace
            else:
                os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def _send(self, client: _Client, body: dict[str, Any]) -> None:
        client.outbox += encode_frame(body)
        if len(client.outbox) > MAX_CLIENT_BACKLOG:
            self._drop(client)
            return
        self._flush(client)

    def _reply(self, client: _Client, body: dict[str, Any]) -> None:
        client.closing = True
        client.request = None
        self._send(client, body)

    def _flush(self, client: _Client) -> None:
        if client not in self.clients:
            return
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbox[:sent]
        if client.outbox:
            self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        elif client.closing:
            self._drop(client)
        else:
            self.selector.modify(client.sock, selectors.EVENT_READ, client)

    def _drop(self, client: _Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.selector.unregister(client.sock)
            client.sock.close()

    def _unlink(self) -> None:
        try:
            os.unlink(self.socket_file)
        except FileNotFoundError:
            pass

    def _cleanup(self) -> None:
        self._unlink()
        self.listener.close()


def main(args: list[str]) -> NoReturn:
    """The shim's entry point: `<tasks directory> <task id>`; the spec and secrets on stdin."""
    directory, task_id = args
    status_fd = os.dup(1)  # the agent's status pipe; not inherited across the command's exec
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)  # the agent's pipes must not stay open in a process that may outlive it
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    os.dup2(null, 0)
    os.close(null)
    header, _, data = b"".join(chunks).partition(b"\n")
    del chunks
    try:
        spec = json.loads(header)
    except ValueError:
        _fail(status_fd, "the shim got no task spec")
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)  # the shim outlives terminals and readers; SIGTERM still ends it
    base, directory_fd = short_directory(directory)
    socket_file = socket_path(base, task_id)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            listener.bind(socket_file)
        finally:
            os.umask(old_umask)
        listener.listen(16)
    except OSError as exc:
        _fail(status_fd, f"cannot listen on {socket_path(directory, task_id)}: {exc.strerror}")
    shim = _Shim(task_id, listener, socket_file, spec)
    try:
        shim.start(data, status_fd)
    except OSError as exc:
        os.unlink(socket_file)
        _fail(status_fd, f"cannot start the task: {_describe(exc)}")
    del data
    shim.serve()  # `directory_fd`, if any, stays open: the socket is unlinked through it at the end


def _fail(status_fd: int, message: str) -> NoReturn:
    _report(status_fd, message)
    os._exit(1)


def _warn(status_fd: int, message: str) -> None:
    os.write(status_fd, b"W" + message.replace("\n", " ").encode(errors="replace") + b"\n")


def _report(status_fd: int, message: str) -> None:
    os.write(status_fd, b"E" + message.encode(errors="replace"))


def _remove_tree(path: str) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)


# --- inside: the task's init ------------------------------------------------------------------------------


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


def _init(spec: dict[str, Any], data: bytes, status_fd: int, hold_fd: int) -> NoReturn:
    """PID 1 of the task: isolates, starts the command, forwards signals to it, reaps, exits with its code.

    With a `hold_fd`, it says `N` (its namespaces exist) once isolated and waits for the shim's go before
    starting the command, so the agent can plug the task's network interfaces in first."""
    try:
        os.umask(0o022)
        _isolate(spec, data)
        del data
        with open("/proc/sys/kernel/cap_last_cap") as last:
            capabilities = range(int(last.read()) + 1)
    except OSError as exc:
        _report(status_fd, f"cannot isolate the task: {_describe(exc)}")
        os._exit(1)
    if hold_fd >= 0:
        os.write(status_fd, b"N\n")
        if os.read(hold_fd, 1) != b"1":
            os._exit(1)  # the shim was told to release the task before it started
        os.close(hold_fd)
    command = os.fork()
    if command == 0:
        _exec_command(spec, status_fd, isolated=True, capabilities=capabilities)

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.killpg(command, signum)
        except ProcessLookupError:
            try:
                os.kill(command, signum)  # not yet its own process group leader
            except ProcessLookupError:
                pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    os.close(status_fd)
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
    if spec.get("resolv_conf"):
        _private_resolv_conf(spec["resolv_conf"])
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


def _private_resolv_conf(content: str) -> None:
    """The task's own /etc/resolv.conf (its resolver at 127.0.0.11), bind-mounted over the host's in the
    task's mount namespace only, as Docker gives each container its own file."""
    path = "/run/raftswarm-resolv.conf"
    with open(path, "w") as file:
        file.write(content)
    os.chmod(path, 0o644)
    _mount(path, "/etc/resolv.conf", None, _MS_BIND)


def _secrets_tmpfs(files: list[dict[str, Any]], data: bytes) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    size = SECRETS_TMPFS_MARGIN + sum(-(-f["size"] // page) * page for f in files)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    os.mkdir(SECRETS_DIR)
    _mount("tmpfs", SECRETS_DIR, "tmpfs", flags, f"mode=0755,size={size}")
    for f, secret in zip(files, _split_secrets(files, data)):
        _write_secret(SECRETS_DIR, f, secret, chown=True)
    _mount(None, SECRETS_DIR, None, _MS_REMOUNT | _MS_RDONLY | flags)


def _split_secrets(files: list[dict[str, Any]], data: bytes) -> list[bytes]:
    offset, pieces = 0, []
    for f in files:
        pieces.append(data[offset : offset + f["size"]])
        offset += f["size"]
    return pieces


def _write_secrets_dir(files: list[dict[str, Any]], data: bytes) -> str:
    """Unprivileged: the secrets as files in a new mode-0700 directory on memory-backed /dev/shm."""
    directory = f"/dev/shm/raftswarm-{os.urandom(6).hex()}"
    os.mkdir(directory, 0o700)
    try:
        for f, secret in zip(files, _split_secrets(files, data)):
            _write_secret(directory, f, secret, chown=os.geteuid() == 0)
    except BaseException:
        _remove_tree(directory)
        raise
    return directory


def _write_secret(directory: str, file: dict[str, Any], secret: bytes, *, chown: bool) -> None:
    path = os.path.join(directory, file["path"])
    parent = os.path.dirname(path)
    if parent != directory:
        os.makedirs(parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(secret)
        while view:
            view = view[os.write(fd, view) :]
        if chown:
            os.fchown(fd, file["uid"], file["gid"])
        os.fchmod(fd, file["mode"])
    finally:
        os.close(fd)


def _exec_command(spec: dict[str, Any], status_fd: int, *, isolated: bool, capabilities: range = range(0)) -> NoReturn:
    argv = spec["argv"]
    what = "cannot prepare the command"
    try:
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)  # Python (and the shim) changed these; exec would keep that
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)
        if isolated:
            what = "cannot drop capabilities"
            for capability in capabilities:
                if capability not in DEFAULT_CAPABILITIES:
                    _prctl(_PR_CAPBSET_DROP, capability)
        if spec["uid"] is not None:
            what = f"cannot run as user {spec['uid']}:{spec['gid']}"
            if os.geteuid() == 0:
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


def limit_files(limits: dict[str, int]) -> dict[str, dict[int, list[tuple[str, str]]]]:
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


class TaskCgroup:
    """A task's cgroup: one directory on cgroup v2, or one per v1 hierarchy for controllers v2 lacks."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories

    def __repr__(self) -> str:
        return ", ".join(map(str, self.directories))

    @classmethod
    def create(cls, task_id: str, limits: dict[str, int], warn: Any) -> TaskCgroup | None:
        leaf = f"{task_id[:25]}-{os.urandom(4).hex()}"
        wanted = limit_files(limits)
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
            if wanted:
                warn(f"task {task_id}: no cgroup, limits not applied: {exc}")
            return None
        for controller, versions in wanted.items():
            if controller not in placement:
                warn(f"task {task_id}: {controller} limit not applied: no {controller} cgroup controller on this host")
                continue
            directory, version = placement[controller]
            for name, value in versions[version]:
                try:
                    (directory / name).write_text(value)
                except OSError as exc:
                    warn(f"task {task_id}: {controller} limit not applied: {directory / name}: {exc.strerror}")
        return cls(directories) if directories else None

    def join(self, pid: int, warn: Any) -> None:
        for directory in self.directories:
            try:
                (directory / "cgroup.procs").write_text(str(pid))
            except OSError as exc:
                warn(f"task not in cgroup {directory}, its limits do not apply: {exc.strerror}")

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


def leftover_cgroups(task_id: str) -> TaskCgroup:
    """The cgroups a shim made for `task_id` and could not remove because it was killed."""
    v2, v1 = _cgroup_mounts()
    own = _own_v1_cgroups()
    parents = {v2 / CGROUP_PARENT} if v2 is not None else set()
    parents |= {mount / own.get(c, "/").lstrip("/") / CGROUP_PARENT for c, mount in v1.items() if c in _CGROUP_CONTROLLERS}
    return TaskCgroup([leaf for parent in parents if parent.is_dir() for leaf in parent.glob(f"{task_id[:25]}-*")])


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
            if attempt:  # another shim removed the empty parent in between: make it again, once
                raise
    raise AssertionError("unreachable")


if __name__ == "__main__":
    main(sys.argv[1:])
