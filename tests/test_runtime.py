"""A node's task runtime, in process and without a cluster: tasks run as OCI containers (crun under conmon)
from the busybox sample image. What a task sees (its secrets read-only with their owner and mode, its
hostname, /etc/hosts, its own processes and loopback only, no mount, seccomp, no CAP_SYS_ADMIN), Docker's
Entrypoint/Cmd/Env/User/Dir rules end to end, tasks rejected with a message and nothing left, exit codes,
stop with and without an init, the memory limit, logs, reattaching after an agent restart, a killed monitor,
and prepare().

Every test's teardown releases what it started and checks that nothing is left: no task directory, no crun
state, no mount, no cgroup, no conmon or crun process naming one of its tasks, no process of its tasks.

Needs root with CAP_SYS_ADMIN, crun and conmon (`raftswarm.runtime.containers.unavailable`).
"""

from __future__ import annotations

import asyncio
import base64
import glob
import io
import json
import os
import select
import signal
import stat
import subprocess
import tarfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from raftswarm.images import archive, samples
from raftswarm.images.store import ImageStore
from raftswarm.runtime import containers
from raftswarm.runtime.containers import Container, ContainerRuntime, TaskRejected
from raftswarm.runtime.logs import LogLine

_UNAVAILABLE = containers.unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"containers cannot run here: {_UNAVAILABLE}")

SECOND = 1_000_000_000
WAIT = 60.0
"""Seconds any one task may take to do what a test waits for: far more than it needs (milliseconds), because
this machine is shared with cluster tests; only a broken runtime reaches it."""

APP_CONFIG = {
    "Entrypoint": [
        "/bin/sh", "-c",
        'echo "args=$* env=$FROM_IMAGE,$SHARED cwd=$(pwd) user=$(id -u):$(id -g) groups=$(id -G)"',
        "entrypoint",
    ],
    "Cmd": ["image-cmd"],
    "Env": ["PATH=/bin", "FROM_IMAGE=image", "SHARED=image"],
    "WorkingDir": "/srv",
    "User": "app",
}
"""`app:latest`: an image whose Entrypoint reports what it was run with, whose Cmd is its default argument, and
whose user `app` (1000:1000, also in group staff, 50) and working directory /srv are not root's."""
_APP_PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
_APP_GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"

_USED_TASK_IDS: list[str] = []
"""Every task ID this module used, for the check at its end that no process names one."""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> ImageStore:
    """The node's image store: busybox:latest (the sample), app:latest (APP_CONFIG) and bare:latest (no command)."""
    store = ImageStore(tmp_path_factory.mktemp("images"))
    with open(samples.busybox().tarball, "rb") as tarball:
        archive.load(store, tarball)
    rootfs = _app_rootfs()
    store.import_tarball(io.BytesIO(rootfs), "app:latest", APP_CONFIG)
    store.import_tarball(io.BytesIO(rootfs), "bare:latest", {"Env": ["PATH=/bin"]})
    yield store
    assert _mounts_under(store.root) == []
    assert os.listdir(store.root / "containers") == []
    assert _processes_naming(_USED_TASK_IDS, None) == []


