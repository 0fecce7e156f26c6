"""Swarm networks on a real swarm (1 manager, 1 worker): the ingress network made at init, overlay networks
with allocated subnets and VXLAN IDs, virtual IPs and task addresses handed out once and freed when their
holders go, published ports, `network rm` refused while in use, bad specs refused with nothing created.
(The data plane that carries traffic on these networks is not part of these tests.) And the Peers that
`network inspect` shows: the nodes on a network, as real gossip between two nodes tells them.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from click.testing import CliRunner
from test_services import converged, eventually, spec

from raftswarm.api.client import ApiClient, ApiError
from raftswarm.cli.main import main
from raftswarm.gossip.node import GossipNode
from raftswarm.gossip.wire import Keyring
from raftswarm.localcluster.swarm import SwarmCluster
from raftswarm.node.networking import NodeNetworks
from raftswarm.runtime.containers import unavailable

pytestmark = pytest.mark.slow
needs_containers = pytest.mark.skipif(
    unavailable() is not None, reason=f"tasks cannot run as containers here: {unavailable()}"
)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    base = tmp_path_factory.mktemp("clusters")
    cluster = asyncio.run(
        # --init: the tasks' `sleep` stops at SIGTERM, so a network is free soon after its service goes.
        SwarmCluster.up(
            "net", managers=1, workers=1, base_dir=base, network="loopback", heartbeat_period=0.5, init=True
        )
    )
    yield cluster
    cluster.down()


def api(swarm: SwarmCluster) -> ApiClient:
    return swarm.client(swarm.node("manager1"))


async def cli(swarm: SwarmCluster, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, main, ["-H", f"unix://{swarm.node('manager1').socket}", *args])
    return result.exit_code, result.output


async def test_a_new_swarm_has_the_ingress_network_and_overlays_get_the_next_subnets_and_vxlan_ids(swarm):
    async with api(swarm) as client:
        (ingress,) = await client.network_list({"name": ["ingress"]})
        assert ingress["Ingress"] and ingress["Driver"] == "overlay" and ingress["Scope"] == "swarm"
        assert ingress["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1"}]
        assert ingress["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4096"

        code, created = await cli(swarm, "network", "create", "-d", "overlay", "--label", "tier=front", "front")
        assert code == 0, created
        front = await client.network_inspect("front")
        assert front["Id"] == created.strip()
        assert front["IPAM"]["Config"] == [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]
        assert front["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4097"
        assert front["Labels"] == {"tier": "front"}
        code, shown = await cli(swarm, "network", "ls")
        assert shown.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        assert [line.split()[1:] for line in shown.splitlines()[1:]] == [["front", "overlay", "swarm"], ["ingress", "overlay", "swarm"]]
        code, _ = await cli(swarm, "network", "rm", "front")
        assert code == 0
        assert [n["Name"] for n in await client.network_list()] == ["ingress"]


@needs_containers
async def test_services_get_a_virtual_ip_and_tasks_an_address_each_never_twice_and_rm_is_refused_in_use(swarm):
    async with api(swarm) as client:
        await client.network_create({"Name": "back", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}]}})
        made = spec("db", replicas=3, Networks=[{"Target": "back"}])
        await client.service_create(made)
        tasks = await eventually(lambda: converged(client, "db", 3), "3 running replicas")
        service = await client.service_inspect("db")
        network_id = (await client.network_inspect("back"))["Id"]
        (vip,) = service["Endpoint"]["VirtualIPs"]
        assert vip["NetworkID"] == network_id
        addresses = [vip["Addr"]] + [t["NetworksAttachments"][0]["Addresses"][0] for t in tasks]
        assert len(set(addresses)) == 4
        assert all(ipaddress.IPv4Interface(a) in ipaddress.IPv4Network("10.9.0.0/24") for a in addresses)
        assert "10.9.0.1/24" not in addresses  # the gateway

        with pytest.raises(ApiError) as refused:
            await client.network_remove("back")
        # dockerd answers SwarmKit's FailedPrecondition with 400 (403 is for a local network's endpoints)
        assert refused.value.status == 400 and "in use by service db" in str(refused.value)
        code, output = await cli(swarm, "network", "rm", "back")
        assert code == 1 and "in use by service db" in output

        await client.service_remove("db")

        async def removed() -> bool:
            try:
                await client.network_remove("back")
                return True
            except ApiError:
                return False  # its tasks are still stopping

        await eventually(removed, "the network to be removable once the service's tasks are gone")


async def test_published_ports_are_unique_in_the_swarm_and_dynamic_ones_come_from_30000_to_32767(swarm):
    async with api(swarm) as client:
        web = spec("web", replicas=1)
        web["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "Protocol": "tcp"}, {"TargetPort": 81, "PublishedPort": 8081}]}
        await client.service_create(web)
        endpoint = (await client.service_inspect("web"))["Endpoint"]
        dynamic, fixed = endpoint["Ports"]
        assert 30000 <= dynamic["PublishedPort"] <= 32767 and fixed["PublishedPort"] == 8081
        ingress = (await client.network_inspect("ingress"))["Id"]
        assert [vip["NetworkID"] for vip in endpoint["VirtualIPs"]] == [ingress]

        other = spec("other", replicas=1)
        other["EndpointSpec"] = {"Ports": [{"TargetPort": 80, "PublishedPort": 8081}]}
        with pytest.raises(ApiError) as refused:
            await client.service_create(other)
        assert "port '8081' is already in use by service 'web'" in str(refused.value)
        assert [s["Spec"]["Name"] for s in await client.service_list()] == ["web"]
        await client.service_remove("web")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"Name": "secret-net", "Driver": "overlay", "Options": {"encrypted": ""}}, "no IPsec ESP"),
        ({"Name": "bad", "Driver": "bridge"}, 'network driver "bridge" is not supported in swarm mode'),
        ({"Name": "bad", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"}]}}, "overlaps with network ingress"),
        ({"Name": "bad", "IPAM": {"Config": [{"Subnet": "8.8.8.0/24"}]}}, "8.8.8.0/24"),
        ({"Name": "ingress"}, "already exists"),
    ],
)
async def test_bad_network_specs_are_refused_and_nothing_is_created(swarm, body, message):
    async with api(swarm) as client:
        before = await client.network_list()
        with pytest.raises(ApiError, match=message):
            await client.network_create(body)
        assert await client.network_list() == before


@needs_containers
async def test_network_add_and_rm_move_a_service_between_networks_and_free_its_addresses(swarm):
    async with api(swarm) as client:
        await client.network_create({"Name": "left", "Driver": "overlay"})
        await client.network_create({"Name": "right", "Driver": "overlay"})
        left, right = (await client.network_inspect("left"))["Id"], (await client.network_inspect("right"))["Id"]
        await client.service_create(spec("mover", replicas=2, Networks=[{"Target": "left"}]))
        await eventually(lambda: converged(client, "mover", 2), "2 replicas on left")
        code, output = await cli(swarm, "service", "update", "--detach", "--network-add", "right", "--network-rm", "left", "mover")
        assert code == 0, output

        async def moved() -> list[dict] | None:
            tasks = await converged(client, "mover", 2)
            if tasks and all([a["Network"]["ID"] for a in t["NetworksAttachments"]] == [right] for t in tasks):
                return tasks
            return None

        await eventually(moved, "the replicas to be on right only", within=60)
        service = await client.service_inspect("mover")
        assert [vip["NetworkID"] for vip in service["Endpoint"]["VirtualIPs"]] == [right]
        await client.service_remove("mover")

        async def removed(name: str) -> bool:
            try:
                await client.network_remove(name)
                return True
            except ApiError:
                return False

        for name in ("left", "right"):
            await eventually(lambda name=name: removed(name), f"network {name} to be free again")
        assert left not in {n["Id"] for n in await client.network_list()}


async def test_peers_are_the_nodes_on_a_network_as_gossip_knows_them_and_none_for_a_network_the_node_is_off():
    keyring = Keyring([b"k" * 32])
    first, second = NodeNetworks("node-a", "127.0.0.1", "rswpa"), NodeNetworks("node-b", "127.0.0.1", "rswpb")
    # Their gossip only (on kernel-chosen ports): peers come from gossip, not from the data plane.
    first.gossip = GossipNode("node-a", "127.0.0.1", 0, keyring=keyring)
    await first.gossip.start()
    second.gossip = GossipNode("node-b", "127.0.0.1", 0, keyring=keyring, seeds=[first.gossip.addr])
    await second.gossip.start()
    try:
        both = [{"Name": "node-a", "IP": "127.0.0.1"}, {"Name": "node-b", "IP": "127.0.0.1"}]
        assert first.peers("front") == []
        first.gossip.join_network("front")
        second.gossip.join_network("front")

        async def both_on_front() -> bool:
            return first.peers("front") == both and second.peers("front") == both

        await eventually(both_on_front, "each node to see both on the network")

        second.gossip.join_network("back")

        async def first_knows_back() -> bool:
            return "node-b" in first.gossip.nodes_on("back")

        await eventually(first_knows_back, "node-a to hear that node-b is on back")
        assert first.peers("back") == []  # it knows who is on back, but is not: dockerd shows no Peers then

        second.gossip.leave_network("front")

        async def only_first_on_front() -> bool:
            return first.peers("front") == [{"Name": "node-a", "IP": "127.0.0.1"}] and second.peers("front") == []

        await eventually(only_first_on_front, "node-b to be off the network")
    finally:
        await second.gossip.close()
        await first.gossip.close()
