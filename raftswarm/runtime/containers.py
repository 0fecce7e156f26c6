"""Running a node's tasks as OCI containers: crun starts each from a bundle, conmon supervises it.

For each task the agent starts, `ContainerRuntime.start`:

1. mounts the task's root filesystem, an overlay of its image from the node's image store;
2. resolves the process against the image (`runtime.spec`: Docker's Entrypoint/Cmd/Env/User rules, users
   from the IMAGE's /etc/passwd and /etc/group) and rejects the task if it cannot run;
3. writes /etc/hosts, /etc/hostname and /etc/resolv.conf for it, its secrets onto a tmpfs of their own
   (`runtime.secrets`) and its configs onto another (`runtime.configs`), all bind-mounted in;
4. writes the bundle's config.json (Docker's confinement: namespaces, capabilities, seccomp, masked paths,
   cgroup limits) and has conmon run `crun create`: the container's namespaces exist, its process waits;
5. lets the agent plug the task's network namespace (`/proc/<pid>/ns/net`) into its networks;
6. starts it, as `crun start` does (`ociruntime.start`).

Why crun and conmon. crun is the OCI runtime (`runtime.ociruntime` says why, and how it runs on a hybrid
cgroup host). conmon, podman's container monitor, is the supervisor that outlives the agent: a small C process
per container (about 0.5 MB PSS with its container, against 2.6 MB for Docker's containerd-shim) that is the
container's parent, writes its output to a log file (`runtime.logs`) and its exit code to a file, and exits
after it. A restarted agent finds each task's
directory, and reattaches through conmon's PID and the container's state, so nothing runs twice.

A node's files. Under the runtime's execution root (`exec_root`: the node's `--exec-root`, as dockerd's; by
default the runtime's directory), what exists only while a container does, read and written at every start and
stop, best on a tmpfs (on this machine's ext4, without a journal, each new inode costs a search past recently
deleted ones):

    tasks/<task id>/config.json   the OCI bundle (the rootfs is the image store's overlay)
    tasks/<task id>/<task id>     the exit code, written by conmon when the container ended
    tasks/<task id>/conmon.pid, pid    conmon's PID, the container's init's PID
    tasks/<task id>/hosts, hostname, resolv.conf
    tasks/<task id>/secrets/      mount point of the task's secrets tmpfs while it exists
    tasks/<task id>/configs/      mount point of the task's configs tmpfs while it exists
    tasks/<task id>/binds/<n>     the task's bind sources, bound here from the node's pinned descriptors of them
                                  while crun creates the container (`volumes.Pinned`), and unmounted after
    tasks/<task id>/conmon/       conmon's link back to the task directory, where it makes its attach socket
                                  (unused: tasks have no stdin)
    crun/                         crun's state (--root)

and under the runtime's directory (in the worker's state directory), what may grow, kept on disk as Docker keeps
its container logs:

    logs/<task id>                the output, conmon's k8s-file format

No container sees any of these.

Without root nothing here can run: there is no fallback to host processes (see `unavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import platform
import select
import secrets as random_ids
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import RaftswarmError
from ..images.errors import ImageError
from ..images.store import ImageStore
from . import files, logs, ociruntime, processes
from .configs import InvalidConfigTarget, config_files, config_mounts, mount_configs, unmount_configs
from .mounts import InvalidMount
from .netsysctls import SysctlFailed, set_interface_sysctls
from .secrets import SECRETS_DIR, InvalidSecretTarget, mount_secrets, secret_files, unmount_secrets
from .spec import DEFAULT_STOP_SIGNAL, STOP_SIGNAL_ANNOTATION, NoCommand, UnknownUser, task_spec
from ..objects.containerspec import InvalidContainerSpec, sysctl_interface
from ..objects.templates import context_of, expand_task
from .volumes import TaskMounts, VolumeError, VolumeStore, task_mounts, unmount_all

log = logging.getLogger(__name__)

CONMON = "conmon"
INIT_BINARY = "/usr/bin/tini-static"
"""Docker's `--init` runs tini (as docker-init); Debian's tini package ships it statically linked, so it runs
in any image."""
INIT_PATH = "/sbin/docker-init"
DEFAULT_STOP_GRACE_NS = 10_000_000_000
START_TIMEOUT = 30.0
"""How long creating a container may take (normally ~20 ms: conmon and crun) before the task is rejected;
generous, because a node starting a hundred tasks at once on two cores queues them."""
RELEASE_TIMEOUT = 5.0
CGROUP_PARENT = "raftswarm-tasks"
_CAP_SYS_ADMIN = 21


class TaskRejected(RaftswarmError):
    """The task cannot be run as specified; the message says why, for `service ps`."""


class SupervisorGone(RaftswarmError):
    """The task's conmon is not there any more and left no exit code: the task's fate is unknown."""


def unavailable() -> str | None:
    """Why this node cannot run containers, or None if it can."""
    if os.geteuid() != 0 or not _has_cap_sys_admin():
        return "running tasks needs root (with CAP_SYS_ADMIN): the node creates namespaces and mounts for containers"
    if shutil.which(CONMON) is None:
        return f"{CONMON} is missing: install the Debian package conmon (./setup does)"
    return ociruntime.missing()


def local_node() -> dict[str, Any]:
    """This node's Description as the manager records it when the node joins (`controlapi.new_node_object`):
    the hostname of the node process and its platform."""
    architecture = platform.machine() or "x86_64"
    return {"Hostname": socket.gethostname(), "Platform": {"Architecture": architecture, "OS": "linux"}}


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def hostname_of(task: Mapping[str, Any], container_id: str) -> str:
    """Docker's: the spec's Hostname, else the container ID's first 12 hex characters."""
    return ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Hostname") or container_id[:12]


