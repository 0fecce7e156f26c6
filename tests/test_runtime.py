"""The isolated task runtime with real processes: what a task sees (its secrets, hostname, user, its own
processes and loopback only), what the host never sees (the secrets' mount and bytes), exit codes, stop,
limits and logs, and that nothing is left behind once a task ends.

The isolation tests need root with CAP_SYS_ADMIN; the unprivileged fallback's tests run anywhere.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from raftswarm.agent import runtime, shim
from raftswarm.agent.runtime import RunningTask, TaskRejected, TaskRuntime

needs_isolation = pytest.mark.skipif(
    not runtime.isolation_available(), reason="needs root with CAP_SYS_ADMIN to make namespaces and mounts"
)
SECOND = 1_000_000_000
NAME = "web.1.abcdefghijklmnopqrstuvwxy"


def _mount_points(pid: str) -> set[str]:
    """Mount points under /run and /proc (where the runtime mounts inside a task) in a process's mount table."""
    with open(f"/proc/{pid}/mountinfo") as mounts:
        points = {line.split()[4] for line in mounts}
    return {p for p in points if p in ("/run", "/proc") or p.startswith(("/run/secrets", "/proc/"))}


def _shm_entries() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("raftswarm-")}


def _cgroup_directories(pid: int) -> list[Path]:
    """The cgroup directories of a process, on the v2 mount and on the v1 mount of each hierarchy."""
    v2, v1 = shim._cgroup_mounts()
    found = []
    with open(f"/proc/{pid}/cgroup") as cgroups:
        for line in cgroups:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            mount = v2 if hierarchy == "0" else v1.get(controllers.split(",")[0])
            if mount is not None and shim.CGROUP_PARENT in path:
                found.append(mount / path.lstrip("/"))
    return found


def _processes_with(marker: bytes, shims_of: Path | None = None) -> list[int]:
    """PIDs whose environment holds `marker` (task commands) or whose command line is a shim with sockets
    in `shims_of`."""
    relay = f"main(sys.argv[1:])\0{shims_of}\0".encode() if shims_of else b"\0\0\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker in environ.read() or relay in cmdline.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


