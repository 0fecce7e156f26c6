"""The container and job flags of `raftswarm service create/update` on a real swarm (1 manager, 1 worker,
loopback, busybox tasks as containers): what the flags set is what the task's process sees, an update with
-add/-rm flags reaches the next task, and a job's wait ends with "job complete" as `ls` and `ps` show it."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner
from test_services import eventually

from raftswarm.cli.main import main
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"),
]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        SwarmCluster.up("csw", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=0.5)
    )
    yield cluster
    cluster.down()


async def run(swarm: SwarmCluster, *args: str):
    socket = f"unix://{swarm.node('manager1').socket}"
    return await asyncio.to_thread(CliRunner().invoke, main, ["-H", socket, *args])


# What the task reports about itself, then waits to be stopped.
REPORT = (
    'echo "env=$GREETING nofile=$(ulimit -n) groups=$(id -G)";'
    " grep -q ' /scratch tmpfs' /proc/mounts && echo scratch=tmpfs;"
    ' echo "hosts=$(grep -c db.internal /etc/hosts) options=$(grep ^options /etc/resolv.conf)";'
    " touch /probe 2>/dev/null && echo root=writable || echo root=read-only;"
    " echo reported; exec sleep 1000"
)


async def test_container_flags_reach_the_task_and_update_changes_them(swarm, tmp_path):
    (tmp_path / "app.env").write_text("GREETING=hello from a file\n")

    created = await run(
        swarm, "service", "create", "--name", "report", "--constraint", "node.role==worker",
        "--env-file", str(tmp_path / "app.env"), "--ulimit", "nofile=512:1024", "--group", "100",
        "--mount", "type=tmpfs,dst=/scratch", "--host", "db.internal:10.9.9.9", "--dns-option", "ndots:3",
        "--read-only", "--entrypoint", "sh -c", "--init", "busybox", REPORT,
    )  # fmt: skip
    assert created.exit_code == 0, created.output

    async def report() -> str | None:
        shown = (await run(swarm, "service", "logs", "--raw", "report")).output
        return shown if shown.count("reported") == reported_count else None

    reported_count = 1
    first = await eventually(report, "the first task's report", within=60)
    assert "env=hello from a file nofile=512 groups=0 100\nscratch=tmpfs\n" in first
    assert "hosts=1 options=options ndots:3" in first
    assert "root=read-only" in first

    updated = await run(
        swarm, "service", "update", "--ulimit-add", "nofile=256", "--host-rm", "db.internal", "--read-only=false",
        "--mount-rm", "/scratch", "report",
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output

    reported_count = 2
    second = (await eventually(report, "the second task's report", within=60)).split("reported")[1]
    assert "nofile=256" in second
    assert "scratch=tmpfs" not in second
    assert "hosts=0" in second
    assert "root=writable" in second
    assert (await run(swarm, "service", "rm", "report")).exit_code == 0


async def test_a_replicated_job_runs_to_completion_and_is_listed_as_docker_lists_it(swarm):
    created = await run(
        swarm, "service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "3",
        "--max-concurrent", "2", "busybox", "true",
    )  # fmt: skip

    assert created.exit_code == 0, created.output
    lines = created.stdout.splitlines()
    assert lines[1:3] == ["job progress: 0 out of 3 complete", "active tasks: 0 out of 2 tasks"]
    assert lines[-3:] == ["job progress: 3 out of 3 complete", "active tasks: 0 out of 0 tasks", "job complete"]
    listed = await run(swarm, "service", "ls", "--format", "{{.Mode}} {{.Replicas}}", "--filter", "name=batch")
    assert listed.stdout == "replicated job 0/2 (3/3 completed)\n"
    tasks = await run(swarm, "service", "ps", "--format", "{{.DesiredState}} {{.CurrentState}}", "batch")
    assert [line.split()[:2] for line in tasks.stdout.splitlines()] == [["Complete", "Complete"]] * 3

    scaled = await run(swarm, "service", "scale", "batch=1")  # a new run of the job, of one task
    assert scaled.exit_code == 0, scaled.output
    assert scaled.stdout.splitlines()[-3:] == [
        "job progress: 1 out of 1 complete",
        "active tasks: 0 out of 0 tasks",
        "job complete",
    ]
    assert (await run(swarm, "service", "rm", "batch")).exit_code == 0


async def test_a_global_job_completes_once_on_every_node(swarm):
    created = await run(swarm, "service", "create", "--name", "sweep", "--mode", "global-job", "busybox", "true")

    assert created.exit_code == 0, created.output
    assert created.stdout.splitlines()[-2:] == ["job progress: 2 out of 2 complete", "job complete"]
    listed = await run(swarm, "service", "ls", "--format", "{{.Mode}} {{.Replicas}}", "--filter", "name=sweep")
    assert listed.stdout == "global job 0/0 (2/2 completed)\n"
    assert (await run(swarm, "service", "rm", "sweep")).exit_code == 0


async def test_an_update_waits_until_the_tasks_of_the_new_spec_run(swarm):
    """The wait counts only the tasks the node lists as up to date: while a rolling update waits out its delay
    between slots, the old spec's task still running is not counted, and `service update` returns only once
    every replica runs the new spec."""
    created = await run(
        swarm, "service", "create", "--name", "roll", "--replicas", "2", "--update-parallelism", "1",
        "--update-delay", "2s", "--update-monitor", "1s", "busybox", "sleep", "1000",
    )  # fmt: skip
    assert created.exit_code == 0, created.output

    updated = await run(swarm, "service", "update", "--env-add", "GENERATION=2", "roll")

    assert updated.exit_code == 0, updated.output
    lines = updated.stdout.splitlines()
    assert "overall progress: 1 out of 2 tasks" in lines  # the first slot's new task; the second still the old
    assert lines.count("overall progress: 2 out of 2 tasks") == 1
    assert lines[-3:] == [
        "overall progress: 2 out of 2 tasks",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
        "verify: Service roll converged",
    ]
    async with swarm.client(swarm.node("manager1")) as client:
        live = await client.task_list({"service": ["roll"], "desired-state": ["running"]})
    assert [(t["Status"]["State"], t["Spec"]["ContainerSpec"]["Env"]) for t in live] == [
        ("running", ["GENERATION=2"])
    ] * 2
    assert (await run(swarm, "service", "rm", "roll")).exit_code == 0
