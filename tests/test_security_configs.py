"""Configs are not secret, but a swarm keeps and sends them as secrets (DESIGN.md, security property 5, applied to
configs as Docker applies it): on a real swarm (1 manager, 2 workers, real node processes) a config reaches only
the nodes running a task that uses it, leaves them with the last such task, lives in memory there (never in a file
on a worker's disk), and is visible inside the tasks that use it and nowhere else: not in another task on the same
node, by any path. A worker asking the dispatcher with its own certificate gets no config of another node's task.

Tasks are OCI containers: every test here needs root with CAP_SYS_ADMIN, crun and conmon.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_agent import _files_on_disk, _lines, _mount_points, _none_left, _tmpfs_mounts_under, on_node, processes_with
from test_services import _leader_rpc, converged, eventually, ids_by_name

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.runtime.containers import unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"),
]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    # --init: the tasks' `sleep` stops at SIGTERM, so removals do not wait out grace periods.
    cluster = asyncio.run(
        SwarmCluster.up("cfg", managers=1, workers=2, base_dir=base, network="loopback", heartbeat_period=0.5, init=True)
    )
    yield cluster
    cluster.down()


@pytest.fixture
def marker() -> str:
    """An environment entry that marks the processes of one test's tasks."""
    return f"RAFTSWARM_CONFIG_TEST={uuid.uuid4().hex}"


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


async def create_config(client: ApiClient, name: str, data: bytes) -> dict[str, Any]:
    created = await client.config_create({"Name": name, "Data": base64.b64encode(data).decode()})
    return {"ID": created["ID"], "Name": name}


def reference(config: dict[str, Any], target: str, mode: int = 0o444) -> dict[str, Any]:
    return {"ConfigID": config["ID"], "ConfigName": config["Name"], "File": {"Name": target, "UID": "0", "GID": "0", "Mode": mode}}


async def agent_configs(swarm: SwarmCluster) -> dict[str, dict[str, str]]:
    """Node name -> the configs its agent holds (ID -> name), from each node's /raftswarm/agent."""
    held = {}
    for node in swarm.nodes:
        async with swarm.client(node) as node_client:
            held[node.name] = (await node_client.request("GET", "/raftswarm/agent"))["configs"]
    return held


async def _unused(client: ApiClient, config_id: str) -> bool:
    return not [s for s in await client.service_list() if config_id in str(s["Spec"])]


async def test_a_config_reaches_only_the_node_running_a_task_that_uses_it_and_leaves_with_the_task(swarm, marker):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        config = await create_config(client, "w1-only.conf", b"for worker1's task")
        made = on_node(ids["worker1"], "uses-config", ["sleep", "1000"], marker, Configs=[reference(config, "/etc/app.conf")])
        await client.service_create(made)
        await eventually(lambda: converged(client, "uses-config", 1), "the task using the config to run")

        held = await agent_configs(swarm)
        assert held["worker1"] == {config["ID"]: "w1-only.conf"}
        assert all(not configs for name, configs in held.items() if name != "worker1")

        rpc = await _leader_rpc(swarm, "worker2")  # worker2 asks with its own certificate: nothing of worker1's
        try:
            answer = await rpc.call("dispatcher.assignments", {"timeout": 0})
            assert answer["type"] == "complete" and answer["configs"] == [] and answer["tasks"] == []
        finally:
            await rpc.close()

        await client.service_remove("uses-config")

        async def dropped() -> bool:
            return not (await agent_configs(swarm))["worker1"]

        await eventually(dropped, "the config to leave worker1 with the last task using it")
        await eventually(lambda: _none_left(marker), "the task's processes to end")
        await client.config_remove(config["ID"])


