"""Job-mode services and engine labels on a real swarm (1 manager, 2 workers on loopback addresses, real
busybox task processes), driven through the API the CLI uses and checked as `docker service ps`, `service ls`
and `node inspect` would show them. worker1 runs with `raftswarm-node --label disk=ssd`.

The flag parsing and join checks of `--label` need no cluster and run first.
"""

from __future__ import annotations

import asyncio

import click
import pytest

from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.manager.caserver import MAX_ENGINE_LABELS_CHARS, JoinRequest
from raftswarm.node.main import _engine_labels
from raftswarm.objects.times import parse_rfc3339
from raftswarm.rpc.channel import RpcError

from test_services import eventually, ids_by_name, spec

HEARTBEAT = 0.5
TRUE = ["true"]


# -- `raftswarm-node --label`, no cluster ----------------------------------------------------------------


def test_node_labels_are_read_as_dockerd_reads_them():
    assert _engine_labels(("disk=ssd", "zone=a=b", "empty=", "disk=ssd")) == {"disk": "ssd", "zone": "a=b", "empty": ""}
    for bad, complaint in [
        ("disk", "bad attribute format"),
        ("=ssd", "bad attribute format"),
        ("com.docker.x=1", "reserved for internal use"),
    ]:
        with pytest.raises(click.BadParameter, match=complaint):
            _engine_labels((bad,))
    with pytest.raises(click.BadParameter, match="conflict labels for disk=hdd and disk=ssd"):
        _engine_labels(("disk=ssd", "disk=hdd"))


def join_params(**extra) -> dict:
    return {"token": "SWMTKN-1-x", "csr": b"csr", "addr": "10.0.0.2:2377", "hostname": "worker1", **extra}


def test_a_join_carries_the_nodes_engine_labels_and_bad_ones_are_refused():
    assert JoinRequest.from_params(join_params()).engine_labels == {}
    assert JoinRequest.from_params(join_params(labels={"disk": "ssd"})).engine_labels == {"disk": "ssd"}
    for bad in ({"disk": 1}, ["disk=ssd"], {"": "x"}, {"disk": "s\nsd"}, {"k": "v" * MAX_ENGINE_LABELS_CHARS}):
        with pytest.raises(RpcError, match="labels must map printable strings"):
            JoinRequest.from_params(join_params(labels=bad))


# -- on a real swarm -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        SwarmCluster.up(
            "jobs", managers=1, workers=2, base_dir=base, network="loopback", heartbeat_period=HEARTBEAT,
            node_args={"worker1": ["--label", "disk=ssd", "--label", "rack=r1"]},
        )
    )
    yield cluster
    cluster.down()


def job_spec(name: str, mode: dict, args: list[str] | None = None) -> dict:
    return {**spec(name, args or TRUE), "Mode": mode}


async def tasks_of(client, service: str) -> list[dict]:
    return await client.task_list({"service": [service]})


async def completed(client, service: str, count: int, iteration: int = 0) -> list[dict] | None:
    """The service's tasks of `iteration` once exactly `count` of them completed and none is left to run."""
    tasks = [t for t in await tasks_of(client, service) if (t.get("JobIteration") or {}).get("Index", 0) == iteration]
    done = [t for t in tasks if t["Status"]["State"] == "complete"]
    unfinished = [t for t in tasks if t["DesiredState"] == "complete" and t["Status"]["State"] != "complete"]
    return done if len(done) == count and not unfinished else None


async def status_of(client, service: str) -> dict:
    (listed,) = await client.service_list({"name": [service]}, status=True)
    return listed["ServiceStatus"]