class Tasks:
    """Starts tasks for a test and tracks them, so teardown can kill them and check nothing is left."""

    def __init__(self, directory: Path) -> None:
        self.marker = f"RAFTSWARM_TEST_RUN={uuid.uuid4().hex}"
        self.directory = directory
        self.runtime = TaskRuntime(directory)
        self.started: list[RunningTask] = []
        self.cgroups: list[Path] = []

    async def start(
        self,
        command: list[str],
        secrets: dict[str, bytes] | None = None,
        refs: Sequence[dict] = (),
        *,
        limits: dict[str, int] | None = None,
        name: str = NAME,
        **container: Any,
    ) -> RunningTask:
        env = [self.marker, *container.pop("Env", [])]
        task = {
            "ID": uuid.uuid4().hex[:25],
            "Spec": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Command": command,
                    "Env": env,
                    "Secrets": list(refs),
                    **container,
                },
                "Resources": {"Limits": limits or {}},
            },
        }
        started = await self.runtime.start(task, secrets or {}, name=name)
        self.started.append(started)
        if started.isolated:
            try:
                self.cgroups += _cgroup_directories(started.pid)
            except FileNotFoundError:
                pass  # it ended already
        return started

    async def output(self, command: list[str], *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        """Run a task to its end: exit code, stdout and stderr."""
        task = await self.start(command, *args, **kwargs)
        code = await asyncio.wait_for(task.wait(), 10)
        lines = await logs_of(task)
        out, err = (b"\n".join(line for s, _, line in lines if s == stream).decode() for stream in ("stdout", "stderr"))
        return code, out, err

    def processes(self) -> list[int]:
        """This test's task processes still running."""
        return _processes_with(self.marker.encode())

    def shims(self) -> list[int]:
        return _processes_with(b"\0\0\0", self.directory)


async def logs_of(task: RunningTask, **options: Any) -> list[tuple[str, float, bytes]]:
    return [entry async for entry in task.logs(**options)]


@pytest.fixture
async def tasks(tmp_path):
    mounts_before = {pid: _mount_points(pid) for pid in ("self", "1")}
    shm_before = _shm_entries()
    run_secrets_before = os.path.lexists("/run/secrets")
    tracker = Tasks(tmp_path / "worker-tasks")
    yield tracker
    for task in tracker.started:
        await task.release()
    await tracker.runtime.close(wait=10)
    assert {pid: _mount_points(pid) for pid in ("self", "1")} == mounts_before
    assert _shm_entries() == shm_before
    assert os.path.lexists("/run/secrets") == run_secrets_before
    assert [path for path in tracker.cgroups if path.exists()] == []
    assert tracker.processes() == []
    assert tracker.shims() == []
    assert tracker.runtime.task_ids() == []


def secret_ref(secret_id: str, name: str, uid: str = "0", gid: str = "0", mode: int = 0o444) -> dict:
    return {"SecretID": secret_id, "SecretName": name, "File": {"Name": name, "UID": uid, "GID": gid, "Mode": mode}}


@needs_isolation
@pytest.mark.security
async def test_a_task_sees_its_secrets_with_their_owner_and_mode_and_its_name_as_hostname(tasks):
    db, other = f"db-{uuid.uuid4().hex}".encode(), b"other secret\n"
    code, out, err = await tasks.output(
        [
            "sh",
            "-c",
            "cat /run/secrets/db; echo; hostname; id -u; stat -c '%a %u %g' /run/secrets/db /run/secrets/other",
        ],
        {"id-db": db, "id-other": other},
        [secret_ref("id-db", "db", mode=0o400), secret_ref("id-other", "other", uid="65534", gid="65534", mode=0o440)],
    )
    assert (code, err) == (0, "")
    assert out.splitlines() == [db.decode(), NAME, "0", "400 0 0", "440 65534 65534"]


@needs_isolation
@pytest.mark.security
async def test_the_secrets_mount_and_bytes_never_reach_the_host(tasks, tmp_path):
    began = time.time() - 1
    secret = f"s3cr3t-{uuid.uuid4().hex}".encode()
    task = await tasks.start(["sleep", "100"], {"id-db": secret}, [secret_ref("id-db", "db")])

    assert "/run/secrets" in _mount_points(str(task.pid))  # it exists, in the task's mount namespace only
    for pid in ("self", "1"):
        assert not any(point.startswith("/run/secrets") for point in _mount_points(pid))
    for pid in [*tasks.processes(), *tasks.shims()]:
        for view in ("cmdline", "environ"):
            assert secret not in Path(f"/proc/{pid}/{view}").read_bytes()
    for root in (tmp_path, Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run")):
        for directory, _, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                    if stat.S_ISREG(info.st_mode) and info.st_mtime >= began and info.st_size < 64 << 20:
                        assert secret not in Path(path).read_bytes(), path
                except (PermissionError, FileNotFoundError):
                    pass
    assert await task.stop(SECOND) == 143


@needs_isolation
@pytest.mark.security
async def test_another_task_cannot_see_the_first_tasks_secret(tasks):
    secret = f"s3cr3t-{uuid.uuid4().hex}".encode()
    first = await tasks.start(["sleep", "100"], {"id-db": secret}, [secret_ref("id-db", "db")])
    _, out, err = await tasks.output(
        ["sh", "-c", f"ls -A /run/secrets; cat /proc/{first.pid}/root/run/secrets/db; echo cat=$?; ls -d /proc/[0-9]*"]
    )
    assert secret.decode() not in out + err
    listed = out.splitlines()
    assert listed[0] == "cat=1"  # /run/secrets is empty, and the first task's PID does not exist here
    assert {int(path.removeprefix("/proc/")) for path in listed[1:]} <= {1, 2, 3, 4, 5}


@needs_isolation
@pytest.mark.security
async def test_a_root_task_sees_only_its_own_processes_and_cannot_unmount_or_change_its_secrets(tasks):
    script = (
        "umount /proc; echo umount=$?; touch /run/secrets/x; echo touch=$?; "
        "mount -o remount,rw /run/secrets; echo remount=$?; ps -e -o pid= | wc -l"
    )
    _, out, _ = await tasks.output(["sh", "-c", script], {"id-db": b"x"}, [secret_ref("id-db", "db")])
    lines = out.split()
    assert [line.partition("=")[0] for line in lines[:3]] == ["umount", "touch", "remount"]
    assert all(line.partition("=")[2] != "0" for line in lines[:3])
    assert int(lines[3]) <= 5  # init, sh, ps, wc: not the host's processes


@needs_isolation
async def test_the_task_has_its_own_network_namespace_with_loopback_up(tasks):
    task = await tasks.start(["sleep", "100"])
    assert os.stat(task.netns_path).st_ino != os.stat("/proc/self/ns/net").st_ino
    code, out, _ = await tasks.output(["ip", "-o", "link"])
    assert code == 0
    links = out.splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0]
    await task.stop(SECOND)


@needs_isolation
async def test_exit_codes_are_the_commands(tasks):
    assert (await tasks.output(["sh", "-c", "exit 3"]))[0] == 3
    assert (await tasks.output(["true"]))[0] == 0
    assert (await tasks.output(["sh", "-c", "kill -KILL $$"]))[0] == 137


@needs_isolation
async def test_stop_kills_a_task_that_ignores_sigterm_after_the_grace_period(tasks):
    task = await tasks.start(["sh", "-c", "trap '' TERM; sleep 100"])
    await asyncio.sleep(0.2)  # let sh set its trap
    began = time.monotonic()
    assert await asyncio.wait_for(task.stop(SECOND // 2), 10) == 137
    assert time.monotonic() - began >= 0.5
    assert tasks.processes() == []
    assert not os.path.exists(f"/proc/{task.pid}")


@needs_isolation
async def test_stop_returns_as_soon_as_the_task_exits_on_sigterm(tasks):
    task = await tasks.start(["sleep", "100"])
    began = time.monotonic()
    assert await task.stop(10 * SECOND) == 143  # sleep has no handler: init passed SIGTERM on to it
    assert time.monotonic() - began < 5
    assert tasks.processes() == []


@needs_isolation
async def test_env_dir_and_user_apply(tasks):
    code, out, _ = await tasks.output(
        ["sh", "-c", 'echo "$GREETING $HOSTNAME"; pwd; id -u; id -g'], Env=["GREETING=hello"], Dir="/tmp", User="nobody"
    )
    assert code == 0
    assert out.splitlines() == [f"hello {NAME}", "/tmp", "65534", "65534"]
    code, out, _ = await tasks.output(["id", "-u"], User="1234:5678", Hostname="given")
    assert (code, out) == (0, "1234")


@pytest.mark.parametrize(
    "command, kwargs, message",
    [
        ([], {}, "no command to run"),
        (["true"], {"User": "no-such-user"}, "unable to find user no-such-user"),
        (["true"], {"Dir": "/no/such/dir"}, "working directory /no/such/dir does not exist"),
        (["true"], {"refs": [secret_ref("id-missing", "db")]}, "was not delivered"),
        (["true"], {"refs": [secret_ref("id-db", "/etc/db")], "secrets": {"id-db": b"x"}}, "outside /run/secrets"),
        (["true"], {"refs": [secret_ref("id-db", "../db")], "secrets": {"id-db": b"x"}}, "invalid secret target"),
        (["no-such-command-xyz"], {}, "cannot start no-such-command-xyz: No such file or directory"),
    ],
)
async def test_a_task_that_cannot_run_is_rejected(tasks, command, kwargs, message):
    with pytest.raises(TaskRejected, match=message):
        await tasks.start(command, **kwargs)


@needs_isolation
async def test_an_absolute_secret_target_under_run_secrets_is_accepted(tasks):
    code, out, _ = await tasks.output(
        ["cat", "/run/secrets/app/key"], {"id": b"k"}, [secret_ref("id", "/run/secrets/app/key")]
    )
    assert (code, out) == (0, "k")


@needs_isolation
async def test_the_memory_limit_applies(tasks):
    if not _memory_controller():
        pytest.skip("no writable memory cgroup controller (v2 or v1) on this host")
    limits = {"MemoryBytes": 32 << 20}
    task = await tasks.start(["sleep", "100"], limits=limits)
    files = [d / name for d in _cgroup_directories(task.pid) for name in ("memory.max", "memory.limit_in_bytes")]
    assert [f.read_text().strip() for f in files if f.exists()] == ["33554432"]
    await task.stop(SECOND)
    code, _, _ = await tasks.output(["python3", "-c", "b = b'x' * (64 << 20)"], limits=limits)
    assert code == 137  # killed by the OOM killer


def _memory_controller() -> bool:
    v2, v1 = shim._cgroup_mounts()
    on_v2 = v2 is not None and "memory" in (v2 / "cgroup.controllers").read_text().split()
    return (on_v2 or "memory" in v1) and os.access(v2 if on_v2 else v1["memory"], os.W_OK)


@needs_isolation
async def test_logs_keep_both_streams_and_only_the_last_lines(tasks):
    task = await tasks.start(["sh", "-c", "echo to-out; echo to-err >&2"])
    await task.wait()
    lines = await logs_of(task)
    assert sorted((stream, line) for stream, _, line in lines) == [("stderr", b"to-err"), ("stdout", b"to-out")]
    task = await tasks.start(["seq", "1", str(shim.LOG_MAX_LINES + 500)])
    await task.wait()
    expected = [str(n).encode() for n in range(501, shim.LOG_MAX_LINES + 501)]
    assert [line for _, _, line in await logs_of(task)] == expected
    assert [line for _, _, line in await logs_of(task, tail=3)] == expected[-3:]
    assert await logs_of(task, since=time.time() + 60) == []


@needs_isolation
async def test_nothing_is_left_once_the_task_ends(tasks):
    task = await tasks.start(
        ["sh", "-c", "sleep 100 & sleep 100"],
        {"id": b"x"},
        [secret_ref("id", "db")],
        limits={"MemoryBytes": 64 << 20, "Pids": 20, "NanoCPUs": SECOND // 2},
    )
    cgroups = _cgroup_directories(task.pid)
    namespace = os.readlink(f"/proc/{task.pid}/ns/mnt")
    await task.stop(SECOND // 5)
    assert [path for path in cgroups if path.exists()] == []
    assert tasks.processes() == []
    holders = [pid for pid in os.listdir("/proc") if pid.isdigit() and _mount_namespace(pid) == namespace]
    assert holders == []
    assert not os.path.lexists("/run/secrets")


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat_file:
        return int(stat_file.read().rpartition(")")[2].split()[1])


def _mount_namespace(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


@pytest.mark.security
async def test_unprivileged_fallback_gives_secrets_in_a_private_memory_backed_directory(tasks, monkeypatch):
    monkeypatch.setattr(runtime, "isolation_available", lambda: False)
    refs = [secret_ref("id", "db", mode=0o400)]
    task = await tasks.start(
        ["sh", "-c", 'cat "$RAFTSWARM_SECRETS_DIR/db"; echo; echo "$RAFTSWARM_SECRETS_DIR"; sleep 100'],
        {"id": b"pw"},
        refs,
    )
    for _ in range(100):
        if len(await logs_of(task)) == 2:
            break
        await asyncio.sleep(0.02)
    secret, directory = (line.decode() for _, _, line in await logs_of(task))
    assert not task.isolated and secret == "pw"
    assert directory.startswith("/dev/shm/raftswarm-")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(f"{directory}/db").st_mode) == 0o400
    assert await task.stop(SECOND) == 143
    assert not os.path.exists(directory)


async def test_unprivileged_fallback_reports_exit_codes_and_rejects_missing_commands(tasks, monkeypatch):
    monkeypatch.setattr(runtime, "isolation_available", lambda: False)
    assert (await tasks.output(["sh", "-c", "echo out; exit 4"]))[:2] == (4, "out")
    task = await tasks.start(["sh", "-c", "trap '' TERM; sleep 100"])
    await asyncio.sleep(0.2)
    assert await task.stop(SECOND // 5) == 137
    with pytest.raises(TaskRejected, match="cannot start no-such-command-xyz"):
        await tasks.start(["no-such-command-xyz"])


def test_limits_go_to_cgroup_v2_files_as_docker_writes_them(tmp_path, monkeypatch):
    """On a pure cgroup v2 host (this test's fake hierarchy stands in for one): one directory per task."""
    v2 = tmp_path / "cgroup"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    monkeypatch.setattr(shim, "_cgroup_mounts", lambda: (v2, {}))
    cgroup = shim.TaskCgroup.create("task1", {"MemoryBytes": 32 << 20, "NanoCPUs": SECOND // 2, "Pids": 64}, _no_warning)
    assert cgroup is not None and len(cgroup.directories) == 1
    directory = cgroup.directories[0]
    assert directory.parent == v2 / shim.CGROUP_PARENT and directory.name.startswith("task1-")
    assert (v2 / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (directory.parent / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    written = {name: (directory / name).read_text() for name in ("memory.max", "cpu.max", "pids.max")}
    assert written == {"memory.max": "33554432", "cpu.max": "50000 100000", "pids.max": "64"}


def test_limits_go_to_cgroup_v1_hierarchies_where_v2_lacks_the_controllers(tmp_path, monkeypatch):
    """A hybrid host (like a systemd host in legacy mode): v2 mounted without memory/cpu/pids."""
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("hugetlb\n")
    v1 = {name: tmp_path / name for name in ("memory", "cpu", "pids")}
    monkeypatch.setattr(shim, "_cgroup_mounts", lambda: (v2, {**v1, "cpuacct": v1["cpu"]}))
    monkeypatch.setattr(shim, "_own_v1_cgroups", lambda: {"memory": "/agent", "cpu": "/", "pids": "/"})
    cgroup = shim.TaskCgroup.create("task1", {"MemoryBytes": 32 << 20, "NanoCPUs": 1_500_000_000}, _no_warning)
    assert cgroup is not None
    by_hierarchy = {directory.relative_to(tmp_path).parts[0]: directory for directory in cgroup.directories}
    assert set(by_hierarchy) == {"memory", "cpu", "pids"}
    assert by_hierarchy["memory"].parent == v1["memory"] / "agent" / shim.CGROUP_PARENT
    assert (by_hierarchy["memory"] / "memory.limit_in_bytes").read_text() == "33554432"
    assert (by_hierarchy["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    assert (by_hierarchy["cpu"] / "cpu.cfs_quota_us").read_text() == "150000"
    assert not (v2 / shim.CGROUP_PARENT).exists()


def _no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


async def test_a_new_runtime_on_the_same_directory_finds_a_running_task_and_its_output(tasks):
    """What a restarted agent does: the task kept running in its shim, and is found, followed and stopped."""
    task = await tasks.start(["sh", "-c", "echo before; sleep 100"])
    again = TaskRuntime(tasks.directory)
    try:
        assert again.task_ids() == [task.task_id]
        found = await again.attach(task.task_id)
        assert found is not None and (found.pid, found.isolated) == (task.pid, task.isolated)
        for _ in range(100):
            if await logs_of(found):
                break
            await asyncio.sleep(0.02)
        assert [line for _, _, line in await logs_of(found)] == [b"before"]
        assert await found.stop(SECOND) == 143
        await found.release()
        assert again.task_ids() == []
    finally:
        await again.close()


async def test_a_task_whose_shim_was_killed_dies_with_it_and_is_not_found_again(tasks):
    await tasks.start(["sleep", "100"])
    (shim_pid,) = [pid for pid in tasks.shims() if _parent(pid) == os.getpid()]  # init is a fork of the shim
    os.kill(shim_pid, 9)
    for _ in range(250):
        if not tasks.processes():
            break
        await asyncio.sleep(0.02)
    assert tasks.processes() == []
    (task_id,) = tasks.runtime.task_ids()
    assert await tasks.runtime.attach(task_id) is None
    assert tasks.runtime.task_ids() == []


async def test_follow_gives_new_lines_until_the_task_ends(tasks):
    task = await tasks.start(["sh", "-c", "echo one; sleep 0.3; echo two; sleep 0.3; echo three"])
    followed = [line for _, _, line in await asyncio.wait_for(logs_of(task, follow=True), 10)]
    assert followed == [b"one", b"two", b"three"]
    assert await task.wait() == 0


@needs_isolation
async def test_prepare_runs_in_the_tasks_network_namespace_before_its_command_starts(tasks):
    seen: list[str] = []

    async def prepare(task: RunningTask) -> None:
        # What the agent's network setup does: act in the task's namespace before the command runs.
        process = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={task.netns_path}", "ip", "addr", "add", "10.99.0.1/32", "dev", "lo"
        )
        assert await process.wait() == 0
        seen.append(task.netns_path)

    task = await tasks.runtime.start(_spec(tasks, ["ip", "-o", "addr", "show", "lo"]), {}, name=NAME, prepare=prepare)
    tasks.started.append(task)
    assert await task.wait() == 0 and seen
    assert any(b"10.99.0.1/32" in line for _, _, line in await logs_of(task))


async def test_a_failing_prepare_rejects_the_task_and_leaves_nothing(tasks):
    async def prepare(task: RunningTask) -> None:
        raise RuntimeError("no address left")

    if not runtime.isolation_available():
        pytest.skip("prepare runs only for isolated tasks")
    with pytest.raises(TaskRejected, match="cannot prepare the task: no address left"):
        await tasks.runtime.start(_spec(tasks, ["sleep", "100"]), {}, name=NAME, prepare=prepare)
    assert tasks.processes() == []


def _spec(tasks: Tasks, command: list[str]) -> dict:
    return {"ID": uuid.uuid4().hex[:25], "Spec": {"ContainerSpec": {"Image": "busybox", "Command": command, "Env": [tasks.marker]}}}
