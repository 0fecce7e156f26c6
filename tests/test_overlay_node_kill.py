"""A node killed under a running service, on a swarm of its own (1 manager, 2 workers, a namespace per node,
root): its endpoints leave the other nodes' DNS and VIP tables once gossip declares it dead, and requests
through the VIP keep succeeding. (A fresh swarm: no network removed just before reuses its VXLAN ID.)
"""

from __future__ import annotations

import json
import time

import pytest
from test_overlay import (  # noqa: F401 -- pytestmark: the same skip conditions
    SERVER,
    api,
    data_plane_swarm,
    hostname_of,
    python_spec,
    pytestmark,
)
from test_services import converged, eventually

from raftswarm.api.client import ApiClient


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    cluster = data_plane_swarm("ovk", tmp_path_factory.mktemp("clusters"))
    yield cluster
    cluster.down()


WATCHER = """
import json, socket, time
while True:
    report = {"time": time.time()}
    try:
        report["tasks"] = sorted(socket.gethostbyname_ex("tasks.web")[2])
    except OSError as exc:
        report["tasks"] = str(exc)
    try:
        with socket.create_connection(("web", 80), timeout=1) as connection:
            report["served"] = connection.recv(200).decode()
    except OSError as exc:
        report["served"] = None
    print(json.dumps(report), flush=True)
    time.sleep(0.3)
"""


async def _reports(client: ApiClient, task_id: str) -> list[dict]:
    return [json.loads(line.decode()) async for _, line in client.task_logs(task_id)]


async def test_a_killed_nodes_endpoints_leave_dns_and_the_load_balancer_and_requests_keep_succeeding(swarm):
    """It kills worker2."""
    async with api(swarm) as client:
        await client.network_create({"Name": "survive", "Driver": "overlay"})
        web_spec = python_spec("web", ["python3", "-c", SERVER], replicas=3, Networks=[{"Target": "survive"}])
        await client.service_create(web_spec)
        web = await eventually(lambda: converged(client, "web", 3), "3 web replicas", within=90)
        worker = swarm.node("worker2")
        (lost,) = [t for t in web if t["NodeID"] == worker.node_id]
        lost_ip = lost["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
        watcher = python_spec("watcher", ["python3", "-c", WATCHER], replicas=1, Networks=[{"Target": "survive"}])
        watcher["TaskTemplate"]["Placement"] = {"Constraints": ["node.role==manager"]}
        await client.service_create(watcher)
        (task,) = await eventually(lambda: converged(client, "watcher", 1), "the watcher to run", within=90)

        async def sees_all() -> bool:
            reports = await _reports(client, task["ID"])
            return bool(reports) and isinstance(reports[-1]["tasks"], list) and lost_ip in reports[-1]["tasks"]

        await eventually(sees_all, "the watcher to see all 3 replicas", within=60)
        swarm.kill(worker)
        killed_at = time.time()

        async def recovered() -> list[dict] | None:
            reports = [r for r in await _reports(client, task["ID"]) if r["time"] > killed_at]
            gone = [i for i, r in enumerate(reports) if isinstance(r["tasks"], list) and lost_ip not in r["tasks"]]
            if not gone or len(reports) - gone[0] < 6:
                return None
            return reports[gone[0] :]

        after = await eventually(recovered, "the killed node's endpoint to leave DNS", within=60)
        assert all(lost_ip not in r["tasks"] for r in after if isinstance(r["tasks"], list))
        assert all(r["served"] for r in after[1:])  # every request through the VIP succeeds once it is gone
        assert all(r["served"] != hostname_of(lost) for r in after[1:])