@pytest.mark.slow
async def test_a_replicated_job_completes_its_total_at_most_max_concurrent_at_once(swarm):
    async with swarm.client(swarm.node("manager1")) as client:
        await client.service_create(job_spec("batch", {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}))
        done = await eventually(lambda: completed(client, "batch", 3), "3 completed tasks")
        assert sorted(t["Slot"] for t in done) == [0, 1, 2]
        assert {t["DesiredState"] for t in done} == {"complete"}  # `docker service ps`: Complete / Complete
        assert all(t["Status"]["ContainerStatus"]["ExitCode"] == 0 for t in done)
        # At most two ran at once: the third was made only after one of the first two completed.
        first_two = sorted(done, key=lambda t: t["CreatedAt"])[:2]
        third = sorted(done, key=lambda t: t["CreatedAt"])[2]
        assert parse_rfc3339(third["CreatedAt"]) >= min(parse_rfc3339(t["Status"]["Timestamp"]) for t in first_two)
        # `docker service ls`: replicated job, 0/2 (3/3 completed)
        assert await status_of(client, "batch") == {"RunningTasks": 0, "DesiredTasks": 2, "CompletedTasks": 3}
        service = await client.service_inspect("batch")
        assert service["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}
        assert service["JobStatus"]["JobIteration"] == {}
        await asyncio.sleep(3 * HEARTBEAT)
        assert len(await tasks_of(client, "batch")) == 3  # nothing restarts a completed task

        # An update (here a forced one) runs the job again as a new iteration; the old tasks stay as they were.
        forced = {**service["Spec"], "TaskTemplate": {**service["Spec"]["TaskTemplate"], "ForceUpdate": 1}}
        await client.service_update(service["ID"], service["Version"]["Index"], forced)
        again = await eventually(lambda: completed(client, "batch", 3, iteration=1), "3 completed tasks of iteration 1")
        assert {t["JobIteration"]["Index"] for t in again} == {1}
        assert (await client.service_inspect("batch"))["JobStatus"]["JobIteration"] == {"Index": 1}
        assert await completed(client, "batch", 3, iteration=0) is not None
        await client.service_remove("batch")


@pytest.mark.slow
async def test_a_global_job_completes_once_on_every_node(swarm):
    async with swarm.client(swarm.node("manager1")) as client:
        await client.service_create(job_spec("everywhere", {"GlobalJob": {}}))
        done = await eventually(lambda: completed(client, "everywhere", 3), "a completed task on each node")
        assert sorted(t["NodeID"] for t in done) == sorted((await ids_by_name(swarm)).values())
        # `docker service ls`: global job, 0/0 (3/3 completed)
        assert await status_of(client, "everywhere") == {"RunningTasks": 0, "DesiredTasks": 0, "CompletedTasks": 3}
        await client.service_remove("everywhere")


@pytest.mark.slow
async def test_engine_labels_from_the_node_flag_place_tasks(swarm):
    names = await ids_by_name(swarm)
    async with swarm.client(swarm.node("manager1")) as client:
        engine = (await client.node_inspect(names["worker1"]))["Description"]["Engine"]
        assert engine["Labels"] == {"disk": "ssd", "rack": "r1"}  # `docker node inspect`
        assert "Labels" not in (await client.node_inspect(names["worker2"]))["Description"]["Engine"]
        web = spec("on-ssd", replicas=3, Placement={"Constraints": ["engine.labels.disk==ssd"]})
        await client.service_create(web)

        async def running_on() -> list[str] | None:
            tasks = [t for t in await tasks_of(client, "on-ssd") if t["Status"]["State"] == "running"]
            return [t["NodeID"] for t in tasks] if len(tasks) == 3 else None

        assert set(await eventually(running_on, "3 running replicas")) == {names["worker1"]}
        await client.service_remove("on-ssd")
    async with swarm.client(swarm.node("worker1")) as client:
        assert (await client.info())["Labels"] == ["disk=ssd", "rack=r1"]  # `docker info` on that node


@pytest.mark.slow
async def test_a_node_restarted_with_other_labels_shows_them_and_constraints_follow(swarm):
    """dockerd reads --label at every start; so does raftswarm-node, and its heartbeats tell the swarm."""
    names = await ids_by_name(swarm)
    worker = swarm.node("worker1")
    original = list(worker.argv)

    async def restart_with(labels: list[str]) -> None:
        swarm.stop(worker)
        worker.argv = [arg for arg in original if arg not in ("--label", "disk=ssd", "rack=r1")]
        worker.argv += [word for label in labels for word in ("--label", label)]
        swarm.start(worker)
        await swarm.wait_ready(worker)

    async with swarm.client(swarm.node("manager1")) as client:

        async def labels_shown(expected: dict) -> bool:
            engine = (await client.node_inspect(names["worker1"]))["Description"]["Engine"]
            return engine.get("Labels", {}) == expected and "Plugins" in engine

        try:
            await restart_with(["disk=hdd"])
            await eventually(lambda: labels_shown({"disk": "hdd"}), "worker1's new engine labels")
            web = spec("on-hdd", replicas=2, Placement={"Constraints": ["engine.labels.disk==hdd"]})
            await client.service_create(web)

            async def running_on() -> set[str] | None:
                tasks = [t for t in await tasks_of(client, "on-hdd") if t["Status"]["State"] == "running"]
                return {t["NodeID"] for t in tasks} if len(tasks) == 2 else None

            assert await eventually(running_on, "2 running replicas") == {names["worker1"]}
            await client.service_remove("on-hdd")
        finally:
            worker.argv = original
            swarm.stop(worker)
            swarm.start(worker)
            await swarm.wait_ready(worker)
        await eventually(lambda: labels_shown({"disk": "ssd", "rack": "r1"}), "worker1's labels back")
