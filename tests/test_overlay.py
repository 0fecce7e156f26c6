"""Overlay networking end to end on a real swarm (1 manager, 2 workers, a network namespace per node, root):
tasks on one overlay network, spread over the nodes, reach each other by service name through the
service's VIP and by `tasks.<service>`; a task on another network can neither resolve nor reach them; a
published port answers on a node that runs no replica (the routing mesh).

The tasks are containers of the `python:3-slim` sample (the busybox one has no python3); a task's hostname is
Docker's default, its container ID's first 12 hex characters, which is how the servers say who answered.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time

import pytest
from test_services import converged, eventually, spec

from raftswarm.api.client import ApiClient
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.localcluster.hostnet import netns_unavailable_reason
from raftswarm.runtime.containers import unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        netns_unavailable_reason() is not None or unavailable() is not None or shutil.which("nft") is None,
        reason="needs root, network namespaces, nft for a data plane per node, and crun and conmon for tasks",
    ),
]

SERVER = """
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 80))
server.listen()
while True:
    connection, _ = server.accept()
    connection.sendall(socket.gethostname().encode())
    connection.close()
"""

CLIENT = """
import json, socket, sys, time
target = sys.argv[1]
report = {}
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        report["vip"] = socket.gethostbyname(target)
        report["tasks"] = sorted(socket.gethostbyname_ex("tasks." + target)[2])
        report["alias"] = socket.gethostbyname("www")
    except OSError as exc:
        report["resolve_error"] = str(exc)
    if len(report.get("tasks", [])) == int(sys.argv[2]):
        break
    time.sleep(0.5)
seen = set()
for _ in range(60 if "vip" in report else 5):
    try:
        with socket.create_connection((report.get("vip") or sys.argv[3], 80), timeout=2) as connection:
            seen.add(connection.recv(200).decode())
    except OSError as exc:
        report["connect_error"] = str(exc)
report["seen"] = sorted(seen)
print(json.dumps(report), flush=True)
time.sleep(1000)
"""


PYTHON = "python:3-slim"
"""The image of the tasks here, all Python: the busybox sample has no python3."""


def data_plane_swarm(name: str, base) -> SwarmCluster:
    """1 manager and 2 workers, a network namespace each, 0.5 s heartbeats; the registry has the python
    sample; tasks run under an init, so that their Python processes stop at SIGTERM."""
    return asyncio.run(
        SwarmCluster.up(
            name,
            managers=1,
            workers=2,
            base_dir=base,
            network="netns",
            heartbeat_period=0.5,
            samples=("busybox", "python"),
            init=True,
            # Names the tasks' resolvers do not know go nowhere: no query leaves the test's namespaces.
            node_args={node: ["--dns-upstream", "none"] for node in ("manager1", "worker1", "worker2")},
        )
    )


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    cluster = data_plane_swarm("ovl", tmp_path_factory.mktemp("clusters"))
    yield cluster
    cluster.down()


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


def python_spec(name: str, args: list[str], replicas: int, **template) -> dict:
    """`test_services.spec`, its tasks running `args` in the python image."""
    made = spec(name, args, replicas=replicas, **template)
    made["TaskTemplate"]["ContainerSpec"]["Image"] = PYTHON
    return made


def hostname_of(task: dict) -> str:
    """What `socket.gethostname()` says in the task: its container ID's first 12 hex characters."""
    return task["Status"]["ContainerStatus"]["ContainerID"][:12]


@pytest.fixture(autouse=True)
async def removes_what_it_made(swarm):
    """Each test starts from no services and only the ingress network, even after one that failed."""
    yield
    async with api(swarm) as client:
        for service in await client.service_list():
            await client.service_remove(service["ID"])
        for network in await client.network_list():
            if not network["Ingress"]:
                await client.network_remove(network["Id"])


async def _report(client: ApiClient, task_id: str) -> dict | None:
    lines = [line.decode() async for _, line in client.task_logs(task_id)]
    return json.loads(lines[-1]) if lines else None


