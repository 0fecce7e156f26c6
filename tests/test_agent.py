"""The worker agent and task runtime on a real swarm (1 manager, 2 workers, real node processes): what a
task sees of its secrets, what nobody else sees, exit codes and restarts, the command a task runs (its
service's, else its image's), stop grace periods, `service logs`, and an agent killed with SIGKILL and started
again taking its running tasks back instead of duplicating them.

Tasks are OCI containers (crun under conmon): every test here needs root with CAP_SYS_ADMIN, crun and conmon.
The nodes run with `--init` (tini as each task's PID 1), so a `sleep` task stops at SIGTERM instead of after
its grace period.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.cli.main import main
from raftswarm.localcluster.swarm import ClusterNode, SwarmCluster
from raftswarm.runtime.containers import unavailable

from test_services import converged, create_secret, eventually, ids_by_name, spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"),
]

HEARTBEAT = 2.0
"""Long enough that a worker restarted by a test is back before the swarm marks it down (3 heartbeats)."""
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        SwarmCluster.up(
            "agt", managers=1, workers=2, base_dir=base, network="loopback", heartbeat_period=HEARTBEAT, init=True
        )
    )
    yield cluster
    cluster.down()


@pytest.fixture
def marker() -> str:
    """An environment entry that marks the processes of one test's tasks."""
    return f"RAFTSWARM_AGENT_TEST={uuid.uuid4().hex}"


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def on_node(node_id: str, name: str, args: list[str], marker: str, replicas: int = 1, **container: Any) -> dict:
    made = spec(name, args, replicas=replicas, Placement={"Constraints": [f"node.id=={node_id}"]})
    made["TaskTemplate"]["ContainerSpec"].update({"Env": [marker], **container})
    return made


async def tasks_of(client: ApiClient, service: str) -> list[dict]:
    return await client.task_list({"service": [service]})


async def cli(swarm: SwarmCluster, *args: str) -> str:
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["-H", f"unix://{swarm.node('manager1').socket}", *args]
    )
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_crashing_task_is_restarted_by_its_policy_and_its_exit_code_shown(swarm, marker):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        made = on_node(ids["worker1"], "crasher", ["sh", "-c", "echo boom >&2; exit 3"], marker)
        made["TaskTemplate"]["RestartPolicy"] = {"Condition": "on-failure", "Delay": SECOND // 10, "MaxAttempts": 2}
        await client.service_create(made)

        async def three_failed() -> list[dict] | None:
            failed = [t for t in await tasks_of(client, "crasher") if t["Status"]["State"] == "failed"]
            return failed if len(failed) == 3 else None

        failed = await eventually(three_failed, "the first run and 2 restarts to fail")
        assert {t["Status"]["Err"] for t in failed} == {"task: non-zero exit (3)"}
        assert {t["Status"]["ContainerStatus"]["ExitCode"] for t in failed} == {3}
        assert {t["Slot"] for t in failed} == {1}
        shown = await cli(swarm, "service", "ps", "--no-trunc", "crasher")
        assert shown.count('"task: non-zero exit (3)"') == 3
        await client.service_remove("crasher")


async def import_image(node: ClusterNode, reference: str, changes: tuple[str, ...] = ()) -> None:
    """`docker import` into `node`'s image store of a root filesystem holding busybox alone, with the
    Dockerfile `changes` (no CMD unless they give one)."""
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as archive:
        archive.add("/bin/busybox", "bin/busybox")
    repo, tag = reference.split(":")
    params = [("fromSrc", "-"), ("repo", repo), ("tag", tag), *(("changes", change) for change in changes)]
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(node.socket))) as session:
        async with session.post("http://raftswarm/images/create", params=params, data=rootfs.getvalue()) as answer:
            last = json.loads((await answer.text()).splitlines()[-1])
    assert answer.status == 200 and last.get("status", "").startswith("sha256:"), last


