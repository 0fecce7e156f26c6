"""Services on a real swarm: node processes (3 managers, 2 workers on loopback addresses) running real task
processes, driven through the API the CLI uses, checked as `docker service ps` / `inspect` would show them.

One cluster serves the module; each test makes services and secrets of its own and removes them.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.ca.certificates import client_ssl_context
from raftswarm.rpc.channel import RpcClient, RpcError
from raftswarm.node.state_dir import StateDir
from raftswarm.localcluster.swarm import EXEC_ROOTS, SwarmCluster

pytestmark = pytest.mark.slow

HEARTBEAT = 0.5
SECOND = 1_000_000_000
SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        SwarmCluster.up(
            "svc", managers=3, workers=2, base_dir=base, network="loopback", heartbeat_period=HEARTBEAT,
            samples=("busybox", "busybox:2"),
        )
    )
    yield cluster
    cluster.down()


def api(swarm: SwarmCluster, name: str = "manager1") -> ApiClient:
    return swarm.client(swarm.node(name))


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def spec(name: str, args: list[str] | None = None, replicas: int | None = 1, **template: Any) -> dict:
    mode = {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}}
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": args or SLEEP}, **template},
        "Mode": mode,
    }


def spec_with_secret(name: str, secret: dict, file: str, mode: int, replicas: int = 1, on_node: str | None = None) -> dict:
    """A service of `replicas` sleeping tasks that reference `secret` as /run/secrets/<file>, optionally
    pinned to one node."""
    reference = {"SecretID": secret["ID"], "SecretName": secret["Name"], "File": {"Name": file, "UID": "0", "GID": "0", "Mode": mode}}
    template: dict[str, Any] = {"ContainerSpec": {"Image": "busybox", "Args": SLEEP, "Secrets": [reference]}}
    if on_node:
        template["Placement"] = {"Constraints": [f"node.id=={on_node}"]}
    return {**spec(name, replicas=replicas), "TaskTemplate": template}


async def create_secret(client: ApiClient, name: str, data: bytes) -> dict:
    created = await client.secret_create({"Name": name, "Data": base64.b64encode(data).decode()})
    return {"ID": created["ID"], "Name": name}


async def agent_secrets(swarm: SwarmCluster) -> dict[str, dict[str, str]]:
    """Node name -> the secrets its agent holds (ID -> name), from each node's /raftswarm/agent."""
    held = {}
    for node in swarm.nodes:
        async with swarm.client(node) as node_client:
            held[node.name] = (await node_client.request("GET", "/raftswarm/agent"))["secrets"]
    return held


async def live_tasks(client: ApiClient, service: str) -> list[dict]:
    return await client.task_list({"service": [service], "desired-state": ["running"]})


async def converged(client: ApiClient, service: str, count: int) -> list[dict] | None:
    tasks = await live_tasks(client, service)
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    return running if len(running) == count == len(tasks) else None


async def ids_by_name(swarm: SwarmCluster) -> dict[str, str]:
    """Node name in the local cluster (manager1, worker2, ...) -> node ID, from each node's own /info."""
    names = {}
    for node in swarm.nodes:
        async with swarm.client(node) as client:
            names[node.name] = (await client.info())["Swarm"]["NodeID"]
    return names


async def test_a_replicated_service_runs_its_replicas_spread_over_the_nodes_and_scales(swarm):
    async with api(swarm) as client:
        created = await client.service_create(spec("web", replicas=3))
        running = await eventually(lambda: converged(client, "web", 3), "3 running replicas")
        assert sorted(t["Slot"] for t in running) == [1, 2, 3]
        assert len({t["NodeID"] for t in running}) == 3  # fewest tasks of the service first
        assert all(t["Status"]["ContainerStatus"]["PID"] > 0 for t in running)

        service = await client.service_inspect("web")
        assert service["ID"] == created["ID"] and service["Spec"]["Mode"] == {"Replicated": {"Replicas": 3}}
        await client.service_update(service["ID"], service["Version"]["Index"], {**service["Spec"], "Mode": {"Replicated": {"Replicas": 5}}})
        await eventually(lambda: converged(client, "web", 5), "5 running replicas")
        service = await client.service_inspect("web")
        await client.service_update(service["ID"], service["Version"]["Index"], {**service["Spec"], "Mode": {"Replicated": {"Replicas": 2}}})
        await eventually(lambda: converged(client, "web", 2), "2 running replicas")

        await client.service_remove("web")
        await eventually(lambda: _no_tasks(client, created["ID"]), "the removed service's tasks to go")