@pytest.mark.security
async def test_tasks_on_an_overlay_reach_a_service_by_name_through_its_vip_and_others_cannot(swarm):
    async with api(swarm) as client:
        front = (await client.network_create({"Name": "front", "Driver": "overlay"}))["Id"]
        await client.network_create({"Name": "back", "Driver": "overlay"})
        web_networks = [{"Target": "front", "Aliases": ["www"]}]
        await client.service_create(python_spec("web", ["python3", "-c", SERVER], replicas=3, Networks=web_networks))
        web = await eventually(lambda: converged(client, "web", 3), "3 web replicas", within=90)
        assert len({t["NodeID"] for t in web}) == 3  # one per node: traffic crosses the overlay
        (vip,) = [v["Addr"].split("/")[0] for v in (await client.service_inspect("web"))["Endpoint"]["VirtualIPs"] if v["NetworkID"] == front]
        task_ips = sorted(t["NetworksAttachments"][0]["Addresses"][0].split("/")[0] for t in web)

        client_args = ["python3", "-c", CLIENT, "web", "3", vip]
        await client.service_create(python_spec("client", client_args, replicas=1, Networks=[{"Target": "front"}]))
        (task,) = await eventually(lambda: converged(client, "client", 1), "the client to run", within=90)
        report = await eventually(lambda: _report(client, task["ID"]), "the client's report", within=120)
        assert report["vip"] == vip
        assert report["tasks"] == task_ips
        assert report["alias"] == vip
        assert report["seen"] == sorted(hostname_of(t) for t in web)

        await client.service_create(python_spec("outsider", client_args, replicas=1, Networks=[{"Target": "back"}]))
        (task,) = await eventually(lambda: converged(client, "outsider", 1), "the outsider to run", within=90)
        report = await eventually(lambda: _report(client, task["ID"]), "the outsider's report", within=120)
        assert "vip" not in report and report["seen"] == []
        for name in ("web", "client", "outsider"):
            await client.service_remove(name)


async def test_sysctls_of_a_tasks_interfaces_are_set_on_them(swarm):
    # eth0 (the overlay) and eth1 (the gateway bridge) are plugged in after the container is made, which is
    # when crun sets sysctls; the runtime sets these once they are there, before the command starts.
    script = "cat /proc/sys/net/ipv4/conf/eth0/rp_filter /proc/sys/net/ipv4/conf/eth1/arp_ignore; sleep 1000"
    sysctls = {"net.ipv4.conf.eth0.rp_filter": "2", "net.ipv4.conf.eth1.arp_ignore": "1"}
    async with api(swarm) as client:
        await client.network_create({"Name": "tuned", "Driver": "overlay"})
        made = spec("tuned", ["sh", "-c", script], replicas=1, Networks=[{"Target": "tuned"}])
        made["TaskTemplate"]["ContainerSpec"]["Sysctls"] = sysctls
        await client.service_create(made)
        (task,) = await eventually(lambda: converged(client, "tuned", 1), "the task to run", within=90)
        logged = await eventually(lambda: _lines(client, task["ID"], 2), "the task's output", within=30)
        assert logged == ["2", "1"]
        await client.service_remove("tuned")


async def _lines(client: ApiClient, task_id: str, count: int) -> list[str] | None:
    """The task's output lines once it has logged `count` of them."""
    lines = [line.decode().strip() async for _, line in client.task_logs(task_id)]
    return lines if len(lines) >= count else None


def _fetch(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=2) as connection:
        return connection.recv(200).decode()


async def _served_by(host: str, port: int, count: int) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        try:
            seen.add(await asyncio.to_thread(_fetch, host, port))
        except OSError:
            await asyncio.sleep(0.2)  # the mesh is still being programmed
    return seen