def _app_rootfs() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for directory in ("bin", "etc", "proc", "sys", "dev", "run", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for name, data, mode in (
            ("bin/busybox", samples.BUSYBOX.read_bytes(), 0o755),
            ("etc/passwd", _APP_PASSWD.encode(), 0o644),
            ("etc/group", _APP_GROUP.encode(), 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "echo", "id", "cat", "pwd"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out.getvalue()


class Tasks:
    """One runtime's tasks in a test: starts them, and at teardown releases them and lists what is left."""

    def __init__(self, runtime: ContainerRuntime, images: ImageStore) -> None:
        self.runtime = runtime
        self.images = images
        self.marker = f"RAFTSWARM_RUNTIME_TEST={uuid.uuid4().hex}"
        """In every task's environment: finds the processes of this test's containers."""
        self.started: list[Container] = []
        self.task_ids: list[str] = []

    def task(
        self,
        *args: str,
        image: str = "busybox:latest",
        secrets: list[dict] | None = None,
        limits: dict | None = None,
        networks: list[dict] | None = None,
        **container_spec: Any,
    ) -> dict:
        """A task of a fresh ID running `args` (the image's command if none)."""
        task_id = uuid.uuid4().hex
        self.task_ids.append(task_id)
        _USED_TASK_IDS.append(task_id)
        spec = {"Image": image, "Env": [self.marker, *container_spec.pop("Env", [])], **container_spec}
        if args:
            spec["Args"] = list(args)
        if secrets:
            spec["Secrets"] = secrets
        task: dict[str, Any] = {"ID": task_id, "Spec": {"ContainerSpec": spec, "Resources": {"Limits": limits or {}}}}
        if networks:
            task["NetworksAttachments"] = networks
        return task

    async def start(
        self,
        task: dict,
        secrets: dict[str, bytes] | None = None,
        prepare: Callable[[Container], Awaitable[None]] | None = None,
    ) -> Container:
        container = await self.runtime.start(task, secrets or {}, prepare=prepare)
        self.started.append(container)
        return container

    async def run(self, *args: str, secret_data: dict[str, bytes] | None = None, **spec: Any) -> tuple[int, str, str]:
        """Run a task to its end: its exit code, stdout and stderr."""
        container = await self.start(self.task(*args, **spec), secret_data)
        code = await asyncio.wait_for(container.wait(), WAIT)
        return (code, *output_of(await lines_of(container)))

    def processes(self) -> list[str]:
        """This test's conmon, crun and container processes that are still alive."""
        return _processes_naming(self.task_ids, self.marker)

    def pids(self) -> set[int]:
        return {int(process.partition(":")[0]) for process in self.processes()}

    async def close(self) -> None:
        errors = []
        for container in self.started:
            try:
                await container.release()
            except Exception as exc:  # release the others before failing
                errors.append(exc)
        for task_id in self.runtime.task_ids():
            left = await self.runtime.attach(task_id)
            if left is not None:
                await left.release()
        assert errors == []
        assert await self.leftovers() == []

    def _exec_root_mounts(self) -> list[str]:
        if self.runtime.exec_root == self.runtime.directory:
            return []  # counted with the directory's
        return _mounts_under(self.runtime.exec_root)

    async def leftovers(self) -> list[str]:
        """What is left of this test's tasks once released (processes get WAIT seconds to be gone)."""
        async with asyncio.timeout(WAIT):
            while self.processes():
                await asyncio.sleep(0.1)
        containers_dir = self.images.root / "containers"
        return (
            [f"task directory {task_id}" for task_id in self.runtime.task_ids()]
            + [f"crun state {name}" for name in os.listdir(self.runtime.state_root)]
            + [f"mount {point}" for point in _mounts_under(self.runtime.directory)]
            + [f"mount {point}" for point in self._exec_root_mounts()]
            + [f"log {name}" for name in os.listdir(self.runtime.logs_dir)]
            + [f"rootfs {task_id}" for task_id in self.task_ids if (containers_dir / task_id).exists()]
            + [f"cgroup {path}" for task_id in self.task_ids for path in _cgroups_of(task_id)]
        )


@pytest.fixture
async def tasks(tmp_path, images):
    tracker = Tasks(ContainerRuntime(tmp_path / "rt", images), images)
    yield tracker
    await tracker.close()


@pytest.fixture
async def init_tasks(tmp_path, images):
    """A node run with `--init`: tini is each task's PID 1 unless its spec says otherwise."""
    tracker = Tasks(ContainerRuntime(tmp_path / "rt-init", images, init=True), images)
    yield tracker
    await tracker.close()


async def lines_of(container: Container, **options: Any) -> list[LogLine]:
    return [line async for line in container.logs(**options)]


def output_of(lines: list[LogLine]) -> tuple[str, str]:
    """stdout and stderr as text, each line ended by a newline."""
    out, err = ("".join(line.decode() + "\n" for s, _, line in lines if s == stream) for stream in ("stdout", "stderr"))
    return out, err


async def until_logged(container: Container, text: bytes) -> list[LogLine]:
    """The task's lines once one of them is `text`."""
    async with asyncio.timeout(WAIT):
        while True:
            lines = await lines_of(container)
            if any(line == text for _, _, line in lines):
                return lines
            await asyncio.sleep(0.05)


def _argv(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def running(container: Container) -> list[bytes]:
    """The argv of the task's first process once it runs the command: `start` returns once crun told the
    container to start, and its process execs the command a moment later (until then it is crun's own)."""
    async with asyncio.timeout(WAIT):
        while os.path.basename((argv := _argv(container.pid))[0]) in (b"crun", b""):  # b"": while it execs
            await asyncio.sleep(0.01)
    return argv


def secret_ref(secret_id: str, name: str, uid: str = "0", gid: str = "0", mode: int = 0o444) -> dict:
    return {"SecretID": secret_id, "SecretName": name, "File": {"Name": name, "UID": uid, "GID": gid, "Mode": mode}}


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, file system type, mount options) of each mount this process sees."""
    mounts = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            fields = before.split()
            mounts.append((fields[4].replace("\\040", " "), after.split()[0], fields[5]))
    return mounts


def _mounts_under(directory: Path) -> list[str]:
    prefix = f"{directory}/"
    return [point for point, _, _ in _mountinfo() if point == str(directory) or point.startswith(prefix)]


def _cgroups_of(task_id: str) -> list[str]:
    parent = containers.CGROUP_PARENT
    return glob.glob(f"/sys/fs/cgroup/*/{parent}/{task_id}") + glob.glob(f"/sys/fs/cgroup/{parent}/{task_id}")


def _processes_naming(task_ids: list[str], marker: str | None) -> list[str]:
    """Live processes whose command line names one of `task_ids` (conmon, crun) or whose environment holds
    `marker` (a task's processes). Zombies have neither, so they do not count."""
    names = [task_id.encode() for task_id in task_ids]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes() if marker else b""
        except OSError:
            continue
        if any(name in cmdline for name in names) or (marker and marker.encode() in environ):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {command}")
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _files_holding(needles: list[bytes], roots: list[Path]) -> list[str]:
    """Regular files under `roots` (not crossing into other mounts) whose bytes hold one of `needles`."""
    found = []
    for root in roots:
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [d for d in subdirectories if not os.path.ismount(os.path.join(directory, d))]
            for name in files:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                    data = Path(path).read_bytes() if stat.S_ISREG(info.st_mode) and info.st_size < 64 << 20 else b""
                except FileNotFoundError:
                    continue  # removed while walking (the store's scratch files)
                if any(needle in data for needle in needles):
                    found.append(path)
    return found


# -- what a task sees, and what nobody else sees ----------------------------------------------------------


@pytest.mark.security
async def test_secrets_appear_at_run_secrets_with_their_file_owner_and_mode_and_are_read_only(tasks):
    script = (
        "cat /run/secrets/db; echo; cat /run/secrets/app/key; echo; "
        "stat -c '%a %u %g' /run/secrets/db /run/secrets/app/key; "
        "echo x > /run/secrets/db; echo write=$?; touch /run/secrets/new; echo create=$?; "
        "rm /run/secrets/db; echo remove=$?; mount -o remount,rw /run/secrets; echo remount=$?; "
        "umount /run/secrets; echo unmount=$?; cat /run/secrets/db; echo"
    )
    code, out, err = await tasks.run(
        "sh", "-c", script,
        secrets=[secret_ref("id-db", "db", mode=0o400), secret_ref("id-key", "app/key", "65534", "65534", 0o440)],
        secret_data={"id-db": b"db-password", "id-key": b"api-key"},
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[:4] == ["db-password", "api-key", "400 0 0", "440 65534 65534"]
    outcomes = dict(line.split("=") for line in lines[4:9])
    assert set(outcomes) == {"write", "create", "remove", "remount", "unmount"}
    assert "0" not in outcomes.values(), outcomes  # even root in the task cannot change them
    assert lines[9] == "db-password"
    assert "Read-only file system" in err


@pytest.mark.security
async def test_a_secrets_bytes_are_on_no_disk_file_and_its_host_mount_is_a_read_only_tmpfs(tasks, tmp_path, images):
    secret = f"s3cr3t-{uuid.uuid4().hex}".encode()
    had_run_secrets = os.path.lexists("/run/secrets")
    container = await tasks.start(
        tasks.task("sleep", "100", secrets=[secret_ref("id-db", "db")]), {"id-db": secret}
    )
    mount_point = str(tasks.runtime.tasks_dir / container.task_id / "secrets")
    (mount,) = [(fstype, options) for point, fstype, options in _mountinfo() if point == mount_point]
    assert mount[0] == "tmpfs" and "ro" in mount[1].split(",")
    assert _files_holding([secret], [Path(mount_point)]) == [f"{mount_point}/db"]  # there, in memory only

    assert _files_holding([secret, base64.b64encode(secret)], [tmp_path, images.root]) == []
    conmon_pid = int((tasks.runtime.tasks_dir / container.task_id / "conmon.pid").read_text())
    for pid in (conmon_pid, container.pid):
        for view in ("cmdline", "environ"):
            assert secret not in Path(f"/proc/{pid}/{view}").read_bytes()
    assert os.path.lexists("/run/secrets") == had_run_secrets  # the host's own /run/secrets is untouched


@pytest.mark.security
async def test_a_second_task_cannot_see_the_first_tasks_secret_by_any_path(tasks):
    secret = f"s3cr3t-{uuid.uuid4().hex}".encode()
    first = await tasks.start(tasks.task("sleep", "100", secrets=[secret_ref("id-1", "db")]), {"id-1": secret})
    script = (
        "ls -A /run/secrets; echo ---; "
        f"cat /run/secrets/* /proc/*/root/run/secrets/* /proc/{first.pid}/root/run/secrets/db; "
        "grep -r s3cr3t /run /tmp /proc/*/root/run 2>/dev/null; echo done"
    )
    code, out, err = await tasks.run(
        "sh", "-c", script, secrets=[secret_ref("id-2", "own")], secret_data={"id-2": b"second-task-secret"}
    )
    assert secret.decode() not in out + err
    listed, _, rest = out.partition("---\n")
    assert listed.split() == ["own"]  # its own secret only
    assert rest.strip().endswith("done")


@pytest.mark.security
async def test_a_root_task_sees_only_its_own_processes(tasks):
    code, out, _ = await tasks.run("sh", "-c", "sleep 100 & cat /proc/1/cmdline; echo; ls -d /proc/[0-9]*; kill $!")
    assert code == 0
    first, *listed = out.splitlines()
    assert first.startswith("sh\0-c\0sleep 100 &")  # PID 1 is the task's command, not the host's init
    pids = sorted(int(path.removeprefix("/proc/")) for path in listed)
    assert 1 in pids and len(pids) <= 4 and max(pids) < 100  # sh, sleep, ls: not the host's hundreds


@pytest.mark.security
async def test_a_root_task_cannot_mount_runs_under_seccomp_and_lacks_cap_sys_admin(tasks):
    script = (
        "id -u; mount -t tmpfs x /mnt; echo mount=$?; umount /proc; echo umount=$?; "
        "grep -E '^(Seccomp|CapEff):' /proc/self/status"
    )
    code, out, _ = await tasks.run("sh", "-c", script)
    lines = out.splitlines()
    assert lines[0] == "0"  # root in the task...
    assert lines[1] != "mount=0" and lines[2] != "umount=0"  # ...that still cannot mount or unmount
    status = dict(line.split(":\t") for line in lines[3:])
    assert status["Seccomp"] == "2"  # a seccomp filter is on
    assert not int(status["CapEff"], 16) >> 21 & 1  # no CAP_SYS_ADMIN
    assert int(status["CapEff"], 16) != 0  # but Docker's default capabilities


async def test_the_hostname_is_the_container_id_prefix_unless_the_spec_gives_one(tasks):
    script = "hostname; cat /etc/hostname; echo $HOSTNAME"
    container = await tasks.start(tasks.task("sh", "-c", script))
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    assert len(container.container_id) == 64
    assert output_of(await lines_of(container))[0].split() == [container.container_id[:12]] * 3
    code, out, _ = await tasks.run("sh", "-c", script, Hostname="db-primary")
    assert out.split() == ["db-primary"] * 3


async def test_etc_hosts_lists_the_tasks_network_addresses_under_its_hostname(tasks):
    networks = [
        {"Network": {"ID": "net1"}, "Addresses": ["10.0.1.5/24"]},
        {"Network": {"ID": "net2"}, "Addresses": ["10.0.9.3/24"]},
    ]
    code, out, _ = await tasks.run(
        "sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf", Hostname="web", networks=networks
    )
    hosts, _, resolv = out.partition("---\n")
    assert code == 0
    assert "127.0.0.1\tlocalhost" in hosts.splitlines()
    assert hosts.splitlines()[-2:] == ["10.0.1.5\tweb", "10.0.9.3\tweb"]
    assert resolv.splitlines()[0] == "nameserver 127.0.0.11"  # the task's resolver on its networks

    code, out, _ = await tasks.run("sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf", Hostname="web")
    hosts, _, resolv = out.partition("---\n")
    assert "\tweb" not in hosts  # on no network it has no address to list
    assert not any(line.startswith("nameserver 127.") for line in resolv.splitlines())


async def test_a_task_has_its_own_network_namespace_with_only_loopback_up(tasks):
    script = "ip -o link; ping -c 1 -W 5 127.0.0.1; echo ping=$?; exec sleep 100"
    container = await tasks.start(tasks.task("sh", "-c", script))
    assert os.stat(container.netns_path).st_ino != os.stat("/proc/self/ns/net").st_ino
    lines = [line.decode() for _, _, line in await until_logged(container, b"ping=0")]
    links = [line for line in lines if ": <" in line]
    assert len(links) == 1 and links[0].startswith("1: lo:") and ",UP," in links[0]


# -- the process: Docker's rules, with the image's users ------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({}, "args=image-cmd env=image,image cwd=/srv user=1000:1000 groups=1000 50"),
        ({"Args": ["given", "args"]}, "args=given args env=image,image cwd=/srv user=1000:1000 groups=1000 50"),
        ({"Env": ["SHARED=spec"]}, "args=image-cmd env=image,spec cwd=/srv user=1000:1000 groups=1000 50"),
        ({"Dir": "/tmp", "User": "root"}, "args=image-cmd env=image,image cwd=/tmp user=0:0 groups=0"),
        ({"Command": ["/bin/echo", "own"]}, "own"),  # a replaced Entrypoint drops the image's Cmd
        ({"Command": ["/bin/echo", "own"], "Args": ["arg"]}, "own arg"),
    ],
)
async def test_the_spec_replaces_the_images_entrypoint_cmd_env_dir_and_user_as_docker_does(tasks, spec, expected):
    spec = dict(spec)
    code, out, err = await tasks.run(*spec.pop("Args", []), image="app:latest", **spec)
    assert (code, out, err) == (0, f"{expected}\n", "")


async def test_spec_env_overrides_the_images_and_hostname_is_set(tasks):
    code, out, _ = await tasks.run(
        "sh", "-c", 'echo "$PATH|$GREETING|$HOSTNAME"', Env=["PATH=/custom:/bin:/usr/bin", "GREETING=hello"],
        Hostname="h1",
    )
    assert (code, out) == (0, "/custom:/bin:/usr/bin|hello|h1\n")
    code, out, _ = await tasks.run("sh", "-c", 'echo "$PATH"')
    assert out == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"  # the image's


async def test_dir_is_the_working_directory_and_is_created_if_the_image_lacks_it(tasks):
    code, out, _ = await tasks.run("sh", "-c", "pwd; stat -c %F .", Dir="/work/sub", User="nobody")
    assert (code, out) == (0, "/work/sub\ndirectory\n")


@pytest.mark.parametrize(
    "user, expected",
    [
        ("nobody", "65534 65534"),  # a name from the image's /etc/passwd
        ("65534", "65534 65534"),  # a uid from it, with its group
        ("1234:5678", "1234 5678"),  # numbers the image does not list are used as they are
        ("nobody:root", "65534 0"),  # a group by name from the image's /etc/group
        ("", "0 0"),  # the image's user: busybox has none, so root
    ],
)
async def test_the_user_is_resolved_against_the_images_passwd_and_group(tasks, user, expected):
    code, out, _ = await tasks.run("sh", "-c", "echo $(id -u) $(id -g)", User=user)
    assert (code, out) == (0, f"{expected}\n")


# -- tasks that cannot run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, secret_data, message",
    [
        ({"args": ["true"], "User": "no-such-user"}, {}, "unable to find user no-such-user"),
        ({"args": ["true"], "User": "nobody:no-such-group"}, {}, "unable to find group no-such-group"),
        ({"image": "bare:latest"}, {}, "no command specified"),
        ({"args": ["no-such-command"]}, {}, 'exec: .*no-such-command.*: executable file not found'),
        ({"args": ["true"], "image": "no-such-image:latest"}, {}, "cannot mount the image no-such-image:latest"),
        ({"args": ["true"], "secrets": [secret_ref("id", "../db")]}, {"id": b"x"}, "invalid secret target"),
        ({"args": ["true"], "secrets": [secret_ref("id", "/etc/db")]}, {"id": b"x"}, "/etc/db is outside /run/secrets"),
        ({"args": ["true"], "secrets": [secret_ref("id", "db")]}, {}, "secret db \\(id\\) was not delivered"),
        ({"args": ["true"], "Hostname": "h" * 65}, {}, "is longer than 64 bytes"),
    ],
)
async def test_a_task_that_cannot_run_is_rejected_with_a_clear_message_and_leaves_nothing(
    tasks, spec, secret_data, message
):
    spec = dict(spec)
    task = tasks.task(*spec.pop("args", []), **spec)
    with pytest.raises(TaskRejected, match=message):
        await tasks.start(task, secret_data)
    assert not (tasks.runtime.tasks_dir / task["ID"]).exists()
    assert await tasks.leftovers() == []


async def test_a_task_id_that_is_not_alphanumeric_is_rejected(tasks):
    task = tasks.task("true")
    task["ID"] = "../escape"
    with pytest.raises(TaskRejected, match="is not alphanumeric"):
        await tasks.start(task)
    assert await tasks.leftovers() == []


# -- exit codes and stop ---------------------------------------------------------------------------------


async def test_the_exit_code_is_the_commands_and_128_plus_the_signal_that_killed_it(tasks):
    assert (await tasks.run("sh", "-c", "exit 3"))[0] == 3
    assert (await tasks.run("true"))[0] == 0
    container = await tasks.start(tasks.task("sleep", "100"))
    await container.signal(signal.SIGKILL)
    assert await asyncio.wait_for(container.wait(), WAIT) == 137
    assert container.exit_code() == 137
    await container.signal(signal.SIGKILL)  # it ended: signalling it again is nothing, not an error


async def test_stop_kills_a_pid_1_sleep_after_the_grace_period_since_pid_1_ignores_sigterm(tasks):
    container = await tasks.start(tasks.task("sleep", "100"))
    assert (await running(container))[0] == b"sleep"
    began = time.monotonic()
    assert await asyncio.wait_for(container.stop(SECOND), WAIT) == 137
    assert time.monotonic() - began >= 1.0  # SIGKILL came only after the grace period
    assert not _alive(container.pid)


async def test_stop_ends_a_sleep_at_sigterm_when_tini_is_pid_1(init_tasks):
    container = await init_tasks.start(init_tasks.task("sleep", "100"))
    assert (await running(container))[:3] == [containers.INIT_PATH.encode(), b"--", b"sleep"]
    # 143 is SIGTERM's code: tini passed it on and sleep died of it, long before the minute of grace.
    assert await asyncio.wait_for(container.stop(60 * SECOND), WAIT) == 143


async def test_the_spec_init_overrides_the_nodes_default(init_tasks, tasks):
    with_init = await tasks.start(tasks.task("sleep", "100", Init=True))
    assert (await running(with_init))[0] == containers.INIT_PATH.encode()
    assert await asyncio.wait_for(with_init.stop(60 * SECOND), WAIT) == 143
    without = await init_tasks.start(init_tasks.task("sleep", "100", Init=False))
    assert (await running(without))[0] == b"sleep"


async def test_stop_lets_a_task_that_traps_sigterm_exit_cleanly(tasks):
    container = await tasks.start(
        tasks.task("sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 1; done")
    )
    await until_logged(container, b"ready")
    assert await asyncio.wait_for(container.stop(60 * SECOND), WAIT) == 0
    assert [line for _, _, line in await lines_of(container)] == [b"ready", b"bye"]


# -- limits ----------------------------------------------------------------------------------------------


async def test_the_memory_limit_has_the_kernel_kill_what_exceeds_it(tasks):
    # tail keeps its one 64 MiB line in memory. Past 32 MiB the OOM killer kills it, and sometimes the shell
    # too (head still fills the pipe before tail's memory is freed): either way the task ends with 137.
    script = "head -c 64m /dev/zero | tail >/dev/null"
    container = await tasks.start(tasks.task("sh", "-c", script, limits={"MemoryBytes": 32 << 20}))
    assert await asyncio.wait_for(container.wait(), WAIT) == 137
    (cgroup,) = [
        Path(path) for path in _cgroups_of(container.task_id)
        if any(os.path.exists(f"{path}/{name}") for name in ("memory.max", "memory.limit_in_bytes"))
    ]
    if (cgroup / "memory.max").exists():  # cgroup v2
        limit, events = (cgroup / "memory.max").read_text(), (cgroup / "memory.events").read_text()
    else:
        limit, events = (cgroup / "memory.limit_in_bytes").read_text(), (cgroup / "memory.oom_control").read_text()
    assert int(limit) == 32 << 20
    assert int(dict(line.split() for line in events.splitlines())["oom_kill"]) >= 1  # the OOM killer did it
    code, out, _ = await tasks.run("sh", "-c", f"{script}; echo tail=$?")
    assert (code, out) == (0, "tail=0\n")  # without the limit the same command succeeds


# -- logs ------------------------------------------------------------------------------------------------


async def test_logs_keep_stdout_and_stderr_and_give_the_last_lines_or_those_since_a_time(tasks):
    container = await tasks.start(tasks.task("sh", "-c", "echo one; echo to-err >&2; sleep 1; echo two; echo three"))
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    lines = await lines_of(container)
    assert sorted((stream, line) for stream, _, line in lines) == [
        ("stderr", b"to-err"), ("stdout", b"one"), ("stdout", b"three"), ("stdout", b"two")
    ]
    assert [line for stream, _, line in lines if stream == "stdout"] == [b"one", b"two", b"three"]
    assert await lines_of(container, tail=2) == lines[-2:]
    assert await lines_of(container, tail=0) == []
    (two,) = [when for _, when, line in lines if line == b"two"]
    since = await lines_of(container, since=two)
    assert since == [line for line in lines if line[1] >= two]
    assert b"one" not in [line for _, _, line in since] and b"two" in [line for _, _, line in since]
    assert await lines_of(container, since=time.time() + 3600) == []


async def test_the_last_output_of_a_task_is_kept_even_without_a_final_newline(tasks):
    code, out, _ = await tasks.run("sh", "-c", "echo first; printf 'error: no config'; exit 1")
    assert (code, out) == (1, "first\nerror: no config\n")


async def test_a_line_longer_than_conmons_buffer_is_one_line(tasks):
    container = await tasks.start(tasks.task("sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo after"))
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    assert b" stdout P " in container.log_path.read_bytes()  # conmon wrote it in pieces
    assert [line for _, _, line in await lines_of(container)] == [b"a" * 100000, b"after"]


async def test_follow_gives_the_last_lines_then_new_ones_until_the_task_ends(tasks):
    container = await tasks.start(
        tasks.task("sh", "-c", "echo a; echo b; echo c; until [ -e /tmp/go ]; do sleep 0.1; done; echo d >&2; echo e")
    )
    await until_logged(container, b"c")
    followed = container.logs(tail=1, follow=True)
    assert (await asyncio.wait_for(anext(followed), WAIT))[::2] == ("stdout", b"c")
    Path(f"/proc/{container.pid}/root/tmp/go").touch()  # only now does the task write more
    async with asyncio.timeout(WAIT):
        rest = [(stream, line) async for stream, _, line in followed]
    assert sorted(rest) == [("stderr", b"d"), ("stdout", b"e")]
    assert container.exit_code() == 0  # it ended once the task did


# -- an agent restarted, a monitor killed ----------------------------------------------------------------


async def test_a_new_runtime_on_the_same_directory_reattaches_a_running_task_without_starting_it_again(tasks, images):
    task = tasks.task("sh", "-c", "echo before; exec sleep 100")
    container = await tasks.start(task)
    await until_logged(container, b"before")
    running = tasks.pids()

    again = ContainerRuntime(tasks.runtime.directory, images)
    assert again.task_ids() == [task["ID"]]
    found = await again.attach(task["ID"])
    assert found is not None
    assert (found.pid, found.container_id) == (container.pid, container.container_id)
    assert [line for _, _, line in await lines_of(found)] == [b"before"]
    assert tasks.pids() == running  # the same conmon and process: nothing started twice
    await found.signal(signal.SIGKILL)
    assert await asyncio.wait_for(found.wait(), WAIT) == 137
    assert await asyncio.wait_for(container.wait(), WAIT) == 137  # the first agent's handle sees it too
    await found.release()
    assert again.task_ids() == [] and tasks.runtime.task_ids() == []


async def test_a_task_whose_conmon_was_killed_is_not_attached_again_and_is_removed(tasks, images):
    task = tasks.task("sleep", "100", secrets=[secret_ref("id", "db")])
    container = await tasks.start(task, {"id": b"x"})
    task_dir = tasks.runtime.tasks_dir / task["ID"]
    conmon_pid = int((task_dir / "conmon.pid").read_text())
    pidfd = os.pidfd_open(conmon_pid)
    try:
        argv = Path(f"/proc/{conmon_pid}/cmdline").read_bytes().split(b"\0")
        assert os.path.basename(argv[0]) == b"conmon" and str(task_dir).encode() in argv  # the one we started
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        assert (await asyncio.to_thread(select.select, [pidfd], [], [], WAIT))[0]
    finally:
        os.close(pidfd)
    assert _alive(container.pid)  # the task outlived its monitor: nobody would record how it ends

    again = ContainerRuntime(tasks.runtime.directory, images)
    assert await again.attach(task["ID"]) is None
    assert again.task_ids() == []
    assert not _alive(container.pid)
    assert await tasks.leftovers() == []


# -- prepare ---------------------------------------------------------------------------------------------


async def test_prepare_runs_in_the_tasks_namespaces_before_its_command_starts(tasks):
    seen: dict[str, Any] = {}

    async def prepare(container: Container) -> None:
        seen["pid"] = container.pid
        seen["argv"] = _argv(container.pid)
        seen["logged"] = await lines_of(container)
        seen["own netns"] = os.stat(container.netns_path).st_ino != os.stat("/proc/self/ns/net").st_ino
        # What the agent does: plug the task into its networks, here an address on its loopback.
        process = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={container.netns_path}", "ip", "addr", "add", "10.99.0.1/32", "dev", "lo"
        )
        assert await process.wait() == 0
        Path(f"/proc/{container.pid}/root/tmp/from-prepare").write_text("written before the command ran\n")

    task = tasks.task("sh", "-c", "cat /tmp/from-prepare; ip -o -4 addr show lo")
    container = await tasks.start(task, prepare=prepare)
    assert await asyncio.wait_for(container.wait(), WAIT) == 0
    assert seen["pid"] == container.pid and seen["own netns"]
    assert os.path.basename(seen["argv"][0]) == b"crun"  # crun's own process: the command had not run yet
    assert seen["logged"] == []
    out, err = output_of(await lines_of(container))
    assert out.splitlines()[0] == "written before the command ran"
    assert "inet 10.99.0.1/32" in out and err == ""


async def test_a_prepare_that_raises_rejects_the_task_and_leaves_nothing(tasks):
    pids = []

    async def prepare(container: Container) -> None:
        pids.append(container.pid)
        raise RuntimeError("no address left in 10.0.1.0/24")

    task = tasks.task("sleep", "100", secrets=[secret_ref("id", "db")])
    with pytest.raises(TaskRejected, match="cannot prepare the task: no address left in 10.0.1.0/24"):
        await tasks.start(task, {"id": b"x"}, prepare=prepare)
    assert pids and not _alive(pids[0])
    assert not (tasks.runtime.tasks_dir / task["ID"]).exists()
    assert await tasks.leftovers() == []


# -- release ---------------------------------------------------------------------------------------------


async def test_release_removes_the_container_its_mounts_cgroup_and_directory(tasks, images):
    task = tasks.task(
        "sh", "-c", "sleep 100 & exec sleep 100", secrets=[secret_ref("id", "db")],
        limits={"MemoryBytes": 64 << 20, "Pids": 20, "NanoCPUs": SECOND // 2},
    )
    container = await tasks.start(task, {"id": b"x"})
    assert tasks.runtime.task_ids() == [task["ID"]]
    assert _mounts_under(tasks.runtime.directory) and _mounts_under(images.root / "containers" / task["ID"])
    assert _cgroups_of(task["ID"])
    await container.release()
    assert tasks.runtime.task_ids() == []
    assert not _alive(container.pid)
    assert await tasks.leftovers() == []


async def test_an_exec_root_holds_bundles_and_crun_state_and_the_state_dir_keeps_the_logs(tmp_path, images):
    # dockerd's --exec-root: what exists only while a container does goes there (a tmpfs, best); logs stay on disk.
    exec_root = tmp_path / "exec-root"
    tasks = Tasks(ContainerRuntime(tmp_path / "rt", images, exec_root=exec_root), images)
    try:
        task = tasks.task("sh", "-c", "echo started; sleep 100", secrets=[secret_ref("id", "db")])
        running = await tasks.start(task, {"id": b"x"})
        bundle = exec_root / "tasks" / running.task_id
        assert (bundle / "config.json").is_file() and (bundle / "conmon.pid").is_file()
        assert os.path.ismount(bundle / "secrets")
        assert os.listdir(exec_root / "crun") == [running.task_id]
        # Started without `crun start` (runtime.ociruntime.start): crun itself sees it running.
        state = subprocess.run(
            [tasks.runtime.crun, f"--root={exec_root / 'crun'}", "state", running.task_id],
            capture_output=True, text=True, check=True,
        )
        assert json.loads(state.stdout)["status"] == "running"
        assert not (tmp_path / "rt" / "tasks").exists() or os.listdir(tmp_path / "rt" / "tasks") == []
        assert running.log_path == tmp_path / "rt" / "logs" / running.task_id
        async with asyncio.timeout(WAIT):
            while b"started" not in running.log_path.read_bytes():
                await asyncio.sleep(0.05)
        ended = await tasks.start(tasks.task("true"))
        assert await asyncio.wait_for(ended.wait(), WAIT) == 0
        # What a killed node left, found and removed through both roots.
        assert await asyncio.to_thread(containers.release_all, tmp_path / "rt", images, exec_root=exec_root) == []
        assert not _alive(running.pid)
        assert os.listdir(exec_root / "tasks") == [] and os.listdir(tmp_path / "rt" / "logs") == []
        assert await tasks.leftovers() == []
    finally:
        await tasks.close()


async def test_release_all_removes_every_container_a_stopped_node_left(tasks, images):
    first = await tasks.start(tasks.task("sleep", "100", secrets=[secret_ref("id", "db")]), {"id": b"x"})
    ended = await tasks.start(tasks.task("true"))
    assert await asyncio.wait_for(ended.wait(), WAIT) == 0
    assert len(tasks.runtime.task_ids()) == 2  # an ended task stays until released
    assert await asyncio.to_thread(containers.release_all, tasks.runtime.directory, images) == []
    assert not _alive(first.pid)
    assert await tasks.leftovers() == []