async def _no_tasks(client: ApiClient, service_id: str) -> bool:
    return not [t for t in await client.task_list() if t["ServiceID"] == service_id]


async def test_a_global_service_runs_one_task_on_every_node_and_leaves_a_drained_one(swarm):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        await client.service_create(spec("everywhere", replicas=None))
        running = await eventually(lambda: converged(client, "everywhere", 5), "a task on each of the 5 nodes")
        assert sorted(t["NodeID"] for t in running) == sorted(ids.values())

        node = await client.node_inspect(ids["worker2"])
        await client.node_update(node["ID"], node["Version"]["Index"], {**node["Spec"], "Availability": "drain"})
        try:
            running = await eventually(lambda: converged(client, "everywhere", 4), "the drained node's task to stop")
            assert ids["worker2"] not in {t["NodeID"] for t in running}
        finally:
            node = await client.node_inspect(ids["worker2"])
            await client.node_update(node["ID"], node["Version"]["Index"], {**node["Spec"], "Availability": "active"})
        await eventually(lambda: converged(client, "everywhere", 5), "a task again on the reactivated node")
        await client.service_remove("everywhere")


async def test_draining_a_node_moves_its_replicas_to_other_nodes(swarm):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        await client.service_create(spec("movable", replicas=5))
        await eventually(lambda: converged(client, "movable", 5), "5 running replicas")
        node = await client.node_inspect(ids["worker1"])
        await client.node_update(node["ID"], node["Version"]["Index"], {**node["Spec"], "Availability": "drain"})
        try:
            running = await eventually(
                lambda: _converged_off(client, "movable", 5, ids["worker1"]), "the replicas to leave the drained node"
            )
            assert len(running) == 5
        finally:
            node = await client.node_inspect(ids["worker1"])
            await client.node_update(node["ID"], node["Version"]["Index"], {**node["Spec"], "Availability": "active"})
        await client.service_remove("movable")


async def _converged_off(client: ApiClient, service: str, count: int, node_id: str) -> list[dict] | None:
    running = await converged(client, service, count)
    return running if running and node_id not in {t["NodeID"] for t in running} else None


async def test_a_constraint_no_node_meets_leaves_the_task_pending_and_says_why(swarm):
    async with api(swarm) as client:
        await client.service_create(spec("nowhere", Placement={"Constraints": ["node.labels.zone==mars"]}))

        async def pending():
            tasks = await live_tasks(client, "nowhere")
            return tasks and tasks[0]["Status"]["State"] == "pending" and tasks[0]

        task = await eventually(pending, "a pending task")
        assert task["Status"]["Err"].startswith("no suitable node (")
        assert task["Status"]["Err"] == "no suitable node (scheduling constraints not satisfied on 5 nodes)"
        await client.service_remove("nowhere")