async def test_a_task_runs_its_images_command_unless_it_gives_one_and_is_rejected_when_neither_does(swarm, marker):
    ids = await ids_by_name(swarm)
    worker = swarm.node("worker1")
    await import_image(worker, "nocmd:1")
    await import_image(worker, "withcmd:1", ('CMD ["/bin/busybox", "echo", "from the image"]',))
    async with api(swarm) as client:
        for name, image, args in (
            ("nocommand", "nocmd:1", None),
            ("imagecommand", "withcmd:1", None),
            ("owncommand", "withcmd:1", ["/bin/busybox", "echo", "from the service"]),
        ):
            made = on_node(ids["worker1"], name, args or [], marker, Image=image)
            if args is None:
                del made["TaskTemplate"]["ContainerSpec"]["Args"]
            made["TaskTemplate"]["RestartPolicy"] = {"Condition": "none"}
            await client.service_create(made)

        async def ended(service: str) -> dict | None:
            states = ("rejected", "complete", "failed")
            found = [t for t in await tasks_of(client, service) if t["Status"]["State"] in states]
            return found[0] if found else None

        task = await eventually(lambda: ended("nocommand"), "the task without a command to end")
        assert task["Status"]["State"] == "rejected"
        assert "no command specified" in task["Status"]["Err"]  # dockerd's words
        for service, said in (("imagecommand", "from the image"), ("owncommand", "from the service")):
            task = await eventually(lambda service=service: ended(service), f"{service} to end")
            assert task["Status"]["State"] == "complete", task["Status"]
            assert await _output_of(client, task["ID"]) == [said]
        for service in ("nocommand", "imagecommand", "owncommand"):
            await client.service_remove(service)


async def test_a_task_that_ignores_sigterm_is_killed_after_the_grace_period(swarm, marker):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        stubborn = ["sh", "-c", "trap '' TERM; echo trapped; while true; do sleep 1; done"]
        made = on_node(ids["worker2"], "stubborn", stubborn, marker, StopGracePeriod=SECOND)
        await client.service_create(made)
        (task,) = await eventually(lambda: converged(client, "stubborn", 1), "the task to run")
        await eventually(lambda: _output_of(client, task["ID"]), "the trap to be set")
        service = await client.service_inspect("stubborn")
        await client.service_update(service["ID"], service["Version"]["Index"], {**service["Spec"], "Mode": {"Replicated": {"Replicas": 0}}})

        async def shut_down() -> dict | None:
            found = await client.task_list({"id": [task["ID"]]})
            return found[0] if found and found[0]["Status"]["State"] == "shutdown" else None

        assert (await eventually(shut_down, "the task to stop"))["Status"]["ContainerStatus"]["ExitCode"] == 137
        assert processes_with(marker) == []
        await client.service_remove("stubborn")


async def _output_of(client: ApiClient, task_id: str) -> list[str]:
    return [line.decode().rstrip("\n") async for _, line in client.task_logs(task_id)]


async def test_killing_the_agent_and_starting_it_again_does_not_duplicate_its_running_tasks(swarm, marker):
    ids = await ids_by_name(swarm)
    worker = swarm.node("worker1")
    async with api(swarm) as client:
        made = on_node(ids["worker1"], "steady", ["sh", "-c", "echo started; exec sleep 1000"], marker, replicas=2)
        await client.service_create(made)
        before = await eventually(lambda: converged(client, "steady", 2), "2 running replicas")
        processes = processes_with(marker)
        # Each container's init (tini: the task's PID 1, as the agent reports it) and its `sleep`.
        assert len(processes) == 4
        assert {t["Status"]["ContainerStatus"]["PID"] for t in before} < set(processes)

        swarm.kill(worker)
        swarm.start(worker)
        await swarm.wait_ready(worker)
        async with swarm.client(worker) as node_client:
            # The agent found both tasks and followed them instead of starting them again.
            agent = await eventually(lambda: _agent_holding(node_client, 2), "the restarted agent to hold 2 tasks")
        assert set(agent["tasks"]) == {t["ID"] for t in before}
        after = await tasks_of(client, "steady")
        assert {t["ID"] for t in after} == {t["ID"] for t in before}
        assert all(t["Status"]["State"] == "running" for t in after)
        assert processes_with(marker) == processes
        # Their output survived with them.
        assert await _output_of(client, before[0]["ID"]) == ["started"]

        await client.service_remove("steady")
        await eventually(lambda: _none_left(marker), "the tasks' processes to end")


async def _agent_holding(node_client: ApiClient, count: int) -> dict | None:
    agent = await node_client.request("GET", "/raftswarm/agent")
    return agent if len([s for s in agent["tasks"].values() if s == "running"]) == count else None


async def _none_left(marker: str, init: int | None = None) -> bool:
    """No process of the tasks is left (`init`, the container's first process, is the last to go)."""
    return not processes_with(marker) and (init is None or not os.path.exists(f"/proc/{init}"))


def _mount_points(pid: int | str) -> set[str]:
    with open(f"/proc/{pid}/mountinfo") as mounts:
        return {line.split()[4] for line in mounts}