def task_addresses(task: Mapping[str, Any]) -> list[str]:
    """The task's addresses on its networks, as its /etc/hosts lists them."""
    return [
        address.partition("/")[0]
        for attachment in task.get("NetworksAttachments") or []
        for address in attachment.get("Addresses") or []
    ]


class ContainerRuntime:
    """A node's containers: their logs kept under `directory` (in the worker's state directory), their bundles
    and crun's state under `exec_root` (default: `directory`). `images` is the node's image store; `init` is
    the node's default for ContainerSpec.Init (dockerd's `--init`)."""

    def __init__(
        self,
        directory: Path,
        images: ImageStore,
        *,
        exec_root: str | Path | None = None,
        init: bool = False,
        volumes: VolumeStore | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.exec_root = Path(exec_root) if exec_root is not None else self.directory
        self.tasks_dir = self.exec_root / "tasks"
        self.state_root = self.exec_root / ociruntime.RUNTIME
        self.logs_dir = self.directory / "logs"
        for path in (self.directory, self.exec_root, self.tasks_dir, self.state_root, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)
        self.create_argv = ociruntime.create_argv()
        """What runs `create` (conmon) and `exec`, which put processes in cgroups: crun, or how it runs here
        (`ociruntime`). `kill` and `delete` run crun itself (`crun`), whatever the host's cgroups."""
        self.crun = ociruntime.crun()
        self.images = images
        self.init = init
        self.volumes = volumes if volumes is not None else VolumeStore(
            self.directory / "volumes",
            protected={self.directory: "the node's task directory", images.root: "the node's image store"},
        )
        """The node's volumes (`runtime.volumes`); without one given, a store of this runtime's own."""
        self.volumes.keep_users(self.task_ids())  # a task whose directory is gone uses nothing any more

    def _task_dir(self, task_id: str) -> Path:
        if not task_id.isalnum():
            raise TaskRejected(f"task ID {task_id!r} is not alphanumeric")
        return self.tasks_dir / task_id

    def log_path(self, task_id: str) -> Path:
        return self.logs_dir / task_id

    async def start(
        self,
        task: dict[str, Any],
        secrets: Mapping[str, bytes],
        *,
        prepare: Callable[[Container], Awaitable[None]] | None = None,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Container:
        """Start the task from its image (already in the store). `secrets` maps secret ID -> data for the
        secrets it references, `configs` config ID -> the config ({"Spec", "Data"}) for the configs it
        references, as the dispatcher delivered them. `prepare` runs once the container's namespaces exist and
        before its process starts (the agent plugs its network interfaces in); if it raises, the task is
        rejected. The sysctls of the task's interfaces are set after it (`runtime.netsysctls`). Raises
        TaskRejected if it cannot run; nothing of it is left then."""
        reason = unavailable()
        if reason is not None:
            raise TaskRejected(reason)
        task_id = task["ID"]
        directory = self._task_dir(task_id)
        if directory.exists():
            await self._remove(task_id)  # what an earlier, failed start of it left
        directory.mkdir(mode=0o700)
        container = None
        try:
            own_mounts = await asyncio.to_thread(self._write_bundle, task, secrets, directory, configs or {})
            try:
                container = await self._create(task_id, directory)
            finally:
                own_mounts.close()  # the binds are made: their sources need not be held any more
            if prepare is not None:
                try:
                    await prepare(container)
                except Exception as exc:
                    raise TaskRejected(f"cannot prepare the task: {exc}") from None
            if interface_sysctls := _interface_sysctls(task):
                try:
                    await asyncio.to_thread(set_interface_sysctls, container.netns_path, interface_sysctls)
                except SysctlFailed as exc:
                    raise TaskRejected(str(exc)) from None
            try:
                ociruntime.start(self.state_root, task_id)
            except ociruntime.StartFailed as exc:
                raise TaskRejected(f"cannot start the container: {exc}") from None
        except BaseException:
            await self._remove(task_id, container)
            raise
        return container

    def _write_bundle(
        self,
        task: dict[str, Any],
        secrets: Mapping[str, bytes],
        directory: Path,
        configs: Mapping[str, Mapping[str, Any]],
    ) -> TaskMounts:
        """Write the task's bundle; its binds' sources stay pinned in what it returns until it is closed."""
        task_id = task["ID"]
        try:
            task = expand_task(task, local_node())  # swarmkit's templates: Hostname, Env values, mounts
        except InvalidContainerSpec as exc:
            raise TaskRejected(str(exc)) from None
        container_spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
        reference = container_spec.get("Image") or ""
        try:
            image = self.images.resolve(reference)
            rootfs = self.images.mount_rootfs(task_id, image)
        except ImageError as exc:
            raise TaskRejected(f"cannot mount the image {reference}: {exc}") from None
        container_id = random_ids.token_hex(32)
        hostname = hostname_of(task, container_id)
        if len(hostname.encode()) > 64:
            raise TaskRejected(f"hostname {hostname!r} is longer than 64 bytes")
        limits = ((task.get("Spec") or {}).get("Resources") or {}).get("Limits") or {}
        try:
            own_mounts = task_mounts(
                self.volumes, task_id=task_id, container_id=container_id, mounts=container_spec.get("Mounts") or [],
                image_volumes=list((image.config.get("config") or {}).get("Volumes") or {}), rootfs=rootfs,
                staging=directory / "binds",
            )
        except (InvalidMount, VolumeError) as exc:
            raise TaskRejected(str(exc)) from None
        try:  # from here on, whatever fails leaves no source pinned
            try:
                file_list = secret_files(container_spec, secrets)
                # The secrets tmpfs is bound read-only at /run/secrets: no config target can be made in it.
                config_list = config_files(
                    container_spec, configs, context_of(task, local_node()), [SECRETS_DIR] if file_list else []
                )
                hosts = files.hosts_file(hostname, task_addresses(task), container_spec.get("Hosts") or [])
                resolv_conf = files.resolv_conf(bool(task.get("NetworksAttachments")), dns=container_spec.get("DNSConfig"))
                spec = task_spec(
                    task=task,
                    image_config=image.config.get("config") or {},
                    rootfs=str(rootfs),
                    hostname=hostname,
                    passwd=files.read_in_rootfs(rootfs, "etc/passwd"),
                    group=files.read_in_rootfs(rootfs, "etc/group"),
                    netns=None,
                    secrets_dir=str(directory / "secrets") if file_list else None,
                    resolv_conf=str(directory / "resolv.conf"),
                    hosts=str(directory / "hosts"),
                    hostname_file=str(directory / "hostname"),
                    cgroups_path=f"/{CGROUP_PARENT}/{task_id}",
                    limits=limits,
                    mounts=own_mounts.mounts,
                )
            except (NoCommand, UnknownUser, InvalidSecretTarget, InvalidConfigTarget, InvalidContainerSpec) as exc:
                raise TaskRejected(str(exc)) from None
            if own_mounts.rootfs_propagation:
                spec["linux"]["rootfsPropagation"] = own_mounts.rootfs_propagation
            spec["mounts"] += config_mounts(directory / "configs", config_list)  # last: over any other mount
            init = container_spec.get("Init")
            if init if init is not None else self.init:
                spec["process"]["args"] = [INIT_PATH, "--", *spec["process"]["args"]]
                spec["mounts"].append(
                    {"destination": INIT_PATH, "type": "bind", "source": INIT_BINARY, "options": ["rbind", "ro"]}
                )
            spec["annotations"] |= {"io.raftswarm.task.id": task_id, "io.raftswarm.container.id": container_id}
            _write_text(directory / "hosts", hosts)
            _write_text(directory / "hostname", f"{hostname}\n")
            _write_text(directory / "resolv.conf", resolv_conf)
            if file_list:
                mount_secrets(directory / "secrets", file_list)
            if config_list:
                mount_configs(directory / "configs", config_list)
            _write_text(directory / "config.json", json.dumps(spec), mode=0o600)
        except BaseException:
            own_mounts.close()
            raise
        return own_mounts

    async def _create(self, task_id: str, directory: Path) -> Container:
        """conmon runs `crun create`: the container exists, its process waits for `crun start`."""
        (directory / "conmon").mkdir(mode=0o700, exist_ok=True)
        # A task with a TTY: conmon holds the terminal's master side and logs what the task writes to it.
        terminal = json.loads((directory / "config.json").read_text())["process"].get("terminal", False)
        read_end, write_end = os.pipe()
        try:
            process = processes.Child(
                [
                    CONMON, *(["--terminal"] if terminal else []), "--api-version", "1",
                    "-c", task_id, "-u", task_id, "-n", task_id, "-r", self.create_argv[0], "-b", str(directory),
                    "-p", str(directory / "pid"), "-P", str(directory / "conmon.pid"),
                    "-l", f"k8s-file:{self.log_path(task_id)}", "--log-size-max", str(logs.LOG_MAX_BYTES),
                    "--exit-dir", str(directory), "--socket-dir-path", str(directory / "conmon"),
                    "--log-level", "error",
                    *(f"--runtime-arg={arg}" for arg in [*self.create_argv[1:], f"--root={self.state_root}"]),
                ],
                stdin=processes.DEVNULL, stdout=processes.DEVNULL, stderr=processes.DEVNULL, pass_fds=(write_end,),
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(write_end)},
                cwd="/", start_new_session=True,
            )
        finally:
            os.close(write_end)
        try:
            message = await asyncio.to_thread(_read_sync_pipe, read_end, START_TIMEOUT)
        finally:
            os.close(read_end)
        await process.wait()  # conmon's first process only forks the monitor and exits
        try:
            pid = int(json.loads(message)["data"]) if message else -1
        except (ValueError, KeyError, TypeError):
            pid = -1
        if pid <= 0:
            detail = ""
            try:
                detail = ociruntime.error_text(str(json.loads(message).get("message", "")).encode()) if message else ""
            except ValueError:
                pass
            raise TaskRejected(f"cannot create the container: {detail or 'conmon gave no answer'}")
        container = self._container(task_id, directory)
        if container is None:
            raise TaskRejected("cannot create the container: its monitor exited at once")
        return container

    def _container(self, task_id: str, directory: Path) -> Container | None:
        try:
            conmon_pid = int((directory / "conmon.pid").read_text())
            pid = int((directory / "pid").read_text())
        except (OSError, ValueError):
            conmon_pid, pid = 0, 0
        pidfd = _open_conmon(conmon_pid, task_id) if conmon_pid else None
        if pidfd is None and not (directory / task_id).is_file():
            return None
        return Container(self, task_id, directory, pid, pidfd)

    def task_ids(self) -> list[str]:
        """The tasks that have a container here (running, or ended and not yet released)."""
        return sorted(path.name for path in self.tasks_dir.iterdir() if path.is_dir())

    async def attach(self, task_id: str) -> Container | None:
        """The container of `task_id` started by an earlier agent on this node, or None (and what is left of
        it removed) if its conmon is gone without an exit code: then its fate is unknown."""
        directory = self._task_dir(task_id)
        container = self._container(task_id, directory)
        if container is None:
            log.warning("task %s: its monitor is gone and left no exit code; removing what is left", task_id)
            await self._remove(task_id)
        return container

    async def _oci(self, *args: str, what: str) -> None:
        process = processes.Child(
            [self.crun, f"--root={self.state_root}", *args],
            stdin=processes.DEVNULL, stdout=processes.DEVNULL, stderr=processes.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise TaskRejected(f"cannot {what}: {ociruntime.error_text(stderr)}")

    async def _remove(self, task_id: str, container: Container | None = None) -> None:
        """Kill and delete the container, unmount its secrets and root filesystem, remove its directory."""
        directory = self._task_dir(task_id)
        if container is None:
            container = self._container(task_id, directory) if directory.exists() else None
        if container is not None:
            # SIGKILL and conmon's exit first, so `delete --force` finds nothing left to kill.
            await container.signal(signal.SIGKILL)
            await container._wait_monitor(RELEASE_TIMEOUT)
            container._close()
        try:
            await self._oci("delete", "--force", task_id, what=f"delete container {task_id}")
        except TaskRejected as exc:
            if not ociruntime.gone(str(exc)):
                log.warning("%s", exc)
        await asyncio.to_thread(self._remove_files, task_id, directory)

    def _remove_files(self, task_id: str, directory: Path) -> None:
        unmount_secrets(directory / "secrets")
        unmount_configs(directory / "configs")
        if left := unmount_all(directory / "binds"):  # a start cut short; rmtree would delete through them
            log.error("task %s: bind sources still mounted, its directory is kept: %s", task_id, "; ".join(left))
            return
        try:
            self.volumes.release(task_id)  # and its anonymous volumes removed, as swarmkit's RemoveVolume
        except (OSError, VolumeError) as exc:
            log.warning("task %s: %s", task_id, exc)
        try:
            self.images.release_rootfs(task_id)
        except ImageError as exc:
            log.warning("task %s: %s", task_id, exc)
        # The task's directory goes last: a crash halfway leaves the task listed, and releasing it again finishes.
        self.log_path(task_id).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


class Container:
    """A task's container, through its conmon."""

    def __init__(self, runtime: ContainerRuntime, task_id: str, directory: Path, pid: int, pidfd: int | None) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.directory = directory
        self.pid = pid
        """The host PID of the container's first process."""
        self._pidfd = pidfd
        self._exited: asyncio.Future[None] | None = None
        self.container_id = self._annotations().get("io.raftswarm.container.id", "")

    def _annotations(self) -> dict[str, str]:
        try:
            return json.loads((self.directory / "config.json").read_text()).get("annotations") or {}
        except (OSError, ValueError):
            return {}

    @property
    def netns_path(self) -> str:
        """The container's network namespace while it runs."""
        return f"/proc/{self.pid}/ns/net"

    @property
    def log_path(self) -> Path:
        return self.runtime.log_path(self.task_id)

    def _monitor_gone(self) -> bool:
        return self._pidfd is None or bool(select.select([self._pidfd], [], [], 0)[0])

    async def _wait_monitor(self, timeout: float | None = None) -> bool:
        """Until conmon exited (True), or `timeout` passed (False)."""
        if self._monitor_gone():
            return True
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            pidfd = self._pidfd
            assert pidfd is not None

            def on_exit() -> None:
                loop.remove_reader(pidfd)
                if not self._exited.done():
                    self._exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._exited)
            return True
        except TimeoutError:
            return False

    def exit_code(self) -> int | None:
        """The code conmon recorded (128+N if signal N killed the process), None while it runs."""
        try:
            return int((self.directory / self.task_id).read_text().strip())
        except (OSError, ValueError):
            return None

    async def wait(self) -> int:
        """The exit code once the container ended and conmon wrote its output and code. Raises
        SupervisorGone if conmon died without writing one."""
        await self._wait_monitor()
        code = self.exit_code()
        if code is None:
            raise SupervisorGone(f"the monitor of task {self.task_id} died and left no exit code")
        return code

    async def signal(self, signum: int) -> None:
        """Send `signum` to the container's first process (as `docker kill --signal`); nothing if it ended."""
        try:
            await self.runtime._oci("kill", self.task_id, str(int(signum)), what="signal the container")
        except TaskRejected as exc:
            if not ociruntime.gone(str(exc)):
                raise

    async def stop(self, grace_ns: int | None) -> int:
        """The task's stop signal (its spec's StopSignal, else its image's, else SIGTERM; the bundle records it),
        then SIGKILL after the grace period (Docker's 10 s if None); returns the exit code."""

        grace = (DEFAULT_STOP_GRACE_NS if grace_ns is None else grace_ns) / 1e9
        try:
            stop_signal = int(self._annotations().get(STOP_SIGNAL_ANNOTATION, DEFAULT_STOP_SIGNAL))
        except ValueError:
            stop_signal = DEFAULT_STOP_SIGNAL
        await self.signal(stop_signal)
        if not await self._wait_monitor(grace):
            await self.signal(signal.SIGKILL)
        try:
            return await self.wait()
        except SupervisorGone:
            return 128 + signal.SIGKILL

    async def logs(
        self, *, tail: int | None = None, since: float | None = None, follow: bool = False
    ) -> AsyncIterator[logs.LogLine]:
        """The task's output lines, oldest first: ("stdout" or "stderr", unix time, the line without its
        newline); the last `tail`, those from `since` on; with `follow`, then new ones until the task ends."""
        if not follow:
            for line in await asyncio.to_thread(logs.read_lines, self.log_path, tail=tail, since=since):
                yield line
            return
        async for batch in logs.follow_lines(self.log_path, self._monitor_gone, tail=tail, since=since):
            for line in batch:
                yield line

    async def exec(self, argv: list[str], timeout: float, *, output_limit: int) -> tuple[int | None, bytes]:
        """Run `argv` in the running container, as `docker exec` does: `crun exec` puts it in the container's
        namespaces and cgroup, as its user, in its working directory, with its environment and confinement (the
        container's own process spec, with `argv` for its arguments). Returns its exit code and the first
        `output_limit` bytes of its stdout and stderr together (each stream is copied on its own, so lines of
        the two may come out of order; the rest is read and dropped, so a chatty process never blocks on a full
        pipe). One still running after `timeout` seconds is killed with its process group and crun's, and its
        code is None; cancelling the call kills it likewise. If crun cannot run it (the container ended, no such
        program), the code is crun's and the output says why."""
        loop = asyncio.get_running_loop()
        name = f"exec-{random_ids.token_hex(8)}"
        pid_file = self.directory / f"{name}.pid"
        process_file = self.directory / f"{name}.json"
        spec = json.loads((self.directory / "config.json").read_text())["process"]
        spec.pop("consoleSize", None)
        _write_text(process_file, json.dumps({**spec, "args": list(argv), "terminal": False}), mode=0o600)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        output = bytearray()

        def drain() -> None:
            try:
                while chunk := os.read(read_end, 65536):
                    output.extend(chunk[: max(0, output_limit - len(output))])
            except BlockingIOError:
                return
            loop.remove_reader(read_end)  # end of file: the process and whatever it started closed it

        loop.add_reader(read_end, drain)
        process = None
        code: int | None = None
        try:
            try:
                process = processes.Child(
                    [*self.runtime.create_argv, f"--root={self.runtime.state_root}", "exec",
                     "--pid-file", str(pid_file), "--process", str(process_file), self.task_id],
                    stdin=processes.DEVNULL, stdout=write_end, stderr=write_end, start_new_session=True,
                )
            finally:
                os.close(write_end)
            try:
                async with asyncio.timeout(timeout):
                    code = await process.wait()
            except TimeoutError:
                code = None
        finally:
            if process is not None:
                give_up = loop.time() + RELEASE_TIMEOUT
                while process.returncode is None:
                    try:
                        # While crun runs, its child is alive or only just reaped: its PID is not reused. crun
                        # starts it in a session of its own, whose group is what it started.
                        exec_group = os.getpgid(int(pid_file.read_text()))
                    except ProcessLookupError:
                        exec_group = process.pid  # it ended by itself just now
                    except (FileNotFoundError, ValueError):
                        # crun writes the PID once the process runs, within milliseconds; killing crun before
                        # would leave the process behind, unless crun never gets that far.
                        if loop.time() > give_up:
                            process.kill()
                            break
                        await asyncio.sleep(0.01)
                        continue
                    for group in (exec_group, process.pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(group, signal.SIGKILL)
                    break
                await process.wait()
            drain()
            loop.remove_reader(read_end)
            os.close(read_end)
            pid_file.unlink(missing_ok=True)
            process_file.unlink(missing_ok=True)
        return code, bytes(output)

    async def release(self) -> None:
        """Kill what still runs, delete the container, unmount its secrets and root filesystem, forget it."""
        await self.runtime._remove(self.task_id, self)

    def forget(self) -> None:
        """Stop following the container, which runs on for the next agent to attach."""
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            if self._exited is not None and not self._exited.done():
                asyncio.get_running_loop().remove_reader(self._pidfd)
                self._exited.set_result(None)
            os.close(self._pidfd)
            self._pidfd = None


def release_all(
    directory: str | Path,
    images: ImageStore,
    volumes: VolumeStore | None = None,
    exec_root: str | Path | None = None,
) -> list[str]:
    """Kill and remove every container of the runtime at `directory` and `exec_root` (what a stopped or killed
    node left): for harnesses tearing nodes down, outside any event loop. With the node's `volumes`, the tasks'
    volumes are released too. Returns what could not be removed."""
    runtime = ContainerRuntime(Path(directory), images, exec_root=exec_root, volumes=volumes)
    failures = []
    for task_id in runtime.task_ids():
        directory_of_task = runtime.tasks_dir / task_id
        deleted = subprocess.run(
            [runtime.crun, f"--root={runtime.state_root}", "delete", "--force", task_id], capture_output=True
        )
        reason = ociruntime.error_text(deleted.stderr)
        if deleted.returncode != 0 and not ociruntime.gone(reason):
            failures.append(f"container of task {task_id}: {reason}")
            continue
        try:
            conmon_pid = int((directory_of_task / "conmon.pid").read_text())
        except (OSError, ValueError):
            conmon_pid = 0
        pidfd = _open_conmon(conmon_pid, task_id) if conmon_pid else None
        if pidfd is not None:
            if not select.select([pidfd], [], [], RELEASE_TIMEOUT)[0]:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        try:
            runtime._remove_files(task_id, directory_of_task)
        except OSError as exc:
            failures.append(f"container of task {task_id}: {exc}")
    return failures


def _interface_sysctls(task: Mapping[str, Any]) -> dict[str, str]:
    """The task's sysctls of network interfaces, which the container's spec leaves out (`runtime.netsysctls`)."""
    settings = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Sysctls") or {}
    return {key: str(value) for key, value in settings.items() if sysctl_interface(key) is not None}


def _open_conmon(pid: int, task_id: str) -> int | None:
    """A pidfd of conmon `pid` if it is alive and is the monitor of `task_id` (not a reused PID)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EINVAL):
            return None
        raise
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except OSError:
        argv = []
    if not argv or os.path.basename(argv[0]) != CONMON.encode() or task_id.encode() not in argv:
        os.close(pidfd)
        return None
    return pidfd


def _read_sync_pipe(fd: int, timeout: float) -> bytes:
    """conmon's one message on its sync pipe ({"data": pid} or {"data": -1, "message": why}); b"" at EOF."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return data
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk
    return data.split(b"\n", 1)[0]


def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as file:
        file.write(text)