async def test_a_failing_update_rolls_back_automatically_to_the_previous_spec(swarm):
    async with api(swarm) as client:
        await client.service_create(
            {
                **spec("flaky", replicas=2),
                "UpdateConfig": {"Parallelism": 1, "FailureAction": "rollback", "Monitor": 2 * SECOND},
                "RollbackConfig": {"Parallelism": 0, "Monitor": 1 * SECOND},
            }
        )
        await eventually(lambda: converged(client, "flaky", 2), "2 running replicas")
        service = await client.service_inspect("flaky")
        broken = {**service["Spec"], "TaskTemplate": {**service["Spec"]["TaskTemplate"], "ContainerSpec": {"Image": "busybox:2", "Args": ["sh", "-c", "exit 3"]}}}
        await client.service_update(service["ID"], service["Version"]["Index"], broken)

        async def rolled_back():
            current = await client.service_inspect("flaky")
            return (current.get("UpdateStatus") or {}).get("State") == "rollback_completed" and current

        service = await eventually(rolled_back, "the automatic rollback to complete", within=60)
        assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox"
        assert service["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:2"
        running = await eventually(lambda: converged(client, "flaky", 2), "2 replicas running the old spec")
        assert all(t["Spec"]["ContainerSpec"]["Image"] == "busybox" for t in running)
        failed = [t for t in await client.task_list({"service": ["flaky"]}) if t["Status"]["State"] == "failed"]
        assert failed and failed[0]["Status"]["Err"] == "task: non-zero exit (3)"
        await client.service_remove("flaky")


async def test_scaling_a_service_in_the_middle_of_a_rolling_update_does_not_abandon_the_update(swarm):
    async with api(swarm) as client:
        await client.service_create({**spec("rolling", replicas=2), "UpdateConfig": {"Parallelism": 1, "Delay": 3 * SECOND}})
        await eventually(lambda: converged(client, "rolling", 2), "2 running replicas")
        service = await client.service_inspect("rolling")
        newer = {**service["Spec"], "TaskTemplate": {**service["Spec"]["TaskTemplate"], "ContainerSpec": {"Image": "busybox:2", "Args": SLEEP}}}
        await client.service_update(service["ID"], service["Version"]["Index"], newer)
        service = await client.service_inspect("rolling")  # the first slot updates; the second waits 3 s
        await client.service_update(service["ID"], service["Version"]["Index"], {**newer, "Mode": {"Replicated": {"Replicas": 3}}})

        async def all_new():
            running = await converged(client, "rolling", 3)
            return running if running and all(t["Spec"]["ContainerSpec"]["Image"] == "busybox:2" for t in running) else None

        await eventually(all_new, "3 replicas, all of the new spec", within=60)

        async def completed():
            return (await client.service_inspect("rolling"))["UpdateStatus"]["State"] == "completed"

        await eventually(completed, "the update to complete once its monitor window has passed")
        await client.service_remove("rolling")


@pytest.mark.security
async def test_a_secret_reaches_only_the_node_running_a_task_that_uses_it(swarm):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        secret = await create_secret(client, "db-password", b"hunter2")
        await client.service_create(spec_with_secret("uses-secret", secret, "db", 0o400, on_node=ids["worker1"]))
        await eventually(lambda: converged(client, "uses-secret", 1), "the task using the secret to run")

        held = await agent_secrets(swarm)
        assert held["worker1"] == {secret["ID"]: "db-password"}
        assert all(not secrets for name, secrets in held.items() if name != "worker1")

        listed = await client.secret_inspect("db-password")
        assert "Data" not in listed["Spec"] and "_Data" not in listed

        with pytest.raises(ApiError) as refused:
            await client.secret_remove("db-password")
        assert refused.value.status == 400 and "in use by the following service: uses-secret" in str(refused.value)

        await client.service_remove("uses-secret")

        async def dropped():
            return not (await agent_secrets(swarm))["worker1"]

        await eventually(dropped, "the secret to leave worker1 with the last task using it")
        await client.secret_remove("db-password")


async def test_oversized_and_empty_secrets_are_refused_and_nothing_is_created(swarm):
    async with api(swarm) as client:
        before = await client.secret_list()
        for size in (0, 500 * 1024, 501 * 1024):
            with pytest.raises(ApiError) as refused:
                await client.secret_create({"Name": f"big{size}", "Data": base64.b64encode(b"x" * size).decode()})
            assert refused.value.status == 400
            assert "500" in str(refused.value)
        assert await client.secret_list() == before
        # Docker's limit is exclusive: under 500 KiB.
        fits = await client.secret_create({"Name": "just-fits", "Data": base64.b64encode(b"x" * (500 * 1024 - 1)).decode()})
        await client.secret_remove(fits["ID"])


async def test_an_update_at_a_stale_version_is_refused_not_merged(swarm):
    async with api(swarm) as client:
        await client.service_create(spec("versioned"))
        service = await client.service_inspect("versioned")
        stale = service["Version"]["Index"]
        await client.service_update(service["ID"], stale, {**service["Spec"], "Labels": {"first": "yes"}})
        with pytest.raises(ApiError) as refused:
            await client.service_update(service["ID"], stale, {**service["Spec"], "Labels": {"second": "yes"}})
        assert refused.value.status == 409 and "out of sequence" in str(refused.value)
        assert (await client.service_inspect("versioned"))["Spec"]["Labels"] == {"first": "yes"}
        await client.service_remove("versioned")


async def test_invalid_service_specs_are_refused_and_nothing_is_created(swarm):
    async with api(swarm) as client:
        before = await client.service_list()
        for bad in (
            {"Name": "x"},
            spec("bad name!"),
            spec("neg", replicas=-1),
            spec("cond", RestartPolicy={"Condition": "sometimes"}),
            spec("cons", Placement={"Constraints": ["node.labels.zone=a"]}),
        ):
            with pytest.raises(ApiError) as refused:
                await client.service_create(bad)
            assert refused.value.status == 400
        with pytest.raises(ApiError) as duplicate:
            await client.service_create(spec("dup"))
            await client.service_create(spec("dup"))
        # SwarmKit's words, as dockerd passes them on (less its gRPC status)
        assert duplicate.value.status == 409
        assert str(duplicate.value) == "name conflicts with an existing object: service dup already exists"
        after = {s["Spec"]["Name"] for s in await client.service_list()}
        assert after == {s["Spec"]["Name"] for s in before} | {"dup"}
        await client.service_remove("dup")


async def test_a_spec_read_as_docker_shows_it_and_sent_back_scaled_restarts_no_task(swarm):
    """`docker service scale` sends back the spec it read, with the fields dockerd always shows (Runtime,
    Isolation, MaxAttempts): the service scales, and its running task is neither replaced nor made stale."""
    async with api(swarm) as client:
        await client.service_create(spec("roundtrip", RestartPolicy={"Condition": "on-failure"}))
        (first,) = await eventually(lambda: converged(client, "roundtrip", 1), "1 running replica")
        service = await client.service_inspect("roundtrip")
        template = service["Spec"]["TaskTemplate"]
        assert template["Runtime"] == "container" and template["ContainerSpec"]["Isolation"] == "default"
        assert template["RestartPolicy"]["MaxAttempts"] == 0
        assert first["Status"]["ContainerStatus"]["ExitCode"] == 0  # as Docker's while the container runs
        stored = (await client.get("tasks", first["ID"]))["data"]  # as its agent reported it, with SwarmKit's copies
        assert stored["Status"]["ContainerStatus"]["ExitCode"] == 0 and stored["ServiceAnnotations"]["Name"] == "roundtrip"
        assert "ServiceAnnotations" not in first and "Endpoint" not in first

        await client.service_update(service["ID"], service["Version"]["Index"], {**service["Spec"], "Mode": {"Replicated": {"Replicas": 2}}})
        running = await eventually(lambda: converged(client, "roundtrip", 2), "2 running replicas")
        assert first["ID"] in {t["ID"] for t in running}
        assert "UpdateStatus" not in await client.service_inspect("roundtrip")
        current = await client.task_list({"service": ["roundtrip"], "_up-to-date": ["true"]})
        assert first["ID"] in {t["ID"] for t in current}

        inspected = await client.request("GET", f"/services/{service['ID']}", params={"insertDefaults": "true"})
        assert inspected["Spec"]["RollbackConfig"]["Monitor"] == 5 * SECOND
        assert inspected["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"] == 5 * SECOND
        await client.service_remove("roundtrip")


async def _leader_rpc(swarm: SwarmCluster, as_node: str) -> RpcClient:
    """An RPC connection to the leader with `as_node`'s own certificate."""
    root, certificate = StateDir(swarm.node(as_node).state_dir).load_certificates()
    context = client_ssl_context(root, certificate)
    for manager in swarm.managers:
        host, port = manager.addr.rsplit(":", 1)
        client = await RpcClient.connect(host, int(port), context, server_hostname="swarm-manager")
        try:
            await client.call("dispatcher.assignments", {"timeout": 0})
            return client
        except RpcError as exc:
            await client.close()
            if exc.code != "not_leader":
                raise
    raise AssertionError("no manager answered as leader")


@pytest.mark.security
async def test_a_worker_receives_only_its_own_tasks_and_cannot_report_on_other_nodes_tasks(swarm):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        secret = await create_secret(client, "w2-only", b"not for worker1")
        await client.service_create(spec_with_secret("pinned", secret, "s", 0o444, replicas=2, on_node=ids["worker2"]))
        running = await eventually(lambda: converged(client, "pinned", 2), "2 replicas on worker2")
        rpc = await _leader_rpc(swarm, "worker1")
        try:
            answer = await rpc.call("dispatcher.assignments", {"timeout": 0})
            assert answer["type"] == "complete"
            assert {t["NodeID"] for t in answer["tasks"]} <= {ids["worker1"]}
            assert all(t["ServiceID"] != running[0]["ServiceID"] for t in answer["tasks"])
            assert answer["secrets"] == []  # worker1 runs nothing that references the secret

            forged = await rpc.call(
                "dispatcher.update_task_status",
                {"updates": [{"ID": running[0]["ID"], "Status": {"State": "failed", "Err": "forged"}}]},
            )
            assert forged == {running[0]["ID"]: "not this node's task"}
            with pytest.raises(RpcError) as refused:
                await rpc.call("dispatcher.update_task_status", {"updates": [{"ID": running[0]["ID"], "Status": {"State": "pending"}}]})
            assert refused.value.code == "invalid"
        finally:
            await rpc.close()
        task = (await client.task_list({"id": [running[0]["ID"]]}))[0]
        assert task["Status"]["State"] == "running" and "Err" not in task["Status"]
        await client.service_remove("pinned")
        await eventually(lambda: _no_tasks(client, running[0]["ServiceID"]), "the service's tasks to go")
        await client.secret_remove("w2-only")


async def test_the_swarms_dispatcher_heartbeat_setting_reaches_every_node_and_bad_values_are_refused(swarm):
    async with api(swarm) as client:
        current = await client.swarm_inspect()
        spec_ = current["Spec"]
        with pytest.raises(ApiError) as refused:
            await client.swarm_update(current["Version"]["Index"], {**spec_, "Dispatcher": {"HeartbeatPeriod": 1000}})
        assert refused.value.status == 400 and "HeartbeatPeriod" in str(refused.value)
        await client.swarm_update(current["Version"]["Index"], {**spec_, "Dispatcher": {"HeartbeatPeriod": 300_000_000}})
        rpc = await _leader_rpc(swarm, "worker1")
        try:
            assert (await rpc.call("dispatcher.heartbeat", {}))["period"] == 0.3
            current = await client.swarm_inspect()
            await client.swarm_update(current["Version"]["Index"], {**spec_, "Dispatcher": {"HeartbeatPeriod": 5 * SECOND}})
            assert (await rpc.call("dispatcher.heartbeat", {}))["period"] == HEARTBEAT  # back to the nodes' flag
        finally:
            await rpc.close()


@pytest.mark.security
async def test_no_file_of_any_node_holds_a_secret_in_plaintext(swarm):
    marker = b"plaintext-marker-" + base64.b16encode(os.urandom(8))
    async with api(swarm) as client:
        secret = await create_secret(client, "needle", marker)
        await client.service_create(spec_with_secret("holder", secret, "needle", 0o444, replicas=5))
        await eventually(lambda: converged(client, "holder", 5), "5 replicas holding the secret")
        held = await agent_secrets(swarm)
        assert sum(secret["ID"] in secrets for secrets in held.values()) >= 2  # it did travel to the nodes
        memory = tmpfs_mounts()
        in_memory = []
        for path in swarm.directory.rglob("*"):
            if path.is_file() and not path.is_socket() and marker in path.read_bytes():
                # Only the tasks' own secrets mounts may hold it, and those are memory (a tmpfs of its own at the
                # secrets directory, not the nodes' execution roots'), never a disk.
                assert path.parent in memory, f"{path} holds the secret outside a secrets tmpfs"
                assert path.name == "needle" and path.parent.name == "secrets", f"{path} holds the secret"
                in_memory.append(path)
        assert len(in_memory) == 5, in_memory  # one tmpfs per task
        await client.service_remove("holder")
        await client.secret_remove("needle")
        await eventually(lambda: _no_tasks_named(client, "holder"), "the holder tasks to be gone")

        async def unmounted() -> bool:
            # The agents stop the containers after the tasks are gone from the store (a `sleep` as PID 1 takes
            # its 10 s grace period), and unmount each secrets tmpfs as they release them.
            exec_roots = swarm.directory / EXEC_ROOTS  # the nodes' execution roots: a tmpfs for the cluster's life
            return not [m for m in tmpfs_mounts() if m.is_relative_to(swarm.directory) and m != exec_roots]

        await eventually(unmounted, "the secrets tmpfs mounts of the removed tasks to go", within=60)


def tmpfs_mounts() -> list[Path]:
    """Mount points of tmpfs file systems, as this process sees them."""
    mounts = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if fields[fields.index("-") + 1] == "tmpfs":
                mounts.append(Path(fields[4].replace("\\040", " ")))
    return mounts


async def _no_tasks_named(client: ApiClient, service: str) -> bool:
    return not [t for t in await client.task_list() if t.get("ServiceAnnotations", {}).get("Name") == service]


async def test_each_node_pulls_a_tasks_image_from_the_clusters_registry_before_it_starts(swarm):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        await client.service_create(spec("pulled", replicas=2, Placement={"Constraints": ["node.role==worker"]}))
        tasks = await eventually(lambda: converged(client, "pulled", 2), "2 replicas running")
        await client.service_remove("pulled")
    for name in {next(n for n, i in ids.items() if i == t["NodeID"]) for t in tasks}:
        async with swarm.client(swarm.node(name)) as node_client:
            images = await node_client.request("GET", "/images/json")
        assert any("busybox:latest" in image["RepoTags"] for image in images), (name, images)


async def test_a_task_whose_image_cannot_be_had_is_rejected_in_dockers_words_and_retried(swarm):
    async with api(swarm) as client:
        missing = spec("no-image", RestartPolicy={"Delay": SECOND // 10})
        missing["TaskTemplate"]["ContainerSpec"]["Image"] = "busybox:404"
        await client.service_create(missing)

        async def rejected_twice():
            tasks = await client.task_list({"service": ["no-image"]})
            rejected = [t for t in tasks if t["Status"]["State"] == "rejected"]
            return rejected if len(rejected) >= 2 else None

        rejected = await eventually(rejected_twice, "the task rejected, then retried and rejected again")
        assert {t["Status"]["Err"] for t in rejected} == {"No such image: busybox:404"}
        await client.service_remove("no-image")


async def test_the_tasks_of_a_killed_worker_are_started_on_other_nodes(swarm):
    """Last in the module: it kills worker2 (and starts it again afterwards)."""
    ids = await ids_by_name(swarm)
    worker = swarm.node("worker2")
    async with api(swarm) as client:
        await client.service_create(spec("survivor", replicas=5))
        running = await eventually(lambda: converged(client, "survivor", 5), "5 running replicas")
        assert ids["worker2"] in {t["NodeID"] for t in running}
        swarm.kill(worker)
        try:
            running = await eventually(
                lambda: _converged_off(client, "survivor", 5, ids["worker2"]), "the lost replicas to run elsewhere"
            )
            node = await client.node_inspect(ids["worker2"])
            assert node["Status"]["State"] == "down"
            lost = [t for t in await client.task_list({"service": ["survivor"], "node": [ids["worker2"]]})]
            assert lost and all(t["DesiredState"] == "shutdown" for t in lost)
        finally:
            await swarm.restart(worker)
        await client.service_remove("survivor")