@pytest.mark.security
async def test_a_task_whose_secrets_outgrow_an_rpc_frame_still_gets_them_all(swarm, marker):
    # 18 secrets of 500 kB: 9 MB, more than one 8 MiB answer of the assignment stream holds.
    ids = await ids_by_name(swarm)
    count, size = 18, 500_000
    async with api(swarm) as client:
        references = []
        for i in range(count):
            secret = await create_secret(client, f"agent-big-{i}", bytes([65 + i]) * size)
            references.append({
                "SecretID": secret["ID"], "SecretName": f"agent-big-{i}",
                "File": {"Name": f"big-{i}", "UID": "0", "GID": "0", "Mode": 0o400},
            })
        show = "for f in /run/secrets/big-*; do echo $(wc -c < $f) $(head -c 1 $f); done | sort -k2; exec sleep 1000"
        await client.service_create(on_node(ids["worker2"], "big", ["sh", "-c", show], marker, Secrets=references))
        (task,) = await eventually(lambda: converged(client, "big", 1), "the task to run", within=60)
        shown = await eventually(lambda: _lines(client, task["ID"], count), "its secrets' sizes")
        assert shown == [f"{size} {chr(65 + i)}" for i in range(count)]
        await client.service_remove("big")
        for i in range(count):
            await eventually(lambda i=i: _removed_secret(client, f"agent-big-{i}"), "the secret's removal")


async def _removed_secret(client: ApiClient, name: str) -> bool:
    """Remove a secret once no task uses it any more (its service's tasks stop first)."""
    try:
        await client.secret_remove(name)
    except ApiError:
        return False
    return True


async def test_a_secret_is_visible_only_inside_the_task_that_uses_it_and_never_on_the_nodes_disk(swarm, marker):
    ids = await ids_by_name(swarm)
    worker = swarm.node("worker1")
    value = f"s3cr3t-{uuid.uuid4().hex}"
    async with api(swarm) as client:
        secret = await create_secret(client, "agent-db", value.encode())
        reference = {"SecretID": secret["ID"], "SecretName": "agent-db", "File": {"Name": "db", "UID": "1000", "GID": "1001", "Mode": 0o440}}
        # Its digest, not the secret: a task's output goes to its log file on the node's disk, as Docker's does.
        show = (
            "sha256sum /run/secrets/db | cut -d' ' -f1; stat -c '%a %u %g' /run/secrets/db; hostname; "
            "exec sleep 1000"
        )
        await client.service_create(on_node(ids["worker1"], "reader", ["sh", "-c", show], marker, Secrets=[reference]))
        (task,) = await eventually(lambda: converged(client, "reader", 1), "the reader to run")
        shown = await eventually(lambda: _lines(client, task["ID"], 3), "the reader's output")
        hostname = task["Status"]["ContainerStatus"]["ContainerID"][:12]  # Docker's default hostname
        assert shown == [hashlib.sha256(value.encode()).hexdigest(), "440 1000 1001", hostname]
        init = task["Status"]["ContainerStatus"]["PID"]
        assert "/run/secrets" in _mount_points(init)
        runtime_root = swarm.exec_root(worker)  # the worker's containers' bundles
        (held,) = _tmpfs_mounts_under(runtime_root)  # where the worker keeps the reader's secrets

        # Another task on the same node, which does not reference the secret, cannot find it: it has no
        # secrets of its own, the reader's PID does not exist in its PID namespace, the node's files are not
        # in its root filesystem.
        snoop = (
            "echo found=$(ls -A /run/secrets 2>/dev/null | wc -l); "
            f"cat /proc/{init}/root/run/secrets/db 2>/dev/null; echo cat=$?; "
            f"cat {held}/db 2>/dev/null; echo host=$?; exec sleep 1000"
        )
        await client.service_create(on_node(ids["worker1"], "snoop", ["sh", "-c", snoop], marker))
        (other,) = await eventually(lambda: converged(client, "snoop", 1), "the snoop to run")
        seen = await eventually(lambda: _lines(client, other["ID"], 3), "the snoop's output")
        assert seen == ["found=0", "cat=1", "host=1"]
        for pid in processes_with(marker):  # no task process carries it in its command line or environment
            for view in ("cmdline", "environ"):
                assert value.encode() not in Path(f"/proc/{pid}/{view}").read_bytes()

        # Not in the host's mount table, nor in any file of the worker (state dir, log, execution root): the
        # worker keeps it on the task's tmpfs (memory), in the task's bundle, where only the host's root reaches.
        for pid in ("self", 1, worker.pid):
            assert not any(point.startswith("/run/secrets") for point in _mount_points(pid))
        assert not os.path.lexists("/run/secrets")
        assert _tmpfs_mounts_under(runtime_root) == [held] and (held / "db").read_bytes() == value.encode()
        for root in {worker.state_dir, worker.log_path.parent, runtime_root}:
            for path in _files_on_disk(root):
                assert value.encode() not in path.read_bytes(), path

        await client.service_remove("reader")
        await client.service_remove("snoop")
        await eventually(lambda: _none_left(marker, init), "the tasks' processes and the reader's init to end")
        assert not any(
            "/run/secrets" in _mount_points(pid) for pid in os.listdir("/proc") if pid.isdigit() and _readable(pid)
        )
        await eventually(lambda: _no_tmpfs_under(runtime_root), "the reader's secrets tmpfs to be unmounted")
        await eventually(lambda: _secret_free(client, secret["ID"]), "the secret to be unused")
        await client.secret_remove(secret["ID"])