async def test_a_config_is_visible_only_inside_the_task_that_uses_it_and_never_on_the_workers_disk(swarm, marker):
    ids = await ids_by_name(swarm)
    worker = swarm.node("worker2")
    value = f"c0nf1g-{uuid.uuid4().hex}"
    async with api(swarm) as client:
        config = await create_config(client, "needle.conf", value.encode())
        # Its digest, not the config: a task's output goes to its log file on the node's disk, as Docker's does.
        show = "sha256sum /etc/needle/app.conf | cut -d' ' -f1; stat -c '%a' /etc/needle/app.conf; exec sleep 1000"
        made = on_node(ids["worker2"], "reader", ["sh", "-c", show], marker, Configs=[reference(config, "/etc/needle/app.conf", 0o440)])
        await client.service_create(made)
        (task,) = await eventually(lambda: converged(client, "reader", 1), "the reader to run")
        assert await eventually(lambda: _lines(client, task["ID"], 2), "the reader's output") == [
            hashlib.sha256(value.encode()).hexdigest(),
            "440",
        ]
        init = task["Status"]["ContainerStatus"]["PID"]
        assert "/etc/needle/app.conf" in _mount_points(init)
        runtime_root = swarm.exec_root(worker)  # the worker's containers' bundles
        (held,) = _tmpfs_mounts_under(runtime_root)  # where the worker keeps the reader's configs: memory

        # Another task on the same node, which does not use the config, cannot find it: not at the target, not
        # through the reader's root (its PID is not in the snoop's PID namespace), not at the worker's host path.
        snoop = (
            "cat /etc/needle/app.conf 2>/dev/null; echo own=$?; "
            f"cat /proc/{init}/root/etc/needle/app.conf 2>/dev/null; echo other=$?; "
            f"cat {held}/0 2>/dev/null; echo host=$?; exec sleep 1000"
        )
        await client.service_create(on_node(ids["worker2"], "snoop", ["sh", "-c", snoop], marker))
        (other,) = await eventually(lambda: converged(client, "snoop", 1), "the snoop to run")
        assert await eventually(lambda: _lines(client, other["ID"], 3), "the snoop's output") == ["own=1", "other=1", "host=1"]
        for pid in processes_with(marker):  # no task process carries it in its command line or environment
            for view in ("cmdline", "environ"):
                assert value.encode() not in Path(f"/proc/{pid}/{view}").read_bytes()

        # On the worker, only in the task's tmpfs (memory): in no file of its state directory, log or execution
        # root, and in no file of any node's on disk (the managers' Raft log is encrypted).
        assert (held / "0").read_bytes() == value.encode()
        for root in (worker.state_dir, worker.log_path.parent, runtime_root, swarm.directory):
            for path in _files_on_disk(root):
                if path.is_socket():
                    continue
                assert value.encode() not in path.read_bytes(), path
        assert not os.path.lexists("/etc/needle")  # nothing reached the host's own /etc

        await client.service_remove("reader")
        await client.service_remove("snoop")
        await eventually(lambda: _none_left(marker, init), "the tasks' processes and the reader's init to end")

        async def unmounted() -> bool:
            return not _tmpfs_mounts_under(runtime_root)

        await eventually(unmounted, "the reader's configs tmpfs to be unmounted", within=60)
        await eventually(lambda: _unused(client, config["ID"]), "the config to be unused")
        await client.config_remove(config["ID"])


async def test_a_config_in_use_cannot_be_removed_and_one_that_does_not_exist_cannot_be_used(swarm, marker):
    ids = await ids_by_name(swarm)
    async with api(swarm) as client:
        config = await create_config(client, "pinned.conf", b"1")
        made = on_node(ids["worker1"], "pinned", ["sleep", "1000"], marker, Configs=[reference(config, "/pinned.conf")])
        await client.service_create(made)
        with pytest.raises(ApiError) as refused:
            await client.config_remove("pinned.conf")
        assert refused.value.status == 400
        assert str(refused.value) == "config 'pinned.conf' is in use by the following service: pinned"
        gone = {**reference(config, "/gone.conf"), "ConfigID": "0" * 25, "ConfigName": "gone.conf"}
        with pytest.raises(ApiError) as refused:
            await client.service_create(on_node(ids["worker1"], "ghost", ["sleep", "1000"], marker, Configs=[gone]))
        assert refused.value.status == 400 and str(refused.value) == "config not found: gone.conf"
        await client.service_remove("pinned")
        await eventually(lambda: _none_left(marker), "the task's processes to end")
        await client.config_remove("pinned.conf")