async def test_a_published_port_answers_on_a_node_running_no_replica(swarm):
    async with api(swarm) as client:
        made = python_spec(
            "meshed", ["python3", "-c", SERVER], replicas=2, Placement={"Constraints": ["node.role==worker"]}
        )
        made["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}
        await client.service_create(made)
        tasks = await eventually(lambda: converged(client, "meshed", 2), "2 replicas on the workers")
        manager = swarm.node("manager1")
        assert all(t["NodeID"] != manager.node_id for t in tasks)
        names = {hostname_of(t) for t in tasks}
        assert await _served_by(manager.ip, 8080, 2) == names  # both replicas, through the manager
        for worker in ("worker1", "worker2"):
            assert await _served_by(swarm.node(worker).ip, 8080, 1) <= names
        await client.service_remove("meshed")


async def test_a_host_mode_port_answers_only_on_the_node_running_its_task_and_tasks_reach_outside(swarm):
    async with api(swarm) as client:
        worker = swarm.node("worker1")
        on_worker = {"Constraints": [f"node.id=={worker.node_id}"]}
        made = python_spec("hosted", ["python3", "-c", SERVER], replicas=1, Placement=on_worker)
        made["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishedPort": 9090, "PublishMode": "host"}]}
        await client.service_create(made)
        (task,) = await eventually(lambda: converged(client, "hosted", 1), "the hosted task")
        assert await _served_by(worker.ip, 9090, 1) == {hostname_of(task)}
        for other in ("manager1", "worker2"):
            with pytest.raises(OSError):
                await asyncio.to_thread(_fetch, swarm.node(other).ip, 9090)
        # Docker's PortStatus (`docker service ps`: *:9090->80/tcp).
        host_port = {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 9090, "PublishMode": "host"}
        assert task["Status"]["PortStatus"] == {"Ports": [host_port]}

        # Published as 0, the node picks a free port of its ephemeral range and says which.
        dynamic = python_spec("dynamic", ["python3", "-c", SERVER], replicas=1, Placement=on_worker)
        dynamic["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]}
        await client.service_create(dynamic)
        (picked,) = await eventually(lambda: converged(client, "dynamic", 1), "the dynamic task")
        (shown,) = picked["Status"]["PortStatus"]["Ports"]
        low, high = (int(word) for word in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        assert low <= shown["PublishedPort"] <= high and shown["PublishedPort"] != 9090
        assert shown == {**host_port, "PublishedPort": shown["PublishedPort"]}
        assert await _served_by(worker.ip, shown["PublishedPort"], 1) == {hostname_of(picked)}
        await client.service_remove("dynamic")
        # A task that ended by itself still says where it was published, as Docker's do.
        brief = python_spec("brief", ["sh", "-c", "sleep 2; exit 3"], replicas=1, Placement=on_worker)
        brief["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishMode": "host"}]}
        await client.service_create(brief)

        async def failed() -> dict | None:
            ended = [t for t in await client.task_list({"service": ["brief"]}) if t["Status"]["State"] == "failed"]
            return ended[0] if ended else None

        (port,) = (await eventually(failed, "the brief task's end"))["Status"]["PortStatus"]["Ports"]
        assert (port["TargetPort"], port["PublishMode"]) == (80, "host") and low <= port["PublishedPort"] <= high
        await client.service_remove("brief")

        # Egress: a task on an overlay reaches a node's address outside its overlays (masqueraded).
        outside = ["python3", "-c", f"import socket; print(socket.create_connection(('{worker.ip}', 9090), timeout=5).recv(200).decode(), flush=True); import time; time.sleep(1000)"]
        await client.network_create({"Name": "out", "Driver": "overlay"})
        on_manager = {"Constraints": ["node.role==manager"]}
        await client.service_create(
            python_spec("goer", outside, replicas=1, Networks=[{"Target": "out"}], Placement=on_manager)
        )
        (goer,) = await eventually(lambda: converged(client, "goer", 1), "the goer")
        lines = await eventually(lambda: _lines_of(client, goer["ID"]), "the goer's output", within=30)
        assert lines == [hostname_of(task)]
        await client.service_remove("hosted")
        await client.service_remove("goer")


async def _lines_of(client: ApiClient, task_id: str) -> list[str]:
    return [line.decode().rstrip("\n") async for _, line in client.task_logs(task_id)]