async def _lines(client: ApiClient, task_id: str, count: int) -> list[str] | None:
    lines = await _output_of(client, task_id)
    return lines if len(lines) >= count else None


def _tmpfs_mounts_under(root: Path) -> list[Path]:
    """The tmpfs mount points strictly below `root`, in this process's (the host's) mount table."""
    mounts = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            point, fstype = Path(fields[4]), fields[fields.index("-") + 1]
            if fstype == "tmpfs" and root in point.parents:
                mounts.append(point)
    return mounts


async def _no_tmpfs_under(root: Path) -> bool:
    return not _tmpfs_mounts_under(root)


def _files_on_disk(root: Path) -> Iterator[Path]:
    """The regular files below `root`, but not those on a tmpfs mounted below it (memory, not disk)."""
    memory = {str(point) for point in _tmpfs_mounts_under(root)}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if os.path.join(directory, d) not in memory]
        for name in files:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path


def _readable(pid: str) -> bool:
    try:
        _mount_points(pid)
        return True
    except OSError:
        return False


async def _secret_free(client: ApiClient, secret_id: str) -> bool:
    return not [s for s in await client.service_list() if secret_id in str(s["Spec"])]


async def test_service_logs_show_each_replicas_output_prefixed_with_its_task_name(swarm, marker):
    async with api(swarm) as client:
        talk = 'echo "hello from $HOSTNAME"; echo oops >&2; echo bye; exec sleep 1000'
        made = spec("talker", ["sh", "-c", talk], replicas=2, Placement={"Constraints": ["node.role==worker"]})
        made["TaskTemplate"]["ContainerSpec"]["Env"] = [marker]
        await client.service_create(made)
        running = await eventually(lambda: converged(client, "talker", 2), "2 running replicas")
        for task in running:
            await eventually(lambda task=task: _lines(client, task["ID"], 3), "each replica's output")

        shown = (await cli(swarm, "service", "logs", "talker")).splitlines()
        assert len(shown) == 6
        hostnames = {n["ID"]: n["Description"]["Hostname"] for n in await client.node_list()}
        for task in running:
            prefix = f"talker.{task['Slot']}.{task['ID'][:12]}@{hostnames[task['NodeID']]}"
            mine = [line.split("| ", 1)[1] for line in shown if line.startswith(prefix + " ")]
            hostname = task["Status"]["ContainerStatus"]["ContainerID"][:12]  # Docker's default hostname
            assert sorted(mine) == sorted([f"hello from {hostname}", "oops", "bye"])

        tail = (await cli(swarm, "service", "logs", "--tail", "1", "--no-task-ids", "talker")).splitlines()
        assert len(tail) == 2 and all(line.startswith("talker.") for line in tail)
        raw = await cli(swarm, "service", "logs", "--raw", "talker")
        assert sorted(raw.splitlines()) == sorted(line.split("| ", 1)[1] for line in shown)
        await client.service_remove("talker")


async def test_service_logs_follow_streams_new_lines_as_they_are_written(swarm, marker):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        ticker = 'n=0; while true; do n=$((n+1)); echo "tick $n"; sleep 0.2; done'
        await client.service_create(on_node(ids["worker2"], "ticker", ["sh", "-c", ticker], marker))
        (task,) = await eventually(lambda: converged(client, "ticker", 1), "the ticker to run")
        followed: list[str] = []
        async for _, line in client.service_logs("ticker", follow=True, tail="0"):
            followed.append(line.decode().rstrip("\n"))
            if len(followed) == 3:
                break
        numbers = [int(line.rsplit(" ", 1)[1]) for line in followed]
        assert numbers == list(range(numbers[0], numbers[0] + 3))  # consecutive lines, as they came
        await client.service_remove("ticker")
